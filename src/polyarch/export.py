"""Exports of a built image: docker-archive tarballs (what `docker load` reads). Effects."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

from polyarch.errors import UsageError
from polyarch.oci.models import Descriptor, Index, Manifest, parse_document
from polyarch.store.layout import OciLayout


def write_docker_archive(
    layout: OciLayout, descriptor: Descriptor, tags: Sequence[str], dest: Path
) -> None:
    """A `docker save`-style tar: manifest.json, the config, the layers (left compressed:
    `docker load` decompresses them and checks each against the config's diff_ids)."""
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
    manifest = document
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")

    def member(digest: str) -> str:
        return "blobs/sha256/" + digest.split(":", 1)[1]

    entry = {
        "Config": member(str(manifest.config.digest)),
        "RepoTags": [_docker_tag(t) for t in tags],
        "Layers": [member(str(layer.digest)) for layer in manifest.layers],
    }
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        added: set[str] = set()
        for blob in (manifest.config, *manifest.layers):
            name = member(str(blob.digest))
            if name in added:
                continue
            added.add(name)
            info = tarfile.TarInfo(name)
            info.size = blob.size
            info.mode = 0o644
            with layout.blobs.open(blob.digest, blob.size) as f:
                tar.addfile(info, f)
                f.verify()
        data = json.dumps([entry]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    partial.replace(dest)


def _docker_tag(name: str) -> str:
    """Docker's short form: `docker.io/library/x:t` is `x:t`."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
