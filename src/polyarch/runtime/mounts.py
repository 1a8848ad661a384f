"""overlayfs mounts for snapshots, and binds of open directories (effects: mount(2))."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence

from polyarch.errors import PolyarchError


class MountError(PolyarchError):
    """A mount that the kernel refused."""


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MNT_DETACH = 2
MS_BIND = 4096


def mount_overlay(lowers: Sequence[str], upper: str, work: str, target: str) -> None:
    """Mount lowers (topmost first) + upper at target. Paths should be short: the option
    string is limited to a page."""
    from polyarch.runtime.userns import rootless  # noqa: PLC0415

    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},index=off"
    if rootless():  # a user namespace: overlayfs keeps its attributes as user.overlay.*
        options += ",userxattr"
    if len(options) > 4000:
        raise MountError(f"too many layers for one overlay mount ({len(lowers)})")
    result = _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode())
    if result != 0:
        err = ctypes.get_errno()
        raise MountError(f"overlay mount on {target} failed: {os.strerror(err)}")


def unmount(target: str) -> None:
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise MountError(f"unmount of {target} failed: {os.strerror(err)}")


def bind_directory(fd: int, target: str) -> None:
    """Bind the directory open as `fd` at `target`: the very directory that was opened, not
    whatever its path names by now (a path could have been swapped for a symlink since)."""
    source = f"/proc/self/fd/{fd}".encode()
    if _libc.mount(source, os.fsencode(target), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise MountError(f"bind mount on {target} failed: {os.strerror(err)}")
