"""Workspace garbage: what a killed build left behind, and a project's images with whatever
nothing else needs (effects).

`remove_images` untags every local image of a repository, forgets the build steps that only
that repository's builds used, then deletes every blob and snapshot that no remaining image
and no remaining cache entry reaches. Base images pulled for builds are not kept (they are
pulled again when a build needs them). It holds the build lock, so no build runs meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


@dataclass(frozen=True, slots=True)
class PruneReport:
    images: tuple[str, ...]  # the names removed
    steps: int  # cache entries forgotten
    blobs: int
    snapshots: int
    freed: int  # bytes


def clear_stale(workspace: Workspace) -> list[str]:
    """What a killed build left: its step containers (stopped and deleted), step directories
    (unmounted first), half-unpacked snapshots, blobs half-written. Called with the workspace
    lock held, so nothing alive owns any of it. Returns the containers it stopped."""
    reaped: list[str] = []
    if (workspace.root / "runtime").is_dir():
        with contextlib.suppress(PolyarchError):
            reaped = Executor(workspace.runtime).reap()
    for leftover in workspace.tmp.iterdir():
        for mount in ("merged", "view"):
            point = leftover / mount
            if point.is_dir() and os.path.ismount(point):
                with contextlib.suppress(PolyarchError):
                    unmount(str(point))
        shutil.rmtree(leftover, ignore_errors=True)
    if workspace.snapshots.is_dir():
        for partial in workspace.snapshots.glob(".unpack-*"):
            shutil.rmtree(partial, ignore_errors=True)
    workspace.layout.blobs.clear_ingest()
    return reaped


def remove_images(workspace: Workspace, repository: str) -> PruneReport:
    """Remove the local images named `repository:*` (or `@digest`) and what only they used."""
    want = Reference.parse(repository).name
    layout = workspace.layout
    with workspace.exclusive():
        removed = []
        for name in sorted(layout.refs()):
            with contextlib.suppress(PolyarchError):
                if Reference.parse(name).name == want:
                    layout.remove_ref(name)
                    removed.append(name)
        cache = SqliteCache(workspace.cache_db)
        try:
            steps = cache.release(want)
            blobs, snapshots, freed = _collect(workspace.root, layout, cache)
        finally:
            cache.close()
    return PruneReport(tuple(removed), steps, blobs, snapshots, freed)


def _collect(root: Path, layout: OciLayout, cache: SqliteCache) -> tuple[int, int, int]:
    """Delete unreachable blobs and snapshots: (blobs, snapshots, bytes freed)."""
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
    return blobs, snapshots, freed


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                st = (Path(dirpath) / name).lstat()
                total += st.st_blocks * 512
    return total
