"""Content digests: the only names polyarch gives to blobs and documents.

A digest is parsed strictly before it is used anywhere a string could do harm (a path in the
store, a URL path on a registry): `sha256:` with 64 lowercase hex digits or `sha512:` with 128.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from polyarch.errors import InvalidDigestError, VerificationError

Algorithm = Literal["sha256", "sha512"]

_HEX_LENGTH: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}
_PATTERN: Final = re.compile(r"\A(sha256|sha512):([0-9a-f]+)\Z")


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    algorithm: Algorithm
    hex: str

    def __post_init__(self) -> None:
        length = _HEX_LENGTH.get(self.algorithm)
        if length is None:
            raise InvalidDigestError(f"unsupported digest algorithm {self.algorithm!r}")
        if len(self.hex) != length or not re.fullmatch(r"[0-9a-f]+", self.hex):
            raise InvalidDigestError(
                f"invalid {self.algorithm} digest {self.hex!r}: "
                f"want {length} lowercase hex characters"
            )

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not isinstance(text, str):
            raise InvalidDigestError(f"digest must be a string, not {type(text).__name__}")
        match = _PATTERN.match(text)
        if match is None:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise InvalidDigestError(
                f"invalid digest {shown!r}: want sha256:<64 hex> or sha512:<128 hex>"
            )
        algorithm: Algorithm = "sha256" if match.group(1) == "sha256" else "sha512"
        return cls(algorithm, match.group(2))

    @classmethod
    def of(cls, data: bytes, algorithm: Algorithm = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        """A fresh hasher of this digest's algorithm, to check a stream against it."""
        return Hasher(self.algorithm)

    @property
    def encoded(self) -> str:
        return self.hex

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def short(self, length: int = 12) -> str:
        return self.hex[:length]


class Hasher:
    """Incremental digest and byte count of a stream."""

    __slots__ = ("_hash", "algorithm", "size")

    def __init__(self, algorithm: Algorithm = "sha256") -> None:
        self.algorithm: Algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())


class Check:
    """A stream checked against the digest and size its descriptor promises: the one
    verification every blob read goes through (registry downloads, upload sources, stored
    blobs). `update` refuses a byte past the size at once; `verify` checks the end."""

    __slots__ = ("_hasher", "digest", "size", "what")

    def __init__(self, digest: Digest, size: int | None, what: str) -> None:
        self.digest = digest
        self.size = size
        self.what = what
        self._hasher = digest.hasher()

    @property
    def seen(self) -> int:
        return self._hasher.size

    def update(self, data: bytes | memoryview) -> None:
        if self.size is not None and self._hasher.size + len(data) > self.size:
            self.fail(self._hasher.size + len(data))
        self._hasher.update(data)

    def complete(self) -> bool:
        return self.size is not None and self._hasher.size >= self.size

    def verify(self) -> None:
        actual = self._hasher.digest()
        if actual != self.digest or (self.size is not None and self._hasher.size != self.size):
            self.fail(self._hasher.size, str(actual))

    def fail(self, size: int, actual: str | None = None) -> NoReturn:
        raise VerificationError(self.what, expected_digest=str(self.digest), actual_digest=actual,
                                expected_size=self.size, actual_size=size)  # fmt: skip
