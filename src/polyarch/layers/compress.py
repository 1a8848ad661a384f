"""Layer blobs from a tar stream in one pass: diffID, compression, digest, store.

Write the uncompressed tar into a `LayerSink`: it hashes it (the diffID), compresses it (gzip
with isal at levels 0-3, about ten times the speed of zlib at level 6, with zlib above 3;
zstd; or not at all), and streams the result into the content store, which hashes it again
(the blob digest) and verifies it on commit. Nothing is held whole in memory. gzip headers
carry mtime 0 and no file name, so the same tar gives the same bytes; caches are keyed on the
diffID anyway, since zlib and isal bytes differ.
"""

from __future__ import annotations

import io
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal

from isal import igzip, isal_zlib

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from polyarch import cpu
from polyarch.digest import Digest, Hasher
from polyarch.errors import LayerError, PolyarchError
from polyarch.oci import mediatypes as mt
from polyarch.store.blobs import BlobWriter, ContentStore

Compression = Literal["gzip", "zstd", "none"]
MEDIA_TYPES: Final = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}
DEFAULT_ZSTD_LEVEL: Final = 3


@dataclass(frozen=True, slots=True)
class LayerBlob:
    digest: Digest  # of the blob as stored (compressed)
    size: int
    diff_id: Digest  # of the uncompressed tar
    media_type: str


class LayerSink(io.RawIOBase):
    """A writable file object: give it tar bytes, `finish()` gives the stored layer blob."""

    def __init__(
        self, store: ContentStore, *, compression: Compression = "gzip", level: int | None = None
    ) -> None:
        super().__init__()
        self._writer: BlobWriter = store.writer()
        self._diff = Hasher()
        self._compression = compression
        self._compressor: Any = None
        if compression == "gzip":
            # wbits 31: a gzip wrapper; these streams write mtime 0 and no name.
            level = 1 if level is None else level
            engine: Any = isal_zlib if level <= 3 else zlib
            self._compressor = engine.compressobj(level, engine.DEFLATED, 31)
        elif compression == "zstd":
            self._compressor = zstd.ZstdCompressor(
                level=DEFAULT_ZSTD_LEVEL if level is None else level
            )
        self._finished = False

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self._diff.update(chunk)
        if self._compressor is None:
            self._writer.write(chunk)
        else:
            with cpu.measure("compress"):
                out = self._compressor.compress(chunk)
            if out:
                self._writer.write(out)
        return len(chunk)

    def finish(self) -> LayerBlob:
        if self._finished:
            raise ValueError("layer already finished")
        self._finished = True
        if self._compressor is not None:
            with cpu.measure("compress"):
                tail = self._compressor.flush()
            if tail:
                self._writer.write(tail)
        size = self._writer.size
        digest = self._writer.commit()
        return LayerBlob(digest, size, self._diff.digest(), MEDIA_TYPES[self._compression])

    def abort(self) -> None:
        self._finished = True
        self._writer.abort()


LAYER_TYPES: Final = frozenset({
    mt.OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar", mt.OCI_LAYER_GZIP,
    mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_FOREIGN, mt.OCI_LAYER_ZSTD,
})  # fmt: skip


def open_layer(data: io.BufferedIOBase, media_type: str) -> io.BufferedIOBase:
    """A readable uncompressed tar stream of a stored layer blob."""
    if media_type in (mt.OCI_LAYER, "application/vnd.docker.image.rootfs.diff.tar"):
        return data
    if media_type in (mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_FOREIGN):
        reader: io.BufferedIOBase = igzip.IGzipFile(fileobj=data, mode="rb")  # type: ignore[no-untyped-call]
        return reader
    if media_type == mt.OCI_LAYER_ZSTD:
        return zstd.ZstdFile(data, mode="rb")
    raise LayerError(f"unsupported layer media type {media_type}")


class DiffIdReader(io.RawIOBase):
    """The uncompressed stream of a layer, hashed as it is read: `check()` reads what the
    consumer left (tar padding) and compares with the diffID the config claims."""

    def __init__(self, stream: io.BufferedIOBase, diff_id: Digest, what: str) -> None:
        super().__init__()
        self._stream = stream
        self._diff_id = diff_id
        self._what = what
        self._hasher = Hasher(diff_id.algorithm)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            count = self._stream.readinto(buffer)
        except EOFError:
            raise LayerError(
                f"{self._what}: the compressed stream ends early (truncated)"
            ) from None
        except (OSError, ValueError) as exc:
            if isinstance(exc, PolyarchError):
                raise
            raise LayerError(f"{self._what}: cannot decompress: {exc}") from None
        if count:
            self._hasher.update(memoryview(buffer)[:count])
        return count or 0

    def check(self) -> None:
        while self.read(1024 * 1024):
            pass
        actual = self._hasher.digest()
        if actual != self._diff_id:
            raise LayerError(
                f"{self._what}: its content is {actual}, not the diffID {self._diff_id} the image "
                "config claims; refusing it"
            )
