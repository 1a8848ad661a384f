"""Waiting on a pool of tasks: every one done, or the first failure raised. Pure."""

from __future__ import annotations

from collections.abc import Sequence
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
