"""Build tar layers in memory, hostile ones included, for tests."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass


@dataclass
class E:
    """One tar entry: kind is file, dir, symlink, hardlink, chr, blk, fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    link: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = 1_600_000_000
    pax: dict[str, str] | None = None


def tar_bytes(*entries: E) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            kinds = {
                "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }  # fmt: skip
            info.type = kinds[e.kind]
            info.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            info.linkname = e.link
            if e.pax:
                info.pax_headers = dict(e.pax)
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def stream(*entries: E) -> io.BytesIO:
    return io.BytesIO(tar_bytes(*entries))
