"""Sending a registry's requests: endpoints, HTTP clients, retries, redirects, credentials.

For each host the connection first pings `/v2/` to learn the scheme (https; plain http only for
loopback or registries configured insecure) and the authentication challenge, then attaches
credentials only to requests whose origin is that registry (redirects to blob storage go without
them) or to the token realm the registry named (`tokens.py`).

The chain, one concern a layer (as go-containerregistry's `remote/transport`): the guarded
transport at the bottom bounds every body a server sends and fails a stalled transfer
(`transport.py`); above it the auth flow puts credentials on the registry's own requests
(`auth.py`); above that one retry loop (`tries`) spends the operation's budget on every failure
that may pass (408, 429, 5xx, cut, refused or stalled connections), with exponential backoff and
jitter, honouring `Retry-After`, and a small body is read inside the try that fetched it.
"""

from __future__ import annotations

import contextlib
import random
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final, TypeVar

import httpx

from polyarch import __version__
from polyarch.errors import (
    InsecureTransportError,
    RegistryError,
    RegistryUnavailableError,
)
from polyarch.reference import is_loopback_host
from polyarch.registry.auth import (
    SCOPES,
    Challenge,
    RegistryAuth,
    bearer_or_basic,
    same_origin,
)
from polyarch.registry.credentials import CredentialSource
from polyarch.registry.endpoint import (
    NON_TRANSIENT_TRANSPORT,
    TRANSIENT,
    Endpoint,
    Request,
    Retry,
    Timing,
    error_from,
    is_certificate_error,
)
from polyarch.registry.retry import (
    RETRY_STATUSES,
    Budget,
    RetryPolicy,
    operation,
    parse_retry_after,
    retry_or_raise,
)
from polyarch.registry.tls import TlsConfig
from polyarch.registry.tokens import Tokens
from polyarch.registry.transport import LIMIT, GuardedTransport

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS: Final = 5
T = TypeVar("T")


