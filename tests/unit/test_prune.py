"""`polyarch prune` and `du` on a workspace made by hand: what goes, what stays."""

from __future__ import annotations

from pathlib import Path

from polyarch.digest import Digest
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Manifest
from polyarch.solver.cache import CachedLayer, SqliteCache
from polyarch.store.workspace import Workspace
from polyarch.worker.local.gc import disk_usage, prune
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


def test_prune_drops_the_sbom_scans_of_layers_no_longer_held(tmp_path: Path) -> None:
    workspace, digests = make(tmp_path)
    kept = workspace.sbom_layers / f"sha256-{digests['new'].hex}.json"
    gone = workspace.sbom_layers / f"sha256-{digests['mid'].hex}.json"
    for path in (kept, gone):
        path.write_text('{"version": 1, "events": []}')
    prune(workspace, older_than=DAY, now=NOW)
    assert kept.exists() and not gone.exists()


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


def _image(workspace: Workspace, name: str, content: bytes) -> Descriptor:
    config = blob(workspace, b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers",'
                             b'"diff_ids":[]}, "x": "' + content + b'"}')  # fmt: skip
    manifest = Manifest.create(Descriptor(mt.OCI_CONFIG, config, 10), [])
    workspace.layout.write_document(manifest.raw)
    descriptor = Descriptor(mt.OCI_MANIFEST, manifest.digest, len(manifest.raw))
    workspace.layout.set_ref(name if name else str(manifest.digest), descriptor)
    return descriptor


def test_clean_removes_only_what_it_names(tmp_path: Path) -> None:
    from polyarch.worker.local.gc import remove_images

    workspace = Workspace(tmp_path / "root")
    one = _image(workspace, "", b"one")  # untagged builds: named by their digest
    two = _image(workspace, "", b"two")
    _image(workspace, "example/app:1", b"app1")
    _image(workspace, "example/app:2", b"app2")
    _image(workspace, "example/other:1", b"other")
    assert remove_images(workspace, str(one.digest)).images == (str(one.digest),)
    assert set(workspace.layout.refs()) == {str(two.digest), "example/app:1", "example/app:2",
                                            "example/other:1"}  # fmt: skip
    assert remove_images(workspace, "example/app:2").images == ("example/app:2",)
    assert remove_images(workspace, "example/app").images == ("example/app:1",)
    assert set(workspace.layout.refs()) == {str(two.digest), "example/other:1"}


def test_prune_removes_untagged_images_and_asks_nothing_of_scripts(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "root")
    untagged = _image(workspace, "", b"old build")
    _image(workspace, "example/app:1", b"kept")
    report = prune(workspace)
    assert report.images == (str(untagged.digest),)
    assert set(workspace.layout.refs()) == {"example/app:1"}
    # --filter until=: an untagged image newer than that stays.
    fresh = _image(workspace, "", b"new build")
    assert prune(workspace, older_than=DAY).images == ()
    assert str(fresh.digest) in workspace.layout.refs()


def test_prune_cli_flags(tmp_path: Path) -> None:
    import subprocess
    import sys

    workspace = Workspace(tmp_path / "root")
    untagged = _image(workspace, "", b"cli")
    done = subprocess.run([sys.executable, "-m", "polyarch", "prune", "-a", "-f", "--root",
                           str(tmp_path / "root")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"removed {untagged.digest}" in done.stdout
    assert "1 untagged images" in done.stdout
