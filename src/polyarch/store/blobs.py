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
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from polyarch.digest import Digest, Hasher
from polyarch.errors import (
    BlobNotFoundError,
    InvalidDigestError,
    StoreError,
    VerificationError,
)

CHUNK: Final = 1024 * 1024


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
        self._file.write(data)
        self._hasher.update(data)

    def reset(self) -> None:
        """Start over (a source that cannot resume sends the whole blob again)."""
        self._file.seek(0)
        self._file.truncate()
        self._hasher = Hasher(self._hasher.algorithm)

    def commit(self) -> Digest:
        if self._done:
            raise StoreError("blob writer already finished")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
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


class ContentStore:
    """Blobs by digest under `root` (an OCI layout's `blobs/` tree, plus `ingest/` for temps)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.ingest_dir = self.root / ".ingest"
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

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {digest} is not in {self.root}") from None

    def read_bytes(self, digest: Digest, size: int | None = None) -> bytes:
        """Read a small blob (a document) whole, checking it against its digest."""
        with self.open(digest) as f:
            data = f.read()
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
        """Stream a blob, checking digest and size at the end (raises before the last chunk)."""
        hasher = digest.hasher()
        with self.open(digest) as f:
            pending: bytes | None = None
            while chunk := f.read(CHUNK):
                if pending is not None:
                    yield pending
                hasher.update(chunk)
                pending = chunk
            actual = hasher.digest()
            if actual != digest or (size is not None and hasher.size != size):
                raise VerificationError(
                    f"stored blob {digest} in {self.root}",
                    expected_digest=str(digest),
                    actual_digest=str(actual),
                    expected_size=size,
                    actual_size=hasher.size,
                )
            if pending is not None:
                yield pending

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

    def blobs(self) -> Iterator[Digest]:
        for algorithm_dir in sorted(self.blobs_dir.iterdir()):
            for path in sorted(algorithm_dir.iterdir()):
                with contextlib.suppress(InvalidDigestError):
                    yield Digest.parse(f"{algorithm_dir.name}:{path.name}")
