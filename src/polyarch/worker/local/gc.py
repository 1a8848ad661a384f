"""Workspace garbage: what a killed build left behind, what the workspace holds, and freeing
it (effects).

`remove_images` untags every local image of a repository, forgets the build steps that only
that repository's builds used, then deletes every blob and snapshot that no remaining image
and no remaining cache entry reaches. `prune` forgets build steps (all, those unused for a
while, or the least recently used until the workspace fits a size) and, when asked, cache
mounts, then deletes the same way; tagged images are never touched (as `buildx prune` keeps
images). Base images pulled for builds are not kept (they are pulled again when a build needs
them). Both hold the build lock, so no build runs meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from polyarch.digest import Digest
from polyarch.errors import PolyarchError
from polyarch.oci.models import ImageConfig, Index, Manifest, parse_document
from polyarch.reference import Reference
from polyarch.runtime import Executor, unmount
from polyarch.solver.cache import SqliteCache
from polyarch.store.layout import OciLayout
from polyarch.store.workspace import Workspace
from polyarch.worker.local.mounts import CACHE_META, CacheMounts


@dataclass(frozen=True, slots=True)
class PruneReport:
    images: tuple[str, ...]  # the names removed
    steps: int  # cache entries forgotten
    blobs: int
    snapshots: int
    freed: int  # bytes
    cache_mounts: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    """One line of `polyarch du`: a kind of thing the workspace holds."""

    kind: str  # images | step cache | unused blobs | snapshots | cache mount | other
    name: str
    size: int  # bytes on disk
    count: int = 1
    last_used: float | None = None  # seconds since the epoch


def clear_stale(workspace: Workspace) -> list[str]:
    """What a killed build left: its step containers (stopped and deleted), step directories
    (unmounted first), half-unpacked snapshots, blobs half-written. Called with the workspace
    lock held, so nothing alive owns any of it. Returns the containers it stopped."""
    reaped: list[str] = []
    if (workspace.root / "runtime").is_dir():
        with contextlib.suppress(PolyarchError):
            reaped = Executor(workspace.runtime).reap()
    for leftover in workspace.tmp.iterdir():
        # Its mounts first (a layer view, a cache mount's bound directory): removing the
        # tree must never reach through one into what it shows.
        points = [p for p in leftover.iterdir() if p.is_dir() and os.path.ismount(p)] if (
            leftover.is_dir() and not leftover.is_symlink()) else []  # fmt: skip
        for point in points:
            with contextlib.suppress(PolyarchError):
                unmount(str(point))
        if any(os.path.ismount(p) for p in points):
            continue  # still mounted: left alone rather than emptied through the mount
        shutil.rmtree(leftover, ignore_errors=True)
    if workspace.snapshots.is_dir():
        for partial in workspace.snapshots.glob(".unpack-*"):
            shutil.rmtree(partial, ignore_errors=True)
    workspace.layout.blobs.clear_ingest()
    return reaped


_UNTAGGED = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


def is_untagged(name: str) -> bool:
    """A local image kept by its digest only (a build without -t)."""
    return _UNTAGGED.match(name) is not None


def named_by(target: str, name: str, entry_digest: str) -> bool:
    """Whether the local image `name` is what `target` names: `sha256:X` that image only,
    `NAME:TAG` that tag, `NAME@DIGEST` that digest of NAME, `NAME` every tag of NAME."""
    if is_untagged(target) or is_untagged(name):
        return target == name
    try:
        want, have = Reference.parse(target), Reference.parse(name)
    except PolyarchError:
        return False
    if want.name != have.name:
        return False
    if want.digest is not None:
        return str(want.digest) == entry_digest
    tag_written = ":" in target.rsplit("/", 1)[-1]
    return not tag_written or want.tag == have.tag


def remove_images(workspace: Workspace, target: str) -> PruneReport:
    """Remove the local images `target` names (see `named_by`) and what only they used."""
    layout = workspace.layout
    with workspace.exclusive():
        clear_stale(workspace)  # a killed build's containers and mounts first
        removed = [name for name, entry in sorted(layout.refs().items())
                   if named_by(target, name, str(entry.digest))]  # fmt: skip
        for name in removed:
            layout.remove_ref(name)
        cache = SqliteCache(workspace.cache_db)
        try:
            # The steps a repository's images claimed are forgotten once none of them is left.
            gone = {Reference.parse(n).name for n in removed if not is_untagged(n)}
            left = {Reference.parse(n).name for n in layout.refs() if not is_untagged(n)}
            steps = sum(cache.release(repository) for repository in sorted(gone - left))
            blobs, snapshots, freed = _collect(workspace.root, layout, cache)
        finally:
            cache.close()
    return PruneReport(tuple(removed), steps, blobs, snapshots, freed)


def disk_usage(workspace: Workspace) -> list[Usage]:
    """What the workspace holds: the tagged images' blobs, the step cache's layers (beyond
    the images'), blobs nothing uses, unpacked layers, each cache mount, and the rest."""
    layout = workspace.layout
    images, _ = _reachable(layout)
    sizes = {d: _size(layout.blobs.path(d)) for d in layout.blobs.blobs()}
    out = [Usage("images", "tagged images", sum(sizes.get(d, 0) for d in images),
                 len(layout.refs()))]  # fmt: skip
    cache = SqliteCache(workspace.cache_db)
    try:
        entries = cache.entries()
    finally:
        cache.close()
    steps = {layer.digest for _, layer, _, _ in entries if layer.digest is not None}
    last = max((used for _, _, used, _ in entries), default=None)
    out.append(Usage("step cache", "build steps", sum(sizes.get(d, 0) for d in steps - images),
                     len(entries), last))  # fmt: skip
    unused = set(sizes) - images - steps
    out.append(Usage("unused blobs", "base images, left-overs",
                     sum(sizes[d] for d in unused), len(unused)))  # fmt: skip
    snapshot_dirs = [e for e in _entries(workspace.snapshots) if not e.name.startswith(".")]
    out.append(Usage("snapshots", "unpacked layers", sum(map(_tree_size, snapshot_dirs)),
                     len(snapshot_dirs)))  # fmt: skip
    for cache_id, path in CacheMounts(workspace.cache_mounts).entries():
        out.append(Usage("cache mount", cache_id, _tree_size(path), 1, _mtime(path)))
    other = [workspace.file_digests, workspace.cache_db, workspace.tmp, workspace.verify]
    out.append(Usage("other", "file digests, cache index, scratch",
                     sum(_tree_size(p) if p.is_dir() else _size(p) for p in other)))  # fmt: skip
    return out


def prune(
    workspace: Workspace,
    *,
    cache_mounts: bool = False,
    keep_storage: int | None = None,
    older_than: float | None = None,
    now: float | None = None,
    untagged: bool = True,
) -> PruneReport:
    """Forget build steps (and with `cache_mounts`, cache mounts): those unused for
    `older_than` seconds, or all; with `keep_storage`, only the least recently used until
    the workspace's blobs, unpacked layers and cache mounts fit in that many bytes. Remove the
    untagged images (kept by digest only: a build without -t) unless `untagged` is False or
    they are newer than `older_than`. Then delete every blob and snapshot that no image and no
    remaining step reaches."""
    current = time.time() if now is None else now
    cutoff = None if older_than is None else current - older_than
    layout = workspace.layout
    with workspace.exclusive():
        clear_stale(workspace)
        removed: list[str] = []
        if untagged and keep_storage is None:
            for name in sorted(layout.refs()):
                if is_untagged(name) and (cutoff is None or _ref_time(layout, name) < cutoff):
                    layout.remove_ref(name)
                    removed.append(name)
        cache = SqliteCache(workspace.cache_db)
        try:
            images, _ = _reachable(layout)
            entries = sorted(cache.entries(), key=lambda e: e[2])
            mounts = sorted(CacheMounts(workspace.cache_mounts).entries(),
                            key=lambda m: _mtime(m[1]))  # fmt: skip
            total: int | None = None

            def fits() -> bool:
                return total is not None and keep_storage is not None and total <= keep_storage

            if keep_storage is not None:
                snapshot_dirs = _entries(workspace.snapshots)
                total = sum(_size(layout.blobs.path(d)) for d in layout.blobs.blobs())
                total += sum(map(_tree_size, snapshot_dirs))
                total += sum(_tree_size(p) for _, p in mounts)
            forget: list[str] = []
            for key, layer, used, _ in entries:
                if fits():
                    break
                if cutoff is not None and used >= cutoff:
                    continue
                forget.append(key)
                if total is not None and layer.digest is not None and layer.digest not in images:
                    total -= layer.size
                    if layer.diff_id is not None:
                        total -= _tree_size(workspace.snapshots / layer.diff_id.hex[:24])
            steps = cache.forget(forget)
            emptied = 0
            if cache_mounts:
                for _cache_id, path in mounts:
                    if fits():
                        break
                    if cutoff is not None and _mtime(path) >= cutoff:
                        continue
                    size = _tree_size(path)
                    shutil.rmtree(path, ignore_errors=True)
                    emptied += 1
                    if total is not None:
                        total -= size
            blobs, snapshots, freed = _collect(workspace.root, layout, cache)
        finally:
            cache.close()
    return PruneReport(tuple(removed), steps, blobs, snapshots, freed, emptied)


def _ref_time(layout: OciLayout, name: str) -> float:
    """When the image named `name` was made: its document's file time in the store."""
    entry = layout.refs()[name]
    try:
        return layout.blobs.path(entry.digest).stat().st_mtime
    except OSError:
        return 0.0


def _reachable(layout: OciLayout) -> tuple[set[Digest], set[Digest]]:
    """Every blob the tagged images reach, and their layers' diff ids."""
    keep: set[Digest] = set()
    diff_ids: set[Digest] = set()
    pending = list(layout.refs().values())
    while pending:
        descriptor = pending.pop()
        if descriptor.digest in keep:
            continue
        keep.add(descriptor.digest)
        try:
            document = parse_document(layout.read_document(descriptor), descriptor.media_type)
        except (OSError, PolyarchError):
            continue  # a broken entry keeps what it names; nothing more can be known
        if isinstance(document, Index):
            pending.extend(document.manifests)
        elif isinstance(document, Manifest):
            keep.update(b.digest for b in document.blobs())
            with contextlib.suppress(OSError, PolyarchError):
                config = ImageConfig.parse(layout.blobs.read_bytes(document.config.digest))
                diff_ids.update(config.diff_ids)
    return keep, diff_ids


def _collect(root: Path, layout: OciLayout, cache: SqliteCache) -> tuple[int, int, int]:
    """Delete unreachable blobs and snapshots: (blobs, snapshots, bytes freed)."""
    keep, diff_ids = _reachable(layout)
    for layer in cache.layers():
        assert layer.digest is not None
        keep.add(layer.digest)
        if layer.diff_id is not None:
            diff_ids.add(layer.diff_id)
    freed = blobs = snapshots = 0
    for digest in list(layout.blobs.blobs()):
        if digest in keep:
            continue
        path = layout.blobs.path(digest)
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            path.unlink()
            freed += size
            blobs += 1
    names = {d.hex[:24] for d in diff_ids}
    snapshot_root = root / "snapshots"
    if snapshot_root.is_dir():
        for entry in snapshot_root.iterdir():
            if entry.name.startswith(".") or entry.name in names:
                continue
            freed += _tree_size(entry)
            shutil.rmtree(entry, ignore_errors=True)
            snapshots += 1
    # The SBOM scans of layers no image or cache entry holds any more.
    scans = {f"{d.algorithm}-{d.hex}.json" for d in diff_ids}
    sbom_root = root / "sbom"
    if sbom_root.is_dir():
        for entry in sbom_root.iterdir():
            if entry.name not in scans:
                with contextlib.suppress(FileNotFoundError):
                    freed += entry.stat().st_size
                    entry.unlink()
    return blobs, snapshots, freed


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                st = (Path(dirpath) / name).lstat()
                total += st.st_blocks * 512
    return total


def _size(path: Path) -> int:
    try:
        return path.lstat().st_blocks * 512
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return (path / CACHE_META).stat().st_mtime
    except OSError:
        return 0.0


def _entries(path: Path) -> list[Path]:
    return list(path.iterdir()) if path.is_dir() else []
