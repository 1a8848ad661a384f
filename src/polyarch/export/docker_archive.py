"""Docker archives (what `docker save` writes and `docker load` reads) and OCI archives (an OCI
layout as one tar, what buildx's `type=oci` writes), streamed from the store. Effects."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from polyarch.errors import UsageError
from polyarch.oci.models import Descriptor, Index, Manifest, parse_document
from polyarch.store.layout import OciLayout

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
IMAGE_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"


def one_manifest(layout: OciLayout, descriptor: Descriptor) -> Manifest:
    """The image manifest of a one-platform image (an index of one is opened)."""
    document = parse_document(layout.read_document(descriptor), descriptor.media_type)
    if isinstance(document, Index):
        images = document.images()
        if len(images) != 1:
            raise UsageError(
                "a docker archive holds one platform's image; this build made "
                f"{len(images)}: build with one --platform, or use --output type=oci"
            )
        child = images[0]
        document = parse_document(layout.read_document(child), child.media_type)
    if not isinstance(document, Manifest):
        raise UsageError("only image manifests can be written as a docker archive")
    return document


def write_docker_archive(
    layout: OciLayout, descriptor: Descriptor, tags: Sequence[str], dest: Path | IO[bytes]
) -> None:
    """A `docker save`-style tar: manifest.json, the config, the layers (left compressed:
    `docker load` decompresses them and checks each against the config's diff_ids). `dest`:
    a file (written whole or not at all) or a stream."""
    manifest = one_manifest(layout, descriptor)

    def member(digest: str) -> str:
        return "blobs/sha256/" + digest.split(":", 1)[1]

    entry = {
        "Config": member(str(manifest.config.digest)),
        "RepoTags": [_docker_tag(t) for t in tags],
        "Layers": [member(str(layer.digest)) for layer in manifest.layers],
    }
    files = [(member(str(b.digest)), b) for b in (manifest.config, *manifest.layers)]
    _write_tar(layout, files, [("manifest.json", json.dumps([entry]).encode())], dest)


def write_oci_archive(
    layout: OciLayout, descriptor: Descriptor, names: Sequence[str], dest: Path | IO[bytes]
) -> None:
    """An OCI image layout as one tar (buildx's `type=oci`): `oci-layout`, every blob, and
    an `index.json` naming the image (`org.opencontainers.image.ref.name` for its tag,
    `io.containerd.image.name` for its full name, as buildx writes them)."""
    annotations: dict[str, str] = {}
    if names:
        annotations[IMAGE_NAME] = names[0]
        tag = names[0].rsplit(":", 1)[1] if ":" in names[0].rsplit("/", 1)[-1] else "latest"
        annotations[REF_NAME] = tag
    top = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size,
                     annotations=annotations)  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [top.to_json()]}, separators=(",", ":")).encode()  # fmt: skip
    files = [("blobs/sha256/" + str(d.digest).split(":", 1)[1], d)
             for d in _referenced(layout, descriptor)]  # fmt: skip
    _write_tar(layout, files, [("oci-layout", OCI_LAYOUT), ("index.json", index)], dest)


def _referenced(layout: OciLayout, descriptor: Descriptor) -> Iterator[Descriptor]:
    """The document and everything it names (each once)."""
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if str(current.digest) in seen:
            continue
        seen.add(str(current.digest))
        yield current
        document = parse_document(layout.read_document(current), current.media_type)
        if isinstance(document, Index):
            pending.extend(document.manifests)
        else:
            for blob in document.blobs():
                if str(blob.digest) not in seen:
                    seen.add(str(blob.digest))
                    yield blob


def _write_tar(
    layout: OciLayout,
    blobs: Sequence[tuple[str, Descriptor]],
    extra: Sequence[tuple[str, bytes]],
    dest: Path | IO[bytes],
) -> None:
    if isinstance(dest, Path):
        if dest.is_dir():
            raise UsageError(f"--output: dest={dest} is a directory; name the tar file to "
                             "write (type=oci takes tar=false to write a directory)")  # fmt: skip
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        try:
            with partial.open("wb") as out:
                _tar_into(layout, blobs, extra, out)
            partial.replace(dest)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return
    _tar_into(layout, blobs, extra, dest)


def _tar_into(
    layout: OciLayout,
    blobs: Sequence[tuple[str, Descriptor]],
    extra: Sequence[tuple[str, bytes]],
    out: IO[bytes],
) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        added: set[str] = set()
        for name, blob in blobs:
            if name in added:
                continue
            added.add(name)
            info = tarfile.TarInfo(name)
            info.size = blob.size
            info.mode = 0o644
            with layout.blobs.open(blob.digest, blob.size) as f:
                tar.addfile(info, f)
                f.verify()
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _docker_tag(name: str) -> str:
    """Docker's short form: `docker.io/library/x:t` is `x:t`."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
