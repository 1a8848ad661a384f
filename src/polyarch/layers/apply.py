"""Apply an OCI layer (an uncompressed tar stream) onto a root directory, securely.

OCI whiteouts: `.wh.NAME` removes NAME from the layers below, `.wh..wh..opq` hides everything
the layers below put in its directory. With `whiteouts="delete"` they are carried out (the root
is a flattened filesystem); with `whiteouts="overlay"` they are recorded the way overlayfs reads
them in a lower directory (a 0:0 character device, the `trusted.overlay.opaque` xattr), so each
layer can be unpacked into a directory of its own and stacked; with `whiteouts="keep"` they are
ordinary files (an archive added by ADD is an archive, not a layer).

Every path goes through `Root` (no `..`, symlinks resolved inside the root, hardlinks only to
entries inside the root). Device nodes are refused unless polyarch runs as root. Ownership is
applied when running as root; extended attributes where the filesystem takes them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Final, Literal

from polyarch.errors import LayerError
from polyarch.layers.confine import Root, UnsafePathError, clean_member_name, remove_at
from polyarch.runtime.userns import overlay_opaque, rootless

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
_CHUNK = 1024 * 1024


MAX_HEADER: Final = 1 << 20  # Go's archive/tar limit for PAX records and long names


class CappedTarInfo(tarfile.TarInfo):
    """Refuses PAX and GNU long-name headers over 1 MiB before reading them: a hostile layer
    must not make polyarch hold a huge header in memory."""

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_size()
        return super()._proc_pax(tarfile)  # type: ignore[misc, no-any-return]

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_size()
        return super()._proc_gnulong(tarfile)  # type: ignore[misc, no-any-return]

    def _check_size(self) -> None:
        if self.size > MAX_HEADER:
            raise LayerError(
                f"tar header record of {self.size} bytes (over {MAX_HEADER}): refusing it"
            )


class _Dirs:
    """Directory fds by the path a layer names them, reused between entries (a tar lists a
    directory's entries together). Any removal of a directory or symlink empties the cache:
    only those can change where a path resolves. Paths are still resolved by `Root`."""

    def __init__(self, root: Root, limit: int = 128) -> None:
        self.root = root
        self.limit = limit
        self.fds: dict[str, int] = {}

    def get(self, rel: str) -> int:
        if not rel:
            return self.root.fd
        fd = self.fds.pop(rel, None)
        if fd is None:
            fd = self.root.open_dir(rel, create=True)
            if fd == self.root.fd:
                return fd  # a path that resolves to the root: the root's fd is not ours
            if len(self.fds) >= self.limit:
                oldest = next(iter(self.fds))
                os.close(self.fds.pop(oldest))
        self.fds[rel] = fd  # most recently used last
        return fd

    def removed(self, st: os.stat_result | None) -> None:
        if st is None or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self.clear()

    def clear(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


@dataclass
class ApplyReport:
    entries: int = 0
    whiteouts: int = 0
    bytes: int = 0
    xattrs_skipped: int = 0
    written: set[str] = field(default_factory=set, repr=False)


def apply_layer(
    stream: IO[bytes],
    root: str | os.PathLike[str],
    *,
    whiteouts: Literal["delete", "overlay", "keep"] = "delete",
    allow_devices: bool | None = None,
    same_owner: bool | None = None,
    only: Callable[[str], bool] | None = None,
) -> ApplyReport:
    """Apply the layer `stream` onto `root`. `only`: the entries (by cleaned path; a
    whiteout by the path it removes, an opaque marker by its directory) to apply, the rest
    passed over (checked as a tar all the same)."""
    is_root = os.geteuid() == 0
    devices_ok = is_root if allow_devices is None else allow_devices and is_root
    if rootless():  # no device node can be made in a user namespace: skipped, as containerd
        devices_ok = False
    chown = is_root if same_owner is None else same_owner
    report = ApplyReport()
    dir_times: list[tuple[str, int]] = []
    with Root(root) as confined:
        try:
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=CappedTarInfo) as tar:
                dirs = _Dirs(confined)
                try:
                    _apply_members(tar, confined, dirs, report, whiteouts, devices_ok, chown,
                                   dir_times, only)  # fmt: skip
                finally:
                    dirs.clear()
        except tarfile.TarError as exc:
            raise LayerError(f"not a valid tar archive: {exc}") from None
        except EOFError:
            raise LayerError("the archive ends early (truncated)") from None
        for name, mtime in sorted(dir_times, key=lambda item: -item[0].count("/")):
            with (
                contextlib.suppress(FileNotFoundError, UnsafePathError),
                confined.parent(name, create=False) as (fd, leaf),
            ):
                os.utime(leaf, ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)
    return report


def _apply_members(
    tar: tarfile.TarFile,
    confined: Root,
    dirs: _Dirs,
    report: ApplyReport,
    whiteouts: str,
    devices_ok: bool,
    chown: bool,
    dir_times: list[tuple[str, int]],
    only: Callable[[str], bool] | None,
) -> None:
    for member in tar:
        name = clean_member_name(member.name)
        base = name.rpartition("/")[2]
        report.entries += 1
        if base.startswith(WHITEOUT_PREFIX) and whiteouts != "keep":
            parent = name.rpartition("/")[0]
            target = base[len(WHITEOUT_PREFIX) :]
            if base != OPAQUE and (target in ("", ".", "..")
                                   or target.startswith(WHITEOUT_PREFIX)):  # fmt: skip
                raise UnsafePathError(f"invalid whiteout entry {member.name!r}")
            named = parent if base == OPAQUE else f"{parent}/{target}" if parent else target
            if only is not None and not only(named):
                continue
            report.whiteouts += 1
            dirs.clear()  # whiteouts remove whatever they name: resolve afresh afterwards
            if base == OPAQUE:
                if whiteouts == "overlay":
                    _mark_opaque(confined, parent)
                else:
                    # Hide what the layers below put there; what this layer already
                    # wrote in it stays, and what it writes next lands after this.
                    _clear_below(confined, parent, report.written)
                continue
            victim = f"{parent}/{target}" if parent else target
            if whiteouts == "overlay":
                _overlay_whiteout(confined, victim)
            else:
                confined.remove(victim)
            continue
        if not name:
            if member.isdir():
                _apply_meta_fd(confined.fd, member, chown)
                continue
            raise UnsafePathError(f"entry {member.name!r} would replace the root itself")
        if only is not None and not only(name):
            _refused(member, devices_ok)  # passed over, but refused as if it were applied
            continue
        _extract(confined, dirs, tar, member, name, report, devices_ok, chown, dir_times)
        report.written.add(name)


def _extract(
    confined: Root,
    dirs: _Dirs,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    name: str,
    report: ApplyReport,
    devices_ok: bool,
    chown: bool,
    dir_times: list[tuple[str, int]],
) -> None:
    head, _, leaf = name.rpartition("/")
    fd = dirs.get(head)
    existing = _lstat(fd, leaf)
    if member.isdir():
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            dirs.removed(existing)
            remove_at(fd, leaf)
            existing = None
        if existing is None:
            os.mkdir(leaf, 0o700, dir_fd=fd)
        dfd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            _apply_meta_fd(dfd, member, chown)
            report.xattrs_skipped += _xattrs_fd(dfd, member)
        finally:
            os.close(dfd)
        dir_times.append((name, int(member.mtime * 1_000_000_000)))
        return
    if existing is not None:
        dirs.removed(existing)
        remove_at(fd, leaf)
    if member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        out = os.open(
            leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
            dir_fd=fd,
        )  # fmt: skip
        try:
            while chunk := source.read(_CHUNK):
                _write_all(out, chunk)
                report.bytes += len(chunk)
            _apply_meta_fd(out, member, chown)
            report.xattrs_skipped += _xattrs_fd(out, member)
        finally:
            os.close(out)
    elif member.issym():
        os.symlink(member.linkname, leaf, dir_fd=fd)
        if chown:
            os.chown(leaf, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
    elif member.islnk():
        target = clean_member_name(member.linkname)
        if not target:
            raise UnsafePathError(f"hardlink {member.name!r} points at the root")
        missing = UnsafePathError(
            f"hardlink {member.name!r} -> {member.linkname!r}: target not in the layers"
        )
        try:
            with confined.parent(target, create=False) as (tfd, tleaf):
                st = _lstat(tfd, tleaf)
                if st is None:
                    raise missing
                if stat.S_ISDIR(st.st_mode):
                    raise UnsafePathError(f"hardlink {member.name!r} to a directory")
                os.link(tleaf, leaf, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        return  # a hard link shares its target's metadata
    elif member.ischr() or member.isblk() or member.isfifo():
        if not member.isfifo() and not devices_ok and rootless():
            return  # as containerd in a user namespace: the device is not made
        _refused(member, devices_ok)
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        device = os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0
        os.mknod(leaf, kind | (member.mode & 0o7777), device, dir_fd=fd)
        if chown:
            os.chown(leaf, member.uid, member.gid, dir_fd=fd, follow_symlinks=False)
        os.chmod(leaf, member.mode & 0o7777, dir_fd=fd, follow_symlinks=True)
    else:
        _refused(member, devices_ok)
    mtime = int(member.mtime * 1_000_000_000)
    with contextlib.suppress(OSError):
        os.utime(leaf, ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)


def _refused(member: tarfile.TarInfo, devices_ok: bool) -> None:
    """Raise for an entry no root may hold: a type polyarch does not make, a hard link that
    climbs out or names the root, or a device node when devices are not allowed (outside a
    user namespace, where they are skipped)."""
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()
            or member.ischr() or member.isblk() or member.isfifo()):  # fmt: skip
        raise UnsafePathError(f"unsupported entry type {member.type!r} for {member.name!r}")
    if member.islnk() and not clean_member_name(member.linkname):
        raise UnsafePathError(f"hardlink {member.name!r} points at the root")
    if (member.ischr() or member.isblk()) and not devices_ok and not rootless():
        raise UnsafePathError(
            f"device node {member.name!r} refused: polyarch is not running as root"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lstat(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _apply_meta_fd(fd: int, member: tarfile.TarInfo, chown: bool) -> None:
    if chown:
        os.fchown(fd, member.uid, member.gid)
    os.fchmod(fd, member.mode & 0o7777)


def _xattrs_fd(fd: int, member: tarfile.TarInfo) -> int:
    skipped = 0
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        raw = value.encode("utf-8", "surrogateescape")
        try:
            os.setxattr(fd, name, raw)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
                raise
            skipped += 1
    return skipped


def _overlay_whiteout(confined: Root, victim: str) -> None:
    with confined.parent(victim) as (fd, leaf):
        if _lstat(fd, leaf) is not None:
            remove_at(fd, leaf)
        os.mknod(leaf, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)


def _mark_opaque(confined: Root, directory: str) -> None:
    dfd = confined.open_dir(directory, create=True)
    try:
        os.setxattr(dfd, overlay_opaque(), b"y")
    finally:
        if dfd != confined.fd:
            os.close(dfd)


def _clear_below(confined: Root, directory: str, written: set[str]) -> None:
    """An opaque directory: remove what lower layers put there, keep what this layer wrote."""
    dfd = confined.open_dir(directory, create=True)
    prefix = f"{directory}/" if directory else ""
    try:
        for child in os.listdir(dfd):
            path = f"{prefix}{child}"
            if path not in written and not any(w.startswith(path + "/") for w in written):
                remove_at(dfd, child)
    finally:
        if dfd != confined.fd:
            os.close(dfd)
