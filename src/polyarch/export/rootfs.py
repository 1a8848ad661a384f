"""The final stage's files, as buildx's `type=local` and `type=tar` outputs write them: each
platform's layers applied in order (whiteouts carried out) into a directory of its own. Effects.

`local` merges them into the destination directory (files already there and not in the image
stay), owned by the user who runs polyarch, as BuildKit's client writes them, with the
statements asked for beside them (`provenance.json`, `sbom.spdx.json`); `tar` streams
them as one tar (numeric owners as in the image, entries sorted). With several platforms each
goes in a subdirectory named after it (`linux_amd64`, `linux_arm_v7`) unless `platform-split`
is false.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from polyarch.attest.intoto import PREDICATE_ANNOTATION, PREDICATE_SPDX
from polyarch.errors import UsageError
from polyarch.layers import apply_layer, open_layer
from polyarch.layers.write import write_layer
from polyarch.oci.mediatypes import ANNOTATION_REFERENCE_DIGEST
from polyarch.oci.models import Descriptor, Index, Manifest, parse_document
from polyarch.platform import Platform
from polyarch.runtime.userns import rootless
from polyarch.store.layout import OciLayout


def platform_dir(platform: Platform) -> str:
    return str(platform).replace("/", "_")


def images_of(layout: OciLayout, top: Descriptor) -> list[tuple[Platform | None, Manifest]]:
    document = parse_document(layout.read_document(top), top.media_type)
    if isinstance(document, Manifest):
        return [(top.platform, document)]
    assert isinstance(document, Index)
    out: list[tuple[Platform | None, Manifest]] = []
    for entry in document.images():
        child = parse_document(layout.read_document(entry), entry.media_type)
        assert isinstance(child, Manifest)
        out.append((entry.platform, child))
    return out


def flatten(layout: OciLayout, manifest: Manifest, into: Path, *, owners: bool) -> None:
    """The manifest's layers applied in order into `into`, whiteouts carried out."""
    into.mkdir(parents=True, exist_ok=True)
    for layer in manifest.layers:
        with layout.blobs.open(layer.digest, layer.size) as raw:
            apply_layer(open_layer(raw, layer.media_type), into,  # type: ignore[arg-type]
                        whiteouts="delete", same_owner=owners)  # fmt: skip
            raw.verify()


def attestation_files(
    layout: OciLayout, top: Descriptor, manifest: Manifest, names: Mapping[str, str]
) -> dict[str, bytes]:
    """The statements attached to `manifest` in the index `top`, as BuildKit's local and
    tar exporters write them: file name -> the statement. `names`: predicate kind
    (`provenance`, `sbom`) -> file name (`provenance.json`, `sbom.spdx.json`); an SBOM of a
    stage or the context is `sbom-<part>.spdx.json`."""
    document = parse_document(layout.read_document(top), top.media_type)
    if not names or not isinstance(document, Index):
        return {}
    out: dict[str, bytes] = {}
    for entry in document.manifests:
        if not entry.is_attestation or entry.annotations.get(
                ANNOTATION_REFERENCE_DIGEST) != str(manifest.digest):  # fmt: skip
            continue
        attestation = parse_document(layout.read_document(entry), entry.media_type)
        assert isinstance(attestation, Manifest)
        for layer in attestation.layers:
            raw = layout.blobs.read_bytes(layer.digest, layer.size)
            kind = layer.annotations.get(PREDICATE_ANNOTATION, "")
            if kind.startswith("https://slsa.dev/provenance/") and "provenance" in names:
                out[names["provenance"]] = raw
            elif kind == PREDICATE_SPDX and "sbom" in names:
                name = str(json.loads(raw)["predicate"].get("name", ""))
                part = name.rpartition("(")[2].rstrip(")") if name.endswith(")") else ""
                base = names["sbom"]
                if part:
                    stem, dot, rest = base.partition(".")
                    base = f"{stem}-{part.removeprefix('stage ')}{dot}{rest}"
                out[base] = raw
    return out


def _write_attestations(files: Mapping[str, bytes], where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (where / name).write_bytes(raw)


def write_local(
    layout: OciLayout,
    top: Descriptor,
    dest: Path,
    platform_split: bool | None,
    attestations: Mapping[str, str] | None = None,
) -> None:
    images = images_of(layout, top)
    split = len(images) > 1 if platform_split is None else platform_split
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--output type=local: dest={dest} is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.polyarch-"))
    try:
        for platform, manifest in images:
            where = scratch / platform_dir(platform) if split and platform else scratch
            flatten(layout, manifest, where, owners=False)
            _write_attestations(attestation_files(layout, top, manifest, attestations or {}),
                                where)  # fmt: skip
        _merge(scratch, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_tar(
    layout: OciLayout,
    top: Descriptor,
    out: IO[bytes],
    platform_split: bool | None,
    source_date_epoch: int | None,
    work: Path,
    attestations: Mapping[str, str] | None = None,
) -> None:
    images = images_of(layout, top)
    split = len(images) > 1 if platform_split is None else platform_split
    scratch = Path(tempfile.mkdtemp(dir=work, prefix="tar-output-"))
    try:
        for platform, manifest in images:
            where = scratch / platform_dir(platform) if split and platform else scratch
            # Files owned as in the image as root; rootless, the user's own (a uid of the
            # subordinate range would be a file the user cannot remove).
            flatten(layout, manifest, where, owners=os.geteuid() == 0 and not rootless())
            _write_attestations(attestation_files(layout, top, manifest, attestations or {}),
                                where)  # fmt: skip
        write_layer(scratch, out, source_date_epoch=source_date_epoch, overlay=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _merge(source: Path, dest: Path) -> None:
    """Move everything under `source` into `dest`: an entry there by the same name is
    replaced, except a directory by a directory, which is merged."""
    for src in sorted(source.iterdir()):
        dst = dest / src.name
        src_st, dst_st = src.lstat(), _lstat(dst)
        if dst_st is not None and stat.S_ISDIR(src_st.st_mode) and stat.S_ISDIR(dst_st.st_mode):
            _merge(src, dst)
            os.chmod(dst, stat.S_IMODE(src_st.st_mode))
            continue
        if dst_st is not None:
            if stat.S_ISDIR(dst_st.st_mode):
                shutil.rmtree(dst)
            else:
                dst.unlink()
        src.rename(dst)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


__all__: Sequence[str] = ("flatten", "platform_dir", "write_local", "write_tar")
