"""Waiting on a pool of tasks (every one done, or the first failure raised), and a gate that
lets the most urgent work run first. Pure."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any


def wait_all(futures: Sequence[Future[Any]]) -> None:
    """Wait for every future; on the first failure cancel what has not started and raise it."""
    if not futures:
        return
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((f for f in done if f.exception() is not None), None)
    if failed is None:
        return
    for future in pending:
        future.cancel()
    wait(pending)
    error = failed.exception()
    assert error is not None
    raise error


class PriorityGate:
    """At most `slots` holders at once; when a slot frees, the waiter with the highest
    priority gets it (first come, first served among equals)."""

    def __init__(self, slots: int) -> None:
        self._cond = threading.Condition()
        self._free = max(1, slots)
        self._waiting: list[tuple[int, int]] = []
        self._tickets = itertools.count()

    @contextlib.contextmanager
    def slot(self, priority: int = 0) -> Iterator[None]:
        ticket = (-priority, next(self._tickets))
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            while self._free == 0 or self._waiting[0] != ticket:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()
