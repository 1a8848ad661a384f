"""`polyarch prune` and `du` on a workspace made by hand: what goes, what stays."""

from __future__ import annotations

from pathlib import Path

from polyarch.digest import Digest
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Manifest
from polyarch.solver.cache import CachedLayer, SqliteCache
from polyarch.store.gc import disk_usage, prune
from polyarch.store.workspace import Workspace
from polyarch.worker.local.mounts import CacheMounts

NOW = 1_800_000_000.0
DAY = 86400.0


def blob(workspace: Workspace, data: bytes) -> Digest:
    return workspace.layout.blobs.put_bytes(data)


def step(cache: SqliteCache, workspace: Workspace, name: str, size: int, used: float) -> Digest:
    digest = blob(workspace, name.encode() * size)
    cache.put(name, CachedLayer(digest, size * len(name), digest, mt.OCI_LAYER_GZIP), name)
    cache.touch([name], used)
    return digest


def make(tmp_path: Path) -> tuple[Workspace, dict[str, Digest]]:
    workspace = Workspace(tmp_path / "root")
    cache = SqliteCache(workspace.cache_db)
    digests = {
        "old": step(cache, workspace, "old", 40_000, NOW - 10 * DAY),
        "mid": step(cache, workspace, "mid", 40_000, NOW - 2 * DAY),
        "new": step(cache, workspace, "new", 40_000, NOW - 60),
    }
    cache.close()
    # A tagged image whose layer is also the oldest step's: it stays whatever is pruned.
    config = blob(workspace, b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers",'
                             b'"diff_ids":[]}}')  # fmt: skip
    layer = Descriptor(mt.OCI_LAYER_GZIP, digests["old"], 120_000)
    manifest = Manifest.create(Descriptor(mt.OCI_CONFIG, config, 10), [layer])
    workspace.layout.write_document(manifest.raw)
    workspace.layout.set_ref("example/app:1", Descriptor(mt.OCI_MANIFEST, manifest.digest,
                                                         len(manifest.raw)))  # fmt: skip
    with CacheMounts(workspace.cache_mounts).use("/root/.npm", "shared", None, 0o755,
                                                 (0, 0)) as path:  # fmt: skip
        (path / "pkg").write_bytes(b"x" * 50_000)
    return workspace, digests


def steps_left(workspace: Workspace) -> set[str]:
    cache = SqliteCache(workspace.cache_db)
    try:
        return {key for key, *_ in cache.entries()}
    finally:
        cache.close()


def test_until_forgets_only_what_was_not_used_since(tmp_path: Path) -> None:
    workspace, digests = make(tmp_path)
    report = prune(workspace, older_than=DAY, now=NOW)
    assert steps_left(workspace) == {"new"}
    blobs = set(workspace.layout.blobs.blobs())
    assert digests["old"] in blobs  # the tagged image still needs it
    assert digests["mid"] not in blobs and digests["new"] in blobs
    assert report.steps == 2 and report.blobs == 1 and report.cache_mounts == 0
    assert [u.name for u in disk_usage(workspace) if u.kind == "cache mount"] == ["/root/.npm"]


def test_keep_storage_drops_the_least_recently_used_first(tmp_path: Path) -> None:
    workspace, _ = make(tmp_path)
    total = sum(u.size for u in disk_usage(workspace) if u.kind != "other")
    prune(workspace, keep_storage=total - 1, now=NOW)
    # "old" freed nothing (its layer is the tagged image's), so "mid", the next, went too.
    assert steps_left(workspace) == {"new"}
    prune(workspace, keep_storage=0, cache_mounts=True, now=NOW)
    assert steps_left(workspace) == set()
    assert list(CacheMounts(workspace.cache_mounts).entries()) == []
    assert workspace.layout.resolve("example/app:1") is not None  # tagged images stay


def test_prune_without_filters_forgets_every_step_and_keeps_cache_mounts(tmp_path: Path) -> None:
    workspace, _ = make(tmp_path)
    report = prune(workspace, now=NOW)
    assert steps_left(workspace) == set() and report.steps == 3
    usage = {u.kind: u for u in disk_usage(workspace)}
    assert usage["cache mount"].size >= 50_000
    assert usage["images"].count == 1
