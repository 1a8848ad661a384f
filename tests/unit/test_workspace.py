"""The pieces of the workspace that need no root: the step cache, the runtime spec, the
garbage collector, the docker-archive writer."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from polyarch.digest import Digest
from polyarch.errors import UsageError
from polyarch.export.docker_archive import write_docker_archive
from polyarch.runtime import BindMount, ProcessSpec, runtime_spec
from polyarch.runtime.spec import capabilities_of
from polyarch.solver.cache import CachedLayer, SqliteCache
from polyarch.store.layout import OciLayout
from polyarch.store.workspace import Workspace
from polyarch.worker.local.gc import _collect
from tests.images import write_layout_image


def layer(n: int) -> CachedLayer:
    d = Digest.of(bytes([n]))
    return CachedLayer(d, n, d, "application/vnd.oci.image.layer.v1.tar+gzip", "t")


def test_cache_entries_owners_and_release(tmp_path: Path) -> None:
    cache = SqliteCache(tmp_path / "cache.db")
    cache.put("k1", layer(1), "RUN a")
    cache.put("k2", layer(2), "RUN b")
    cache.put("empty", CachedLayer(None, 0, None, "", "t"), "RUN true")
    assert cache.get("k1") == layer(1)
    assert cache.get("empty") == CachedLayer(None, 0, None, "", "t")
    assert cache.get("nope") is None
    cache.claim(["k1", "k2"], "team/app")
    cache.claim(["k2"], "team/other")
    assert cache.release("team/app") == 1  # k1 only: k2 is still claimed by another image
    assert cache.get("k1") is None and cache.get("k2") == layer(2)
    assert {entry.digest for entry in cache.layers()} == {layer(2).digest}
    cache.close()


def test_runtime_spec_modes() -> None:
    plain = runtime_spec(ProcessSpec(("true",), ("PATH=/bin",)), "/rootfs")
    assert {n["type"] for n in plain["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount"}
    assert "CAP_SYS_ADMIN" not in plain["process"]["capabilities"]["bounding"]
    assert "/proc/kcore" in plain["linux"]["maskedPaths"]
    isolated = runtime_spec(ProcessSpec(("true",), (), private_network=True), "/r")
    assert {"type": "network"} in isolated["linux"]["namespaces"]
    caps = capabilities_of(0x1FFFEFFFFFF)
    assert "CAP_SYS_ADMIN" in caps and "CAP_SYS_RESOURCE" not in caps  # bit 24 off
    privileged = runtime_spec(ProcessSpec(("true",), (), privileged=True, capabilities=caps), "/r")
    assert "CAP_SYS_ADMIN" in privileged["process"]["capabilities"]["effective"]
    assert privileged["linux"]["maskedPaths"] == []
    [sys_mount] = [m for m in privileged["mounts"] if m["destination"] == "/sys"]
    assert "rw" in sys_mount["options"]
    emulated = runtime_spec(
        ProcessSpec(("sh",), (), binds=(BindMount("/h", "/c", readonly=False),),
                    init="/usr/bin/tini-static"), "/r",
    )  # fmt: skip
    assert emulated["process"]["args"][:2] == ["/dev/.polyarch-init", "--"]
    [bind] = [m for m in emulated["mounts"] if m["destination"] == "/c"]
    assert "rw" in bind["options"]


def test_gc_keeps_what_images_and_the_cache_reach(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    source = tmp_path / "layout"
    write_layout_image(source, ["linux/amd64"], name="app", layers=2, shared_layer=False)
    layout = workspace.layout
    src = OciLayout(source)
    top = src.resolve("app")
    for digest in src.blobs.blobs():
        layout.blobs.put_bytes(src.blobs.read_bytes(digest), digest)
    layout.set_ref("app", top)
    stray = layout.blobs.put_bytes(b"nothing refers to me")
    cached = layout.blobs.put_bytes(b"a cached layer")
    cache = SqliteCache(workspace.cache_db)
    cache.put("k", CachedLayer(cached, 14, cached, "x", "t"), "RUN x")
    (workspace.snapshots / "0123456789abcdef01234567").mkdir(parents=True)
    blobs, snapshots, freed = _collect(workspace.root, layout, cache)
    assert blobs == 1 and snapshots == 1 and freed > 0
    assert not layout.blobs.has(stray)
    assert layout.blobs.has(cached)
    assert all(layout.blobs.has(d) for d in src.blobs.blobs())


def test_workspace_is_private(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir(mode=0o755)
    Workspace(root)
    assert root.stat().st_mode & 0o777 == 0o700


def test_docker_archive_holds_one_platform(tmp_path: Path) -> None:
    source = tmp_path / "layout"
    write_layout_image(source, ["linux/amd64"], name="app", layers=2)
    layout = OciLayout(source)
    index = layout.resolve("app")
    archive = tmp_path / "app.tar"
    write_docker_archive(layout, index, ["docker.io/library/app:1"], archive)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        names = set(tar.getnames())
    [entry] = manifest
    assert entry["RepoTags"] == ["app:1"]
    assert set(entry["Layers"]) | {entry["Config"]} <= names
    assert not (tmp_path / "app.tar.partial").exists()
    two = tmp_path / "two"
    write_layout_image(two, ["linux/amd64", "linux/arm64"], name="app")
    both = OciLayout(two)
    with pytest.raises(UsageError, match="one platform"):
        write_docker_archive(both, both.resolve("app"), [], tmp_path / "x.tar")
