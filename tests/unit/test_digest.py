import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyarch.digest import Digest, Hasher
from polyarch.errors import InvalidDigestError, PolyarchError

HEX64 = "a" * 64


def test_parses_sha256_and_sha512() -> None:
    d = Digest.parse(f"sha256:{HEX64}")
    assert (d.algorithm, d.hex, str(d)) == ("sha256", HEX64, f"sha256:{HEX64}")
    assert Digest.parse("sha512:" + "0" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:",
        f"sha256:{HEX64.upper()}",
        f"sha256:{HEX64[:-1]}",
        f"sha256:{HEX64}0",
        f"sha384:{'a' * 96}",
        f"SHA256:{HEX64}",
        f"sha256:{'g' * 64}",
        "sha256:../../../../etc/passwd",
        f"sha256:{HEX64}/..",
        f" sha256:{HEX64}",
        f"sha256:{HEX64}\n",
        "sha512:" + "a" * 64,
        HEX64,
    ],
)
def test_refuses_anything_else(text: str) -> None:
    with pytest.raises(InvalidDigestError) as info:
        Digest.parse(text)
    assert isinstance(info.value, PolyarchError)


def test_constructor_validates_too() -> None:
    with pytest.raises(InvalidDigestError):
        Digest("sha256", "../etc")


def test_of_and_hasher_agree_with_hashlib() -> None:
    data = b"polyarch" * 1000
    hasher = Hasher()
    for i in range(0, len(data), 333):
        hasher.update(data[i : i + 333])
    assert hasher.size == len(data)
    assert (
        hasher.digest()
        == Digest.of(data)
        == Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    )
    assert Digest.of(data, "sha512").hex == hashlib.sha512(data).hexdigest()


@given(st.binary(max_size=256))
def test_round_trip(data: bytes) -> None:
    d = Digest.of(data)
    assert Digest.parse(str(d)) == d


@given(st.text(max_size=80))
def test_parse_never_raises_foreign_errors(text: str) -> None:
    try:
        d = Digest.parse(text)
    except InvalidDigestError:
        return
    assert str(d) == text
