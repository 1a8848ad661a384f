"""Hostile base images against real builds: false diffIDs, changed blobs, broken layers, huge
headers. Each is refused with a clear error (never a traceback), and nothing poisons a later
build, as root and rootless (`place`: the workspace is then an ordinary user's)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.layer_tars import E, tar_bytes
from tests.registry_server import RunningRegistry
from tests.security.conftest import Place

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("docker-registry"),
    reason="needs root, runc and Debian's docker-registry",
)

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(
    registry: RunningRegistry,
    tmp: Path,
    name: str,
    layers: list[tuple[bytes, str, str]],  # (blob, media type, diff_id)
    config: dict[str, object] | None = None,
) -> str:
    """An image made by hand (so nothing of polyarch shaped it), copied into the registry."""
    layout = tmp / f"layout-{name.replace('/', '-')}"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes) -> str:
        (blobs / sha(data)[7:]).write_bytes(data)
        return sha(data)

    doc: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _b, _m, d in layers]},
    }
    doc.update(config or {})
    raw = json.dumps(doc).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(raw),
                   "size": len(raw)},
        "layers": [{"mediaType": m, "digest": put(b), "size": len(b)} for b, m, _d in layers],
    }).encode()  # fmt: skip
    top = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1"},
    }]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(top))
    ref = registry.ref(f"{name}:1")
    done = subprocess.run([sys.executable, "-m", "polyarch", "copy", f"oci:{layout}:1", ref],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return ref


def gz_layer(*entries: E) -> tuple[bytes, str, str]:
    raw = tar_bytes(*entries)
    return gzip.compress(raw, mtime=0), GZIP, sha(raw)


def build(
    place: Place, root: Path, ctx: Path, dockerfile: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return place.polyarch("build", "--root", str(root), *extra, str(ctx))


def clear_failure(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_false_diff_id_never_poisons_the_workspace(
    registry: RunningRegistry, place: Place, tmp_path: Path
) -> None:
    real = gz_layer(E("etc", "dir"), E("etc/real", data=b"the real layer\n"))
    other = tar_bytes(E("etc", "dir"), E("etc/evil", data=b"what the liar wanted\n"))
    honest = push_image(registry, tmp_path, "poison/honest", [real])
    # A second image serves *another* layer under the real layer's diffID.
    evil_blob = gzip.compress(other, mtime=0)
    liar = push_image(registry, tmp_path, "poison/liar", [(evil_blob, GZIP, real[2])])
    root = place.space / "root"
    refused = build(place, root, place.space / "a", f"FROM {liar}\nRUN true\n")
    clear_failure(refused, "not the diffID")
    dockerfile = f"FROM scratch\nCOPY --from={honest} /etc/ /copy/\n"
    built = build(place, root, place.space / "b", dockerfile, "-t", "local/honest:1")
    assert built.returncode == 0, built.stderr
    from tests.integration.test_build import flatten, image

    layout, manifest, _config = image(root, "local/honest:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert sorted(p.name for p in (tree / "copy").iterdir()) == ["real"]
    assert (tree / "copy" / "real").read_text() == "the real layer\n"


def test_a_changed_stored_blob_is_caught(
    registry: RunningRegistry, place: Place, tmp_path: Path
) -> None:
    ref = push_image(registry, tmp_path, "flip/base", [gz_layer(E("a", data=b"a" * 4096))])
    root = place.space / "root"
    ok = build(place, root, place.space / "ctx", f"FROM {ref}\nCOPY Dockerfile /df\n",
               "-t", "local/f:1")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    from tests.integration.test_build import image

    layout, manifest, _config = image(root, "local/f:1")
    path = layout.blobs.path(manifest.layers[0].digest)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    shutil.rmtree(root / "snapshots")  # the base layer is unpacked again
    again = build(place, root, place.space / "ctx2", f"FROM {ref}\nRUN true\n")
    clear_failure(again, "does not match")
    archive = place.polyarch("build", "--root", str(root), "-t", "local/f:1", "--output",
                             f"type=docker,dest={place.space / 'out.tar'}",
                             str(place.space / "ctx"))  # fmt: skip
    clear_failure(archive, "does not match")


@pytest.mark.parametrize(
    ("name", "layer", "fragment"),
    [
        ("not-gzip", (b"this is not gzip at all", GZIP, sha(b"x")), "cannot decompress"),
        ("truncated", "truncated", "ends early"),
        ("not-tar", "not-tar", "not a valid tar"),
        ("huge-pax", "huge-pax", "tar header record"),
    ],
)
def test_broken_layers_are_clear_errors(
    registry: RunningRegistry,
    place: Place,
    tmp_path: Path,
    name: str,
    layer: object,
    fragment: str,
) -> None:
    if layer == "truncated":
        whole = gz_layer(E("f", data=os.urandom(65536)))
        layer = (whole[0][: len(whole[0]) // 2], GZIP, whole[2])
    elif layer == "not-tar":
        junk = os.urandom(2048)
        layer = (gzip.compress(junk, mtime=0), GZIP, sha(junk))
    elif layer == "huge-pax":
        buf = io.BytesIO()
        info = tarfile.TarInfo("././@PaxHeader")
        info.type = tarfile.XHDTYPE
        info.size = 8 << 20
        buf.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        buf.write(b"0" * (8 << 20))
        raw = buf.getvalue()
        layer = (gzip.compress(raw, compresslevel=1, mtime=0), GZIP, sha(raw))
    assert isinstance(layer, tuple)
    ref = push_image(registry, tmp_path, f"broken/{name}", [layer])
    result = build(place, place.space / "root", place.space / "ctx", f"FROM {ref}\nRUN true\n")
    clear_failure(result, fragment)


def test_zstd_layers_are_read(registry: RunningRegistry, place: Place, tmp_path: Path) -> None:
    from backports import zstd

    raw = tar_bytes(E("hello.txt", data=b"from zstd\n"))
    ref = push_image(registry, tmp_path, "zstd/base", [(zstd.compress(raw), ZSTD, sha(raw))])
    result = build(place, place.space / "root", place.space / "ctx",
                   f"FROM {ref}\nCOPY Dockerfile /df\n", "-t", "local/z:1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    from tests.integration.test_build import flatten, image

    layout, manifest, _config = image(place.space / "root", "local/z:1")
    assert (flatten(layout, manifest, tmp_path / "t") / "hello.txt").read_text() == "from zstd\n"


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"config": {"Env": "PATH=/bin"}}, "Env must be a list of strings"),
        ({"config": ["not", "an", "object"]}, "config must be an object"),
        ({"rootfs": {"type": "layers", "diff_ids": []}}, "lists 0 layers"),
        ({"history": "yesterday"}, "history must be a list"),
        ({"config": {"OnBuild": [1, 2]}}, "OnBuild must be a list of strings"),
    ],
)
def test_malformed_base_configs_are_clear_errors(
    registry: RunningRegistry,
    place: Place,
    tmp_path: Path,
    config: dict[str, object],
    fragment: str,
) -> None:
    ref = push_image(registry, tmp_path, "bad/config", [gz_layer(E("x", data=b"x"))], config)
    clear_failure(build(place, place.space / "root", place.space / "ctx", f"FROM {ref}\n"),
                  fragment)  # fmt: skip
