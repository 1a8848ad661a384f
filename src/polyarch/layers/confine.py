"""Paths confined to a root directory, resolved the way a container sees them.

Every path a layer names is walked one component at a time from a directory file descriptor
(`openat` with `O_NOFOLLOW`), never by a path string the kernel would resolve: a symlink met on
the way is read and resolved *inside the root* (an absolute target starts again at the root, and
`..` stops at the root), as `chroot` would, and as `filepath-securejoin` does for runc and
containerd. Nothing a layer contains can make polyarch read or write outside the root.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from polyarch.errors import PolyarchError

_MAX_LINKS = 40  # as the kernel's ELOOP limit


class UnsafePathError(PolyarchError):
    """A layer entry or path that would escape its root, or that cannot be resolved in it."""


def clean_member_name(name: str) -> str:
    """A tar member name as a relative, normalised path; refuses anything that climbs out."""
    if "\x00" in name:
        raise UnsafePathError(f"entry name contains NUL: {name!r}")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise UnsafePathError(f"entry {name!r} climbs out of the layer with '..'")
        parts.append(part)
    return "/".join(parts)


class Root:
    """A directory that confines every path resolved through it. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def parent(self, relpath: str, *, create: bool = True) -> Iterator[tuple[int, str]]:
        """(fd of the directory that holds `relpath`, its last component), confined.

        Missing directories on the way are created (mode 0755) when `create`.
        """
        clean = clean_member_name(relpath)
        if not clean:
            raise UnsafePathError("the root itself has no parent")
        head, _, name = clean.rpartition("/")
        fd = self.open_dir(head, create=create)
        try:
            yield fd, name
        finally:
            if fd != self.fd:
                os.close(fd)

    def open_dir(self, relpath: str, *, create: bool) -> int:
        """An fd for directory `relpath` inside the root (the caller closes it unless root)."""
        pending = [p for p in relpath.split("/") if p not in ("", ".")]
        stack: list[int] = [self.fd]  # fds from the root down; [0] is the root
        hops = 0
        try:
            while pending:
                part = pending.pop(0)
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                current = stack[-1]
                try:
                    fd = os.open(
                        part,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=current,
                    )
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=current)
                    fd = os.open(
                        part,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=current,
                    )
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(part, dir_fd=current, follow_symlinks=False)
                    if not stat.S_ISLNK(st.st_mode):
                        raise UnsafePathError(f"{relpath!r}: {part!r} is not a directory") from None
                    hops += 1
                    if hops > _MAX_LINKS:
                        raise UnsafePathError(f"{relpath!r}: too many levels of symlinks") from None
                    target = os.readlink(part, dir_fd=current)
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                    continue
                stack.append(fd)
            return stack.pop()
        finally:
            for fd in stack[1:]:
                os.close(fd)

    def lstat(self, relpath: str) -> os.stat_result | None:
        clean = clean_member_name(relpath)
        if not clean:
            return os.fstat(self.fd)
        try:
            with self.parent(clean, create=False) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def remove(self, relpath: str) -> bool:
        """Remove a file, link or whole directory tree at `relpath`; False if absent."""
        try:
            with self.parent(relpath, create=False) as (fd, name):
                return remove_at(fd, name)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def host_path(self, relpath: str) -> str:
        """The host path of a *resolved* location, for tools that need a path (never for
        writing untrusted content)."""
        return posixpath.join(self.path, clean_member_name(relpath))


def remove_at(dir_fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            for child in os.listdir(fd):
                remove_at(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
    return True
