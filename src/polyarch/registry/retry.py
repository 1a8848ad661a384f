"""When and how long to wait before trying a registry request again.

One budget per operation: a blob copy's upload and the download it streams share one count of
tries and one window of waiting, so retries at one level never multiply those of another.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter; `Retry-After` honoured up to `max_delay`."""

    attempts: int = 5  # total tries, the first included
    base_delay: float = 0.25
    max_delay: float = 20.0
    window: float = 60.0  # seconds of waiting between tries, at most, per operation

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** (attempt - 1)))
        jitter: float = rng.uniform(0, ceiling / 2)
        return ceiling / 2 + jitter


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


@dataclass
class Budget:
    """What one operation may still spend on retries: failures and seconds of waiting."""

    failures_left: int
    wait_left: float
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spend(self, policy: RetryPolicy, retry_after: float | None, rng: random.Random) -> float:
        """The delay before the next try, or -1 when the budget is spent."""
        with self.lock:
            if self.failures_left <= 0:
                return -1.0
            self.failures += 1
            delay = policy.delay(self.failures, retry_after, rng)
            if delay > self.wait_left:
                return -1.0
            self.failures_left -= 1
            self.wait_left -= delay
            return delay


_BUDGET: ContextVar[Budget | None] = ContextVar("polyarch_retry_budget", default=None)


@contextlib.contextmanager
def operation(policy: RetryPolicy) -> Iterator[Budget]:
    """The budget of the operation under way in this thread, or a new one for this one."""
    current = _BUDGET.get()
    if current is not None:
        yield current
        return
    budget = Budget(policy.attempts - 1, policy.window)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        # a download's generator closed from another context: nothing to undo there
        with contextlib.suppress(ValueError):
            _BUDGET.reset(token)


def retry_or_raise(
    budget: Budget,
    policy: RetryPolicy,
    retry_after: float | None,
    rng: random.Random,
    sleep: Callable[[float], None],
    give_up: Callable[[], BaseException],
) -> None:
    """Wait before the next try, or raise `give_up()` when the operation's budget is spent."""
    delay = budget.spend(policy, retry_after, rng)
    if delay < 0:
        raise give_up()
    sleep(delay)
