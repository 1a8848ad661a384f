"""Content-addressed blob storage: `blobs/<algorithm>/<hex>`, as in an OCI image layout,
plus `.ingest/` for blobs being written (same filesystem, so the final rename is atomic).

A blob becomes visible only whole and verified: bytes go to a private temp file under
`ingest/`, are fsync'd, checked against the expected size and digest, and renamed into place
(then the directory is fsync'd). A blob that fails verification is deleted, never renamed.
Concurrent writers of the same blob are safe: each writes its own temp file and the rename of
identical content is atomic and idempotent.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final

from polyarch.digest import Check, Digest, Hasher
from polyarch.errors import (
    BlobNotFoundError,
    InvalidDigestError,
    StoreError,
    VerificationError,
)

CHUNK: Final = 1024 * 1024
_MAX_SMALL_BLOB: Final = 4 * 1024 * 1024  # documents and configs, as containerd limits them


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """Receives one blob's bytes; `commit` verifies them and makes the blob visible."""

    def __init__(
        self, store: ContentStore, expected: Digest | None, expected_size: int | None
    ) -> None:
        self._store = store
        self.expected = expected
        self.expected_size = expected_size
        fd, name = tempfile.mkstemp(dir=store.ingest_dir, prefix="blob-")
        # Held while this writer lives: a cleaner removes only ingest files nobody holds.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._path = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hasher = Hasher(expected.algorithm if expected else "sha256")
        self._done = False

    @property
    def size(self) -> int:
        return self._hasher.size

    def write(self, data: bytes | memoryview) -> None:
        if self.expected_size is not None and self._hasher.size + len(data) > self.expected_size:
            # Refuse at once: a hostile source must not fill the disk past the declared size.
            self.abort()
            raise VerificationError(
                f"blob {self.expected}" if self.expected else "blob",
                expected_digest=str(self.expected),
                expected_size=self.expected_size,
                actual_size=self._hasher.size + len(data),
            )
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise self._os_error(exc, self._hasher.size + len(data)) from None
        self._hasher.update(data)

    def reset(self) -> None:
        """Start over (a source that cannot resume sends the whole blob again)."""
        self._file.seek(0)
        self._file.truncate()
        self._hasher = Hasher(self._hasher.algorithm)

    def commit(self) -> Digest:
        if self._done:
            raise StoreError("blob writer already finished")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.abort()
            raise self._os_error(exc, self._hasher.size) from None
        actual = self._hasher.digest()
        size = self._hasher.size
        if (self.expected is not None and actual != self.expected) or (
            self.expected_size is not None and size != self.expected_size
        ):
            self.abort()
            raise VerificationError(
                f"blob {self.expected}",
                expected_digest=str(self.expected or actual),
                actual_digest=str(actual),
                expected_size=self.expected_size,
                actual_size=size,
            )
        target = self._store.path(actual)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self._path, 0o644)
        os.replace(self._path, target)
        _fsync_dir(target.parent)
        self._done = True
        return actual

    def _os_error(self, exc: OSError, written: int) -> OSError | StoreError:
        if exc.errno != errno.ENOSPC:
            return exc
        needed = f", {self.expected_size} needed" if self.expected_size else ""
        return StoreError(
            f"no space left on the device of {self._store.root} while writing a blob "
            f"({written} bytes so far{needed}): free some space (polyarch clean) and try again"
        )

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        self._path.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._done:
            self.abort()


