"""One registry as a client knows it, one request to it, and what a response's failure means.

An `Endpoint` is what the ping of `/v2/` taught (the scheme, the authentication challenge) and
what the auth flow keeps for that registry (the credential found for it, the tokens fetched per
set of scopes). A `Request` is one logical request: the connection sends it, with retries,
redirects and credentials (`connection.py`).
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import httpx

from polyarch.digest import Digest
from polyarch.errors import (
    AuthenticationError,
    NotFoundError,
    PolyarchError,
    RegistryError,
    RegistryUnavailableError,
)
from polyarch.reference import Reference
from polyarch.registry.auth import Challenge, RegistryAuth, repository_scope
from polyarch.registry.credentials import Credential
from polyarch.registry.retry import RETRY_STATUSES
from polyarch.registry.transport import ERROR_BODY_LIMIT, read_body

TRANSIENT: Final = (
    httpx.TransportError,  # connect/read/write errors, timeouts, protocol errors
)
NON_TRANSIENT_TRANSPORT: Final = (httpx.UnsupportedProtocol,)


class Retry(Exception):
    """A try that failed in a way that may pass: tried again while the budget lasts."""

    def __init__(self, error: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error, self.retry_after = error, retry_after


@dataclass(frozen=True, slots=True)
class Timing:
    """The clock a client waits by, its sleep, and the jitter of its backoff: replaced by
    tests that must not wait."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None


@dataclass(slots=True)
class Token:
    value: str
    expires_at: float


@dataclass(slots=True)
class Endpoint:
    host: str
    base: httpx.URL
    challenge: Challenge | None
    credential: Credential | None = None
    tokens: dict[frozenset[str], Token] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    auth: RegistryAuth | None = None

    def url(self, repository: str, kind: str, target: str) -> httpx.URL:
        return self.base.join(f"/v2/{repository}/{kind}/{target}")


@dataclass(frozen=True, slots=True)
class Request:
    """One logical request to a registry's own API. `ok` lists the statuses that answer it;
    `limit` bounds a body read whole; `body` gives the bytes afresh for each try."""

    endpoint: Endpoint
    method: str
    url: httpx.URL
    ref: Reference | str
    scopes: Sequence[str]
    what: str
    headers: dict[str, str] | None = None
    body: Callable[[], bytes | Iterable[bytes]] | None = None
    ok: tuple[int, ...] = (200,)
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Reach:
    """How a registry answered its ping: where, the authentication it asks for, and whether
    credentials for it were found here."""

    base: str
    auth: str
    anonymous: bool


def pull(repository: str) -> list[str]:
    return [repository_scope(repository, "pull")]


def push(repository: str) -> list[str]:
    return [repository_scope(repository, "pull,push")]


def is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def content_type(resp: httpx.Response) -> str | None:
    value = resp.headers.get("Content-Type")
    return value.split(";", 1)[0].strip() if value else None


def header_digest(value: str, ref: Reference | str) -> Digest:
    """A `Docker-Content-Digest` header's digest; a malformed one is the registry's error."""
    try:
        return Digest.parse(value.strip())
    except PolyarchError:
        raise RegistryError(
            f"registry sent an invalid Docker-Content-Digest {value[:80]!r}", reference=str(ref)
        ) from None


def error_from(resp: httpx.Response, message: str, reference: str) -> RegistryError:
    """A `RegistryError` with the status and the registry's own error code and message."""
    code = detail = registry_message = None
    try:
        body = (read_body(resp, ERROR_BODY_LIMIT, message, truncate=True)
                if resp.request.method != "HEAD" else b"")  # fmt: skip
    except (httpx.HTTPError, RegistryError):
        body = b""
    if body:
        try:
            errors = json.loads(body).get("errors") or []
            if errors and isinstance(errors[0], dict):
                code = errors[0].get("code")
                registry_message = errors[0].get("message")
                raw_detail = errors[0].get("detail")
                detail = None if raw_detail is None else str(raw_detail)[:500]
        except (ValueError, AttributeError):
            pass
    status = resp.status_code
    text = message
    if registry_message:
        text = f"{message}: {registry_message}"
    elif resp.reason_phrase:
        text = f"{message}: {resp.reason_phrase}"
    cls: type[RegistryError] = RegistryError
    if status in (401, 403):
        cls = AuthenticationError
        if status == 401:
            text += (
                "; log in with `docker login` (polyarch reads docker's config.json and "
                "credential helpers) or pass --authfile"
            )
    elif status == 404:
        cls = NotFoundError
    elif status in RETRY_STATUSES:
        cls = RegistryUnavailableError
    return cls(text, status=status, code=code, reference=reference, detail=detail)
