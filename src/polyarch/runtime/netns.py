"""Run a function inside another process's network namespace (effects).

`setns(2)` moves only the calling thread, so the function runs in a thread of its own that
enters the namespace first; sockets it opens stay in that namespace. This is how
`polyarch verify` reaches a server listening inside a container that publishes no port.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Final, TypeVar

from polyarch.errors import PolyarchError

CLONE_NEWNET: Final = 0x40000000
T = TypeVar("T")


class NamespaceError(PolyarchError):
    """A namespace that cannot be entered."""


def in_network_of(pid: int, fn: Callable[[], T]) -> T:
    """`fn()`, run in the network namespace of process `pid`."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        except OSError as exc:
            box["error"] = NamespaceError(f"process {pid} has no network namespace to enter: {exc}")
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                box["error"] = NamespaceError(
                    f"cannot enter the network namespace of process {pid}: {os.strerror(err)}"
                )
                return
        finally:
            os.close(fd)
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
