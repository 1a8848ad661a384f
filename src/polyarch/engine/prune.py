"""Removing a project's images from the local store, and whatever nothing else needs (effects).

`remove_images` untags every local image of a repository, forgets the build steps that only
that repository's builds used, then deletes every blob and snapshot that no remaining image
and no remaining cache entry reaches. Base images pulled for builds are not kept (they are
pulled again when a build needs them). It holds the build lock, so no build runs meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from polyarch.digest import Digest
from polyarch.engine.cache import BuildCache
from polyarch.errors import PolyarchError
from polyarch.oci.models import ImageConfig, Index, Manifest, parse_document
from polyarch.reference import Reference
from polyarch.store.layout import OciLayout


@dataclass(frozen=True, slots=True)
class PruneReport:
    images: tuple[str, ...]  # the names removed
    steps: int  # cache entries forgotten
    blobs: int
    snapshots: int
    freed: int  # bytes


def remove_images(root: Path, repository: str) -> PruneReport:
    """Remove the local images named `repository:*` (or `@digest`) and what only they used."""
    want = Reference.parse(repository).name
    layout = OciLayout(root / "store")
    fd = os.open(root / "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        removed = []
        for name in sorted(layout.refs()):
            with contextlib.suppress(PolyarchError):
                if Reference.parse(name).name == want:
                    layout.remove_ref(name)
                    removed.append(name)
        cache = BuildCache(root / "cache.db")
        try:
            steps = cache.release(want)
            blobs, snapshots, freed = _collect(root, layout, cache)
        finally:
            cache.close()
    finally:
        os.close(fd)
    return PruneReport(tuple(removed), steps, blobs, snapshots, freed)


def _collect(root: Path, layout: OciLayout, cache: BuildCache) -> tuple[int, int, int]:
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