class VerifyingReader(io.RawIOBase):
    """Reads a blob through its `Check`: raises `VerificationError` on the read that reaches
    its end (the expected size, or EOF) when the bytes are not the digest's. `verify()` reads
    what is left and checks: call it when the consumer may stop early."""

    def __init__(self, raw: io.BufferedReader, digest: Digest, size: int | None, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._check = Check(digest, size, what)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        if self._check.complete():
            extra = self._raw.read(1)  # one byte more than promised: a wrong blob
            if extra:
                self._check.update(extra)
            self._finish()
            return 0
        if self._check.size is not None:
            view = view[: self._check.size - self._check.seen]
        count = self._raw.readinto(view) or 0
        self._check.update(view[:count])
        if not count or self._check.complete():
            self._finish()
        return count

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._check.verify()

    def verify(self) -> None:
        while self.read(CHUNK):
            pass
        self._finish()

    def close(self) -> None:
        self._raw.close()
        super().close()


class ContentStore:
    """Blobs by digest under `root` (an OCI layout's `blobs/` tree, plus `ingest/` for temps)."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.ingest_dir = self.root / ".ingest"
        if not create:  # read only: a layout on a read-only mount, or another user's
            return
        try:
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            self.ingest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create content store at {self.root}: {exc}") from None

    def path(self, digest: Digest) -> Path:
        # Digest is validated at construction, so the hex cannot hold '/' or '..'.
        return self.blobs_dir / digest.algorithm / digest.hex

    def has(self, digest: Digest, size: int | None = None) -> bool:
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {digest} is not in {self.root}") from None

    def open(self, digest: Digest, size: int | None = None) -> VerifyingReader:
        """A reader of the blob that checks its digest (and size) once it has read the last
        byte: a blob changed on disk is never used unnoticed."""
        raw = self.path_open(digest)
        return VerifyingReader(raw, digest, size, f"stored blob {digest} in {self.root}")  # type: ignore[arg-type]

    def read_bytes(self, digest: Digest, size: int | None = None) -> bytes:
        """Read a small blob (a document) whole, checking it against its digest; never more
        than its size (or, size unknown, the limit for documents)."""
        limit = size if size is not None else _MAX_SMALL_BLOB
        with self.path_open(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit and size is None:
            raise StoreError(f"stored blob {digest} in {self.root} is over {limit} bytes")
        actual = Digest.of(data, digest.algorithm)
        if actual != digest or (size is not None and len(data) != size):
            raise VerificationError(
                f"stored blob {digest} in {self.root}",
                expected_digest=str(digest),
                actual_digest=str(actual),
                expected_size=size,
                actual_size=len(data),
            )
        return data

    def iter_blob(self, digest: Digest, size: int | None = None) -> Iterator[bytes]:
        """Stream a blob, checking digest and size (raises before the last chunk)."""
        check = Check(digest, size, f"stored blob {digest} in {self.root}")
        with self.path_open(digest) as f:
            pending: bytes | None = None
            while chunk := f.read(CHUNK):
                if pending is not None:
                    yield pending
                check.update(chunk)
                pending = chunk
            check.verify()
            if pending is not None:
                yield pending

    def path_open(self, digest: Digest) -> BinaryIO:
        """The blob's file, never through a symlink (a layout from elsewhere is not trusted)."""
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {digest} is not in {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot read blob {digest} in {self.root}: {exc.strerror}") from None
        return os.fdopen(fd, "rb")

    def writer(self, expected: Digest | None = None, size: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected, size)

    def put_bytes(self, data: bytes, expected: Digest | None = None) -> Digest:
        if expected is not None and self.has(expected, len(data)):
            return expected
        with self.writer(expected, len(data) if expected else None) as w:
            w.write(data)
            return w.commit()

    def ingest(self, chunks: Iterable[bytes], expected: Digest, size: int | None = None) -> Digest:
        """Write a stream as a blob; an exception from the stream leaves nothing behind."""
        with self.writer(expected, size) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def clear_ingest(self) -> int:
        """Remove what writers that died left in `.ingest/` (a live writer holds a lock on its
        file, so it is left alone). Returns how many were removed."""
        removed = 0
        for path in self.ingest_dir.glob("blob-*"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer's
            finally:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def blobs(self) -> Iterator[Digest]:
        for algorithm_dir in sorted(self.blobs_dir.iterdir()):
            for path in sorted(algorithm_dir.iterdir()):
                with contextlib.suppress(InvalidDigestError):
                    yield Digest.parse(f"{algorithm_dir.name}:{path.name}")
