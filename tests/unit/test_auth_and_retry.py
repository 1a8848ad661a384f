import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyarch.registry.auth import parse_challenges
from polyarch.registry.retry import RetryPolicy, parse_retry_after


def test_bearer_challenge() -> None:
    [c] = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull"'
    )
    assert c.scheme == "bearer"
    assert c.realm == "https://auth.docker.io/token"
    assert c.service == "registry.docker.io"
    assert c.scopes == ("repository:library/nginx:pull",)


def test_several_challenges_quoted_commas_and_escapes() -> None:
    got = parse_challenges(
        'Basic realm="a, b", Bearer realm="https://x/t",scope="repository:a:pull repository:b:pull"'
        ', error="insufficient_scope", Newauth realm="say \\"hi\\""'
    )
    assert [c.scheme for c in got] == ["basic", "bearer", "newauth"]
    assert got[0].realm == "a, b"
    assert got[1].scopes == ("repository:a:pull", "repository:b:pull")
    assert got[1].params["error"] == "insufficient_scope"
    assert got[2].realm == 'say "hi"'


def test_unquoted_values() -> None:
    [c] = parse_challenges("Bearer realm=https://x/token, service=x")
    assert (c.realm, c.service) == ("https://x/token", "x")


@given(st.text(max_size=200))
def test_challenge_parser_never_crashes(text: str) -> None:
    parse_challenges(text)


def test_backoff_grows_and_is_bounded() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=4)
    rng = random.Random(1)
    delays = [policy.delay(n, None, rng) for n in range(1, 9)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(4.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    assert policy.delay(1, 3.0, rng) == 3.0
    assert policy.delay(1, 600.0, rng) == 4.0  # Retry-After is honoured up to max_delay


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), (" 12 ", 12.0), ("Sat, 28 Nov 2026 10:00:30 GMT", 30.0), ("soon", None),
     (None, None), ("Sat, 28 Nov 2026 09:00:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(value, now) == expected
