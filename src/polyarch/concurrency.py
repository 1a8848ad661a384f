"""Pools of tasks that never hold up an interrupt, waiting on them (every one done, or the
first failure raised), and a gate that lets the most urgent work run first. Pure."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

# Set when the command is interrupted (Ctrl-C, SIGTERM): tasks that hold something to give
# back (a running container, a mount) look at it and stop, within the grace below.
INTERRUPTED = threading.Event()
STOP_GRACE = 1.0  # seconds tasks under way get to stop when the command is interrupted


@contextlib.contextmanager
def task_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that does not hold up a failure or an interrupt: what has not started is
    cancelled; on Ctrl-C the tasks under way are told (`INTERRUPTED`) and given `STOP_GRACE`
    to stop, then the interrupt goes on (the CLI ends the process; a half-written file is
    cleared by the next command); on a failure they are not waited for. A block that ends well
    waits for its tasks, as `with ThreadPoolExecutor()` does."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        yield pool
    except KeyboardInterrupt:
        INTERRUPTED.set()
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + STOP_GRACE
        for thread in list(getattr(pool, "_threads", ())):
            thread.join(max(0.0, deadline - time.monotonic()))
        raise
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


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
