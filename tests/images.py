"""Synthetic images for tests and benchmarks: real gzip'd tar layers, real configs, any platform.

Made directly as files (not through polyarch's own writers where a test cross-checks them), so
what polyarch reads was not shaped by polyarch.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip'd tar layer and its diffID."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0), _sha(raw)


def write_layout_image(
    path: Path,
    platforms: list[str],
    *,
    name: str = "latest",
    layer_bytes: int = 200_000,
    layers: int = 2,
    shared_layer: bool = True,
    seed: int = 0,
) -> str:
    """Write an OCI layout at `path` holding one index over `platforms`. Returns its digest.

    With `shared_layer`, every platform's image starts with the same layer (as images built
    from one Dockerfile share platform-neutral layers).
    """
    rng = random.Random(seed)
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest[7:]).write_bytes(data)
        return digest

    shared = make_layer({"shared/data.bin": rng.randbytes(layer_bytes)})
    entries = []
    for platform in platforms:
        parts = platform.split("/")
        os_, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) > 2 else None
        layer_list = [shared] if shared_layer else []
        while len(layer_list) < layers:
            n = len(layer_list)
            layer_list.append(make_layer({f"{arch}/{n}.bin": rng.randbytes(layer_bytes)}))
        config: dict[str, object] = {
            "architecture": arch,
            "os": os_,
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layer_list]},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layer_list))],
        }
        if variant:
            config["variant"] = variant
        config_raw = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": put(config_raw),
                "size": len(config_raw),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(gz),
                    "size": len(gz),
                }
                for gz, _ in layer_list
            ],
        }
        manifest_raw = json.dumps(manifest, indent=3).encode()
        platform_json = {"architecture": arch, "os": os_}
        if variant:
            platform_json["variant"] = variant
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": put(manifest_raw),
                "size": len(manifest_raw),
                "platform": platform_json,
            }
        )
    index_raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    index_digest = put(index_raw.encode())
    top = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                "digest": index_digest,
                "size": len(index_raw),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }
        ],
    }
    (path / "index.json").write_text(json.dumps(top))
    return index_digest


def random_bytes(n: int) -> bytes:
    return os.urandom(n)
