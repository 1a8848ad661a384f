"""Write a directory of changes as an OCI layer tar, deterministically.

Entries are sorted by path; headers are PAX with numeric owners and empty user and group names;
with `source_date_epoch` every timestamp later than it is clamped to it (BuildKit's rule), so
the same inputs give the same bytes, and the same digests, on every run and machine. Hard links
inside the directory are written once and linked after. overlayfs whiteouts in an upper
directory (a 0:0 character device; the `trusted.overlay.opaque` xattr, or `user.overlay.opaque`
in a rootless user namespace) become OCI whiteouts
(`.wh.NAME`; `.wh..wh..opq`).
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import IO, Protocol, cast

from polyarch.layers.apply import OPAQUE, WHITEOUT_PREFIX

_CHUNK = 1024 * 1024
# overlayfs's own attributes (trusted.* as root; user.* in a rootless user namespace)
_SKIP_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")
_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def write_layer(
    upper: str | os.PathLike[str],
    out: Writable,
    *,
    source_date_epoch: int | None = None,
    overlay: bool = True,
) -> int:
    """Tar the tree at `upper` into `out` (streamed); returns the number of entries."""
    base = os.fspath(upper)
    links: dict[tuple[int, int], str] = {}
    count = 0
    stream = cast(IO[bytes], out)  # tarfile only writes to it
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk(base):
            path = os.path.join(base, rel)
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode):
                continue  # a socket cannot travel in a layer; BuildKit leaves them out too
            if overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                head, _, name = rel.rpartition("/")
                info = tarfile.TarInfo((head + "/" if head else "") + WHITEOUT_PREFIX + name)
                info.mtime = _clamp(int(st.st_mtime), source_date_epoch)
                info.mode = 0o644
                tar.addfile(info)
                count += 1
                continue
            info = _info(rel, path, st, source_date_epoch)
            key = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                first = links.get(key)
                if first is not None:
                    info.type = tarfile.LNKTYPE
                    info.linkname = first
                    info.size = 0
                    tar.addfile(info)
                    count += 1
                    continue
                links[key] = rel
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            count += 1
            if (
                overlay
                and stat.S_ISDIR(st.st_mode)
                and any(_getxattr(path, name) == b"y" for name in _OPAQUE)
            ):
                marker = tarfile.TarInfo(rel + "/" + OPAQUE)
                marker.mtime = info.mtime
                marker.mode = 0o644
                tar.addfile(marker)
                count += 1
    return count


def _walk(base: str) -> Iterator[str]:
    """Relative paths under `base`, sorted as byte strings, parents before children."""

    def visit(rel: str) -> Iterator[str]:
        directory = os.path.join(base, rel) if rel else base
        for name in sorted(os.listdir(directory), key=os.fsencode):
            child = f"{rel}/{name}" if rel else name
            yield child
            if stat.S_ISDIR(os.lstat(os.path.join(base, child)).st_mode):
                yield from visit(child)

    yield from visit("")


def _clamp(mtime: int, epoch: int | None) -> int:
    return min(mtime, epoch) if epoch is not None else mtime


def _info(rel: str, path: str, st: os.stat_result, epoch: int | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = _clamp(int(st.st_mtime), epoch)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        raise OSError(errno.EINVAL, f"cannot put a socket in a layer: {rel}")
    if not stat.S_ISLNK(mode):
        headers: dict[str, str] = {}
        for name in _listxattr(path):
            if name.startswith(_SKIP_XATTRS):
                continue
            value = _getxattr(path, name)
            if value is not None:
                headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
        if headers:
            info.pax_headers = headers
    return info


def _listxattr(path: str) -> list[str]:
    try:
        return sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        return []


def _getxattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
