"""Where polyarch's CPU time goes, by kind of work: a process-wide ledger the build's trace reads.

Work in this process is measured with its thread's own resource usage (user and kernel time of
that thread): `with measure("unpack"):` charges what the block's thread spent on the CPU to
"unpack". Measures nest exclusively: a block inside another is charged to its own kind and
paused in the outer one, so the kinds add up without counting anything twice. Work done by
child processes is charged by its caller with `charge` (a RUN step's processes from their
rusage, an unpacking worker's from its own), in a ledger of its own. `snapshot` adds the
process's own total (`self`) and its reaped children's (`children`), so the time no kind names
is seen too: `self` minus the measured kinds is polyarch's own Python elsewhere.

Every figure is a pair, user and kernel seconds: a filesystem's cost shows as kernel time.
A ledger per process, not per build: builds that run in one process at the same time share it
(the CLI runs one build per process).
"""

from __future__ import annotations

import resource
import threading
from types import TracebackType
from typing import Final

Seconds = tuple[float, float]  # user, kernel

_lock = threading.Lock()
_measured: dict[str, Seconds] = {}  # in this process's threads
_charged: dict[str, Seconds] = {}  # in child processes
_local = threading.local()
SELF: Final = "self"
CHILDREN: Final = "children"


def _add(ledger: dict[str, Seconds], kind: str, user: float, kernel: float) -> None:
    if user > 0 or kernel > 0:
        with _lock:
            was = ledger.get(kind, (0.0, 0.0))
            ledger[kind] = (was[0] + user, was[1] + kernel)


def usage(rusage: resource.struct_rusage) -> Seconds:
    return rusage.ru_utime, rusage.ru_stime


def _thread() -> Seconds:
    return usage(resource.getrusage(resource.RUSAGE_THREAD))


def charge(kind: str, spent: Seconds) -> None:
    """Add what child processes spent on `kind` (user, kernel seconds)."""
    _add(_charged, kind, *spent)


class _Open:
    __slots__ = ("kind", "since")

    def __init__(self, kind: str, since: Seconds) -> None:
        self.kind = kind
        self.since = since


class measure:
    """Charge this thread's CPU time inside the block to `kind` (exclusive of nested kinds)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        stack: list[_Open] | None = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        now = _thread()
        if stack:
            outer = stack[-1]
            _add(_measured, outer.kind, now[0] - outer.since[0], now[1] - outer.since[1])
        stack.append(_Open(self.kind, now))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack: list[_Open] = _local.stack
        now = _thread()
        since = stack.pop().since
        _add(_measured, self.kind, now[0] - since[0], now[1] - since[1])
        if stack:
            stack[-1].since = now


def snapshot() -> dict[str, dict[str, Seconds]]:
    """The ledgers so far: `measured` (kinds in this process), `charged` (kinds in children)
    and `total` (`self`, `children`: whatever no kind names included)."""
    with _lock:
        measured, charged = dict(_measured), dict(_charged)
    total = {SELF: usage(resource.getrusage(resource.RUSAGE_SELF)),
             CHILDREN: usage(resource.getrusage(resource.RUSAGE_CHILDREN))}  # fmt: skip
    return {"measured": measured, "charged": charged, "total": total}


def since(before: dict[str, dict[str, Seconds]]) -> dict[str, dict[str, list[float]]]:
    """What was spent after `before` (a snapshot), by ledger and kind: [user, kernel]."""
    spent: dict[str, dict[str, list[float]]] = {}
    for ledger, kinds in snapshot().items():
        was = before.get(ledger, {})
        delta: dict[str, list[float]] = {}
        for kind, (user, kernel) in sorted(kinds.items()):
            old = was.get(kind, (0.0, 0.0))
            pair = [round(user - old[0], 3), round(kernel - old[1], 3)]
            if ledger == "total" or pair != [0.0, 0.0]:
                delta[kind] = pair
        spent[ledger] = delta
    return spent
