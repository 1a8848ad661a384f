"""The bottom of the registry client's chain: what a server may make polyarch hold in memory
and how long it may keep a transfer waiting, written once for every request.

`GuardedTransport` wraps the HTTP transport. Every response body goes through `_Guarded`:
- at most `limit` bytes of it are read (the request's `LIMIT` extension; error answers are
  cut at `ERROR_BODY_LIMIT` whatever was asked), so a registry or token service that answers
  with a gigabyte costs a bounded amount of memory, even where httpx reads a body itself (the
  401 it answers with a new token);
- a transfer that stalls, or trickles a few bytes a second, fails with `httpx.ReadTimeout` after
  `idle` seconds without `PROGRESS_BYTES` of progress: the retries above treat it as any cut
  connection (a blob resumes where it stopped).

`read_body` reads a body whole into memory with that bound, decoding gzip or deflate itself
with the bound applied to the decoded bytes (a small compressed answer cannot inflate into a
large one).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from typing import Final

import httpx

from polyarch.errors import RegistryError

LIMIT: Final = "polyarch.limit"  # request extension: the most body bytes to read
ERROR_BODY_LIMIT: Final = 64 * 1024  # of an error answer, the part read (the rest is dropped)
PROGRESS_BYTES: Final = 16 * 1024  # this much must arrive within every idle period
DEFAULT_IDLE: Final = 60.0


class BodyTooLarge(RegistryError):
    """A response body larger than polyarch reads for its kind."""


class GuardedTransport(httpx.BaseTransport):
    def __init__(
        self,
        inner: httpx.BaseTransport,
        idle: float = DEFAULT_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.idle = idle
        self.clock = clock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        limit = request.extensions.get(LIMIT)
        error = response.status_code >= 300
        if error:
            limit = ERROR_BODY_LIMIT if limit is None else min(limit, ERROR_BODY_LIMIT)
        assert isinstance(response.stream, httpx.SyncByteStream)
        guarded = _Guarded(response.stream, request, limit, error, self.idle, self.clock)
        return httpx.Response(response.status_code, headers=response.headers, stream=guarded,
                              extensions=response.extensions, request=request)  # fmt: skip

    def close(self) -> None:
        self.inner.close()


class _Guarded(httpx.SyncByteStream):
    def __init__(
        self,
        inner: httpx.SyncByteStream,
        request: httpx.Request,
        limit: int | None,
        truncate: bool,
        idle: float,
        clock: Callable[[], float],
    ) -> None:
        self.inner, self.request, self.limit = inner, request, limit
        self.truncate, self.idle, self.clock = truncate, idle, clock

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        mark = self.clock()
        since = 0
        for chunk in self.inner:
            now = self.clock()
            since += len(chunk)
            if since >= PROGRESS_BYTES:
                mark, since = now, 0
            elif now - mark > self.idle:
                raise httpx.ReadTimeout(
                    f"fewer than {PROGRESS_BYTES} bytes in {self.idle:g} s: the transfer stalled",
                    request=self.request,
                )
            if self.limit is not None and seen + len(chunk) > self.limit:
                if self.truncate:  # an error answer: its start says enough
                    yield chunk[: self.limit - seen]
                    return
                raise BodyTooLarge(
                    f"{self.request.method} {self.request.url.path}: the answer is larger than "
                    f"{self.limit} bytes; refusing it"
                )
            seen += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def read_body(resp: httpx.Response, limit: int, what: str, *, truncate: bool = False) -> bytes:
    """The body, at most `limit` bytes of it after decoding (more: `BodyTooLarge`, or the first
    `limit` bytes with `truncate`)."""
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by their header
    elif encoding not in ("", "identity"):
        raise RegistryError(f"{what}: answered with Content-Encoding {encoding!r}, which "
                            "polyarch does not read")  # fmt: skip
    else:
        inflate = None
    data = bytearray()
    for raw in resp.iter_raw():
        if inflate is None:
            data += raw
        else:
            try:
                data += inflate.decompress(raw, limit + 1 - len(data))
            except zlib.error as exc:
                raise RegistryError(f"{what}: its {encoding} encoding is broken ({exc})") from None
            if inflate.unconsumed_tail:
                data += b"\0"  # more would come out: over the limit
        if len(data) > limit:
            if truncate:
                return bytes(data[:limit])
            raise BodyTooLarge(f"{what} is larger than {limit} bytes; refusing it")
    return bytes(data)