class Connection:
    """The registries one client talks to. Thread-safe."""

    def __init__(
        self,
        *,
        credentials: CredentialSource | None,
        transport: httpx.BaseTransport | None,
        insecure: Iterable[str],
        certs_dirs: Sequence[Path],
        retry: RetryPolicy,
        timeout: httpx.Timeout,
        idle_timeout: float,
        timing: Timing,
    ) -> None:
        self.on_retry: Callable[[str], None] | None = None  # told of each retry
        self.retry = retry
        self.tokens = Tokens(credentials, self, timing.clock)
        self._transport = transport
        self._insecure = frozenset(h.lower() for h in insecure)
        self._tls = TlsConfig(tuple(certs_dirs))
        self._timing = timing
        # A read waits at most the idle time; the guarded transport fails a trickle too.
        self._idle = idle_timeout
        self._timeout = timeout
        self._rng = timing.rng or random.Random()  # noqa: S311 (backoff jitter, not cryptography)
        self._endpoints: dict[str, Endpoint] = {}
        self._clients: dict[tuple[str, bool], httpx.Client] = {}
        self._pinging: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def user_agent(self) -> str:
        return f"polyarch/{__version__}"

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    # endpoints ---------------------------------------------------------------------------

    def endpoint(self, host: str) -> Endpoint:
        """The registry at `host`, pinged once (parallel callers wait for one ping)."""
        host = host.lower()
        with self._lock:
            found = self._endpoints.get(host)
            if found is not None:
                return found
            pinging = self._pinging.setdefault(host, threading.Lock())
        with pinging:
            with self._lock:
                found = self._endpoints.get(host)
            if found is not None:
                return found
            endpoint = self._ping(host)
            with self._lock:
                return self._endpoints.setdefault(host, endpoint)

    def plain_http_allowed(self, host: str) -> bool:
        return host.lower() in self._insecure or is_loopback_host(host)

    def _ping(self, host: str) -> Endpoint:
        if is_loopback_host(host):
            # Nothing crosses a network: try plain http first, which needs no TLS set-up. A
            # TLS-only registry answers it with 400, and https is tried next.
            schemes = ["http", "https"]
        elif host.lower() in self._insecure:
            schemes = ["https", "http"]
        else:
            schemes = ["https"]
        return self.tries(lambda _budget: self._ping_once(host, schemes))

    def _ping_once(self, host: str, schemes: list[str]) -> Endpoint:
        """GET /v2/ on each scheme in turn: the scheme and the challenge of the registry."""
        last: Exception | None = None
        for scheme in schemes:
            base = httpx.URL(f"{scheme}://{host}")
            client = self.client(base)
            request = client.build_request("GET", base.join("/v2/"),
                                           headers={"User-Agent": self.user_agent})  # fmt: skip
            try:
                resp = client.send(request, stream=True)  # the body is never read
            except NON_TRANSIENT_TRANSPORT as exc:
                raise RegistryError(f"cannot talk to registry {host}: {exc}") from None
            except TRANSIENT as exc:
                if is_certificate_error(exc):
                    # The server speaks TLS; the problem is trust. Never fall back to http.
                    raise RegistryError(
                        f"TLS certificate of registry {host} is not trusted ({exc}); put its "
                        f"CA in certs.d/{host}/ca.crt (see --certs-dir), or mark the "
                        "registry insecure"
                    ) from None
                last = exc
                continue
            try:
                if resp.status_code in RETRY_STATUSES:
                    raise Retry(RegistryUnavailableError(
                        f"registry {host} answered {resp.status_code}", status=resp.status_code
                    ), parse_retry_after(resp.headers.get("Retry-After")))  # fmt: skip
                if resp.status_code in (200, 401):
                    challenge = bearer_or_basic(resp.headers.get_list("WWW-Authenticate"))
                    return self._new_endpoint(host, base, challenge)
                if scheme != schemes[-1]:
                    last = RegistryError(f"{scheme}://{host}/v2/ answered {resp.status_code}")
                    continue
                raise error_from(resp, f"{host} is not an OCI registry (GET /v2/)", host)
            finally:
                resp.close()
        refused = "refused" in str(last).lower()
        error = RegistryUnavailableError(
            f"cannot reach registry {host}: {last}"
            + (f" (is a registry listening on {host}?)" if refused else ""),
            status=getattr(last, "status", None),
        )
        if refused and is_loopback_host(host):
            raise error  # nothing listens on this machine: waiting will not change that
        raise Retry(error)

    def _new_endpoint(self, host: str, base: httpx.URL, challenge: Challenge | None) -> Endpoint:
        endpoint = Endpoint(host, base, challenge)

        def challenged(new: Challenge, _scopes: list[str]) -> None:
            with endpoint.lock:
                endpoint.challenge = new
                endpoint.tokens.clear()

        endpoint.auth = RegistryAuth(
            base, lambda scopes: self.tokens.authorization(endpoint, scopes), challenged
        )
        return endpoint

    def client(self, url: httpx.URL) -> httpx.Client:
        """The HTTP client for the origin of `url` (one per host and scheme)."""
        host = url.netloc.decode("ascii").lower()
        tls = url.scheme == "https"
        key = (host, tls)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                # A plain-http client never verifies anything: spare it the CA store loading.
                verify: ssl.SSLContext | bool = False
                if tls and host not in self._insecure:
                    verify = self._tls.context_for(host)
                inner = self._transport or httpx.HTTPTransport(verify=verify, trust_env=False)
                client = httpx.Client(
                    transport=GuardedTransport(inner, self._idle, self._timing.clock),
                    timeout=self._timeout,
                    follow_redirects=False,
                    trust_env=False,
                )
                self._clients[key] = client
        return client

    # requests ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def send(self, request: Request, *, retries: bool = True) -> Iterator[httpx.Response]:
        """One logical request, its response open for the caller to stream. With `retries`
        False the request is tried once and what may pass is left to the caller's loop (a
        step of an upload, which starts again whole)."""

        def attempt(budget: Budget) -> httpx.Response:
            return self._attempt(budget, request)

        resp = self.tries(attempt) if retries else attempt(Budget(0, 0.0))
        try:
            yield resp
        finally:
            resp.close()

    def fetch(self, request: Request, read: Callable[[httpx.Response], T]) -> T:
        """A request whose body is read whole (at most `request.limit` bytes), inside the try
        that fetched it: a cut or stalled read is tried again like a failed request."""

        def attempt(budget: Budget) -> T:
            resp = self._attempt(budget, request)
            try:
                return read(resp)
            except TRANSIENT as exc:
                raise Retry(self.unavailable(request, exc, budget)) from None
            finally:
                resp.close()

        return self.tries(attempt)

    def tries(self, attempt: Callable[[Budget], T]) -> T:
        """The retry loop, the one place a failure that may pass is waited out: `attempt`
        raises `Retry`, and the operation's budget (shared by every loop of one operation)
        decides whether it runs again."""
        with operation(self.retry) as budget:
            while True:
                try:
                    return attempt(budget)
                except Retry as retry:
                    self.retry_or_raise(budget, retry.retry_after, retry.error)

    def retry_or_raise(
        self, budget: Budget, retry_after: float | None, error: BaseException
    ) -> None:
        def sleep(delay: float) -> None:
            if self.on_retry is not None:  # told before the wait, as buildx tells its retries
                self.on_retry(f"retrying ({budget.failures}/{self.retry.attempts - 1}) in "
                              f"{delay:.1f} s: {error}")  # fmt: skip
            self._timing.sleep(delay)

        retry_or_raise(budget, self.retry, retry_after, self._rng, sleep, lambda: error)

    def unavailable(self, request: Request, exc: Exception, budget: Budget) -> RegistryError:
        hint = (f" (is a registry listening on {request.endpoint.host}?)"
                if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower()
                else "")  # fmt: skip
        return RegistryUnavailableError(
            f"{request.what} failed after {budget.failures + 1} tries: "
            f"{exc.__class__.__name__}: {exc}{hint}",
            reference=str(request.ref),
        )

    def _attempt(self, budget: Budget, request: Request) -> httpx.Response:
        """One try of a request (auth, redirects): the open response when its status is one
        of `ok`; `Retry` for what may pass; the registry's error otherwise."""
        endpoint, ref = request.endpoint, request.ref
        scopes = list(request.scopes)
        for reauthenticated in (False, True):
            try:
                resp = self._send_following(request, scopes)
            except NON_TRANSIENT_TRANSPORT as exc:
                raise RegistryError(f"{request.what} failed: {exc}", reference=str(ref)) from None
            except TRANSIENT as exc:
                raise Retry(self.unavailable(request, exc, budget)) from None
            status = resp.status_code
            if (
                status == 401
                and not reauthenticated
                and request.body is not None
                and same_origin(resp.request.url, endpoint.base)
            ):
                # A streamed body the auth flow could not send twice: send it whole again,
                # with the token the flow has refreshed meanwhile.
                scopes = list(resp.request.extensions.get(SCOPES, scopes))
                resp.close()
                continue
            if status in request.ok:
                return resp
            try:
                error = error_from(resp, f"{request.what} failed", str(ref))
            finally:
                resp.close()
            if status in RETRY_STATUSES:
                raise Retry(error, parse_retry_after(resp.headers.get("Retry-After")))
            raise self.tokens.unauthorized(endpoint, error) if status == 401 else error
        raise AssertionError("unreachable: the second pass returns or raises")

    def _send_following(self, request: Request, scopes: Sequence[str]) -> httpx.Response:
        endpoint, method, url = request.endpoint, request.method, request.url
        extensions: dict[str, object] = {SCOPES: list(scopes)}
        if request.limit is not None:
            extensions[LIMIT] = request.limit
        for _hop in range(_MAX_REDIRECTS + 1):
            headers = {"User-Agent": self.user_agent, **(request.headers or {})}
            built = self.client(url).build_request(
                method, url, headers=headers, content=request.body() if request.body else None,
                extensions=extensions,
            )  # fmt: skip
            auth = endpoint.auth if same_origin(url, endpoint.base) else None
            resp = self.client(url).send(built, stream=True, auth=auth or httpx.USE_CLIENT_DEFAULT)
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location or method not in ("GET", "HEAD"):
                return resp
            resp.close()
            target = url.join(location)
            if (
                target.scheme == "http"
                and url.scheme == "https"
                and not self.plain_http_allowed(target.netloc.decode("ascii"))
            ):
                raise InsecureTransportError(
                    f"registry redirected {url.path} from https to plain http; refusing",
                    reference=endpoint.host,
                )
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"registry redirected to unsupported URL {target}")
            url = target
        raise RegistryError(f"too many redirects for {url.path}", reference=endpoint.host)
