"""Layers unpacked once each, as overlayfs lower directories, keyed by diffID.

A snapshot is one layer's entries (overlay whiteouts included), so any chain of layers is
just a list of snapshot directories to stack. Unpacking goes to a temporary directory renamed
into place: a snapshot directory exists whole or not at all.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Final

from polyarch import cpu
from polyarch.digest import Digest
from polyarch.errors import PolyarchError
from polyarch.runtime import MountError, mount_overlay, unmount
from polyarch.store.blobs import ContentStore
from polyarch.worker.base import LayerRef
from polyarch.worker.local.copydiff import extract_layers, materialize, write_upper

_IN_PROCESS_LIMIT: Final = 8 * 1024 * 1024
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> ProcessPoolExecutor:
    global _pool  # noqa: PLW0603 (one pool per process, made on first use)
    with _pool_lock:
        if _pool is None:
            # The semaphore tracker multiprocessing starts takes our -W options: after Ctrl-C
            # (os._exit) it would warn of "leaked semaphore objects" on the user's terminal.
            quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
            if quiet not in sys.warnoptions:
                sys.warnoptions.append(quiet)
            # spawn, not fork: the builder has threads, and a forked child would inherit
            # their locks in whatever state they were
            _pool = ProcessPoolExecutor(
                max_workers=os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_end_with, initargs=(os.getpid(),),
            )  # fmt: skip
        return _pool


def _end_with(parent: int) -> None:
    """In a worker: end when polyarch does, however it ended (Ctrl-C leaves with os._exit,
    a kill leaves at once): a worker left behind would hold its terminal and files open."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def stop_workers() -> None:
    """Stop the unpacking processes now (the command is ending without waiting for them)."""
    with _pool_lock:
        pool = _pool
    if pool is not None:
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                process.kill()


def _unpack(
    store: str,
    digest: str,
    size: int,
    diff_id: str,
    media_type: str,
    target: str,
    raising: bool = False,
) -> tuple[Exception | None, cpu.Seconds]:
    """Apply one layer blob to `target` (overlay whiteouts), proving on the way that the blob
    is its digest and its content the diffID. In a worker process the error is returned, as
    itself when it survives pickling, else as a PolyarchError with its text; and the CPU time
    the work took (for `polyarch.cpu`)."""
    started = cpu.usage(resource.getrusage(resource.RUSAGE_SELF))

    def spent() -> cpu.Seconds:
        now = cpu.usage(resource.getrusage(resource.RUSAGE_SELF))
        return now[0] - started[0], now[1] - started[1]

    try:
        layer = LayerRef(Digest.parse(digest), size, Digest.parse(diff_id), media_type)
        extract_layers([layer], ContentStore(Path(store)), Path(target), whiteouts="overlay")
    except Exception as exc:
        if raising:
            raise
        try:
            returned: Exception = pickle.loads(pickle.dumps(exc))  # noqa: S301 (our own bytes)
        except Exception:
            returned = PolyarchError(f"{exc.__class__.__name__}: {exc}")
        return returned, spent()
    return None, spent()


class SnapshotStore:
    def __init__(self, root: Path, blobs: ContentStore) -> None:
        self.root = root
        self.blobs = blobs
        self._lock = threading.Lock()
        self._flights: dict[Digest, threading.Event] = {}  # layers being unpacked
        root.mkdir(parents=True, exist_ok=True)

    def path(self, diff_id: Digest) -> Path:
        return self.root / diff_id.hex[:24]

    def has(self, diff_id: Digest) -> bool:
        return self.path(diff_id).is_dir()

    def unpacking(self, diff_id: Digest) -> bool:
        """Whether a thread of this store is unpacking that layer now."""
        with self._lock:
            return diff_id in self._flights

    def ensure(self, diff_id: Digest, blob: Digest, media_type: str) -> Path:
        """The layer's snapshot, unpacked first if it is not here; one another thread of this
        store is unpacking (stages on one base start together) is waited for, not unpacked
        a second time beside it."""
        target = self.path(diff_id)
        while not target.is_dir():
            with self._lock:
                flight = self._flights.get(diff_id)
                mine = flight is None
                if flight is None:
                    flight = self._flights[diff_id] = threading.Event()
            if not mine:
                flight.wait()  # then it is here, or that try failed and this one tries
                continue
            try:
                self._unpack(target, diff_id, blob, media_type)
            finally:
                with self._lock:
                    del self._flights[diff_id]
                flight.set()
        return target

    def _unpack(self, target: Path, diff_id: Digest, blob: Digest, media_type: str) -> None:
        work = Path(tempfile.mkdtemp(dir=self.root, prefix=".unpack-"))
        try:
            size = self.blobs.size(blob)
            job = (str(self.blobs.root), str(blob), size, str(diff_id), media_type, str(work))
            if size >= _IN_PROCESS_LIMIT:
                # A big layer unpacks in a worker process: CPU-bound Python that would
                # otherwise share one interpreter lock with every other stage of the build.
                failure, spent = _workers().submit(_unpack, *job).result()
                cpu.charge("unpack", spent)
                if failure is not None:
                    raise failure
            else:
                with cpu.measure("unpack"):
                    _unpack(*job, raising=True)
            # visible only now: its content was proven to be the diffID it is named by
            work.rename(target)
        except FileExistsError:
            shutil.rmtree(work, ignore_errors=True)  # another build made it meanwhile
        except OSError as exc:
            shutil.rmtree(work, ignore_errors=True)
            if not target.is_dir() or exc.errno not in (39, 17):  # ENOTEMPTY, EEXIST
                raise
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def adopt(self, directory: Path, diff_id: Digest) -> Path:
        """Make an upper directory (already in overlay form) the snapshot of `diff_id`."""
        target = self.path(diff_id)
        try:
            directory.rename(target)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)  # an identical layer is already here
        return target


@contextlib.contextmanager
def stacked(
    snapshots: SnapshotStore,
    layers: Sequence[LayerRef],
    upper: Path,
    workdir: Path,
    merged: Path,
    *,
    overlay: bool,
    on_fallback: Callable[[str], None],
) -> Iterator[None]:
    """The layers' filesystem at `merged`, changes landing in `upper` (overlay form).

    With `overlay`, the layers' snapshots are stacked as overlayfs lowers; when overlayfs
    cannot be mounted, `on_fallback` is told why and the layers are extracted into `merged`
    (slower, same tree), the changes then written to `upper` by comparison.
    """
    if overlay:
        lowers = [
            str(snapshots.ensure(layer.diff_id, layer.digest, layer.media_type))
            for layer in reversed(layers)
        ]
        if not lowers:
            empty = upper.parent / "empty"
            empty.mkdir()
            lowers = [str(empty)]
        try:
            mount_overlay(lowers, str(upper), str(workdir), str(merged))
        except MountError as exc:
            on_fallback(str(exc))
        else:
            try:
                yield
            finally:
                unmount(str(merged))
            return
    before = materialize(list(layers), snapshots.blobs, merged)
    yield
    write_upper(merged, before, upper)
