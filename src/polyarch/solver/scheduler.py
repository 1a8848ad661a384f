"""A scheduler for a graph of jobs that knows nothing of what the jobs are. Pure (threads only).

`Scheduler.solve(roots)` computes every root and, first, everything it depends on:
- each key at most once (single flight: a second asker waits for the first);
- independent branches side by side (each root on a thread of its own; a job computes its
  inputs in its thread, or waits for the thread already computing them);
- heavy work through `gate`, at most `slots` at once, the most urgent first;
- on the first failure nothing new starts, running jobs are asked to stop (`cancelled` is
  set), and once every thread has ended the first error is raised; every failure is kept in
  `failures`, in the order they happened.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from polyarch.concurrency import STOP_GRACE, PriorityGate
from polyarch.errors import PolyarchError

R = TypeVar("R")


class Cancelled(PolyarchError):
    """The job did not run (or stopped) because another one failed, or the build was
    interrupted."""


@dataclass
class _Pending(Generic[R]):
    ready: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None


class Scheduler(Generic[R]):
    def __init__(
        self,
        inputs: Callable[[str], Sequence[str]],
        compute: Callable[[str, list[R]], R],
        *,
        slots: int = 1,
    ) -> None:
        self._inputs = inputs
        self._compute = compute
        self.gate = PriorityGate(slots)
        self.cancelled = threading.Event()
        self.failures: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()
        self._done: dict[str, R] = {}
        self._pending: dict[str, _Pending[R]] = {}

    def solve(self, roots: Sequence[str]) -> dict[str, R]:
        unique = list(dict.fromkeys(roots))
        if not unique:
            return {}
        pool = ThreadPoolExecutor(max_workers=len(unique))
        futures = [pool.submit(self.evaluate, key) for key in unique]
        try:
            for future in futures:
                future.exception()  # wait for every thread: nothing runs on after we return
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): every running job is told to stop (a step's
            # container is killed), and given a moment to; nothing new starts.
            self.cancel()
            deadline = time.monotonic() + STOP_GRACE
            for future in futures:
                with contextlib.suppress(BaseException):
                    future.exception(timeout=max(0.0, deadline - time.monotonic()))
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if self.failures:
            first = next((e for _k, e in self.failures if not isinstance(e, Cancelled)),
                         self.failures[0][1])  # fmt: skip
            raise first
        return {key: self._done[key] for key in unique}

    def cancel(self) -> None:
        self.cancelled.set()

    def result(self, key: str) -> R:
        with self._lock:
            return self._done[key]

    def finished(self, key: str) -> R | None:
        """The result if it was computed (None, and nothing computed, otherwise)."""
        with self._lock:
            return self._done.get(key)

    def evaluate(self, key: str) -> R:
        """The result of `key`, computing it (and its inputs) if nobody has yet."""
        with self._lock:
            if key in self._done:
                return self._done[key]
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = _Pending()
        if not owner:
            pending.ready.wait()
            if pending.error is not None:
                raise pending.error
            return pending.result  # type: ignore[return-value]
        try:
            if self.cancelled.is_set():
                raise Cancelled("cancelled")
            inputs = [self.evaluate(k) for k in self._inputs(key)]
            if self.cancelled.is_set():
                raise Cancelled("cancelled")
            result = self._compute(key, inputs)
        except BaseException as exc:
            with self._lock:
                if not any(e is exc for _k, e in self.failures):
                    self.failures.append((key, exc))
            self.cancelled.set()
            pending.error = exc
            pending.ready.set()
            raise
        with self._lock:
            self._done[key] = result
        pending.result = result
        pending.ready.set()
        return result
