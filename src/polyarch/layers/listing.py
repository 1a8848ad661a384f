"""The entries of a layer as `FileInfo`s, read from its tar stream (nothing is written): what
`polyarch diff` compares. Each regular file's content is hashed as it streams by; headers are
capped as when a layer is applied, and names are cleaned the same way."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from typing import IO

from polyarch.errors import LayerError
from polyarch.layers.apply import CappedTarInfo
from polyarch.layers.compare import FileInfo, Kind
from polyarch.layers.confine import clean_member_name

_CHUNK = 1024 * 1024
_KINDS: dict[bytes, Kind] = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}  # fmt: skip


def list_layer(stream: io.BufferedIOBase | IO[bytes]) -> Iterator[FileInfo]:
    """Every entry of an uncompressed layer stream, in order; whiteouts as kind `whiteout`
    or `opaque` (applied by `polyarch.layers.compare.filesystem`)."""
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=CappedTarInfo) as tar:
            for member in tar:
                yield _info(tar, member)
    except tarfile.TarError as exc:
        raise LayerError(f"not a valid tar archive: {exc}") from None
    except EOFError:
        raise LayerError("the archive ends early (truncated)") from None


def _info(tar: tarfile.TarFile, member: tarfile.TarInfo) -> FileInfo:
    path = clean_member_name(member.name)
    base = path.rpartition("/")[2]
    kind: Kind = _KINDS.get(member.type, "file")
    if base == ".wh..wh..opq":
        kind = "opaque"
    elif base.startswith(".wh."):
        kind = "whiteout"
    digest = ""
    if member.isreg():
        h = hashlib.sha256()
        reader = tar.extractfile(member)
        if reader is not None:
            while chunk := reader.read(_CHUNK):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
    link = ""
    if member.issym():
        link = member.linkname
    elif member.islnk():
        link = clean_member_name(member.linkname)
    device = f"{member.devmajor}:{member.devminor}" if member.ischr() or member.isblk() else ""
    xattrs = tuple(sorted((k.removeprefix("SCHILY.xattr."), v)
                          for k, v in member.pax_headers.items()
                          if k.startswith("SCHILY.xattr.")))  # fmt: skip
    return FileInfo(path, kind, member.mode & 0o7777, member.uid, member.gid,
                    member.size if member.isreg() else 0, int(member.mtime), digest, link,
                    device, xattrs)  # fmt: skip
