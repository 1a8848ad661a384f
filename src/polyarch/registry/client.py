"""A client for the OCI distribution API, on httpx.

One `RegistryClient` serves any number of registries. For each host it first pings `/v2/` to
learn the scheme (https; plain http only for loopback or registries configured insecure) and the
authentication challenge, then attaches credentials only to requests whose origin is that
registry (redirects to blob storage go without them) or to the token realm the registry named.

The chain, one concern a layer (as go-containerregistry's `remote/transport`): the guarded
transport at the bottom bounds every body a server sends and fails a stalled transfer
(`transport.py`); above it the auth flow puts credentials on the registry's own requests
(`auth.py`); above that one retry loop (`_tries`) spends the operation's budget on every failure
that may pass (408, 429, 5xx, cut, refused or stalled connections), with exponential backoff and
jitter, honouring `Retry-After`, and a small body is read inside the try that fetched it. Every
byte read is checked against its digest and size; a cut blob download resumes with a `Range`
request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar

import httpx

from polyarch import __version__
from polyarch.digest import Check, Digest
from polyarch.errors import (
    AuthenticationError,
    InsecureTransportError,
    NotFoundError,
    PolyarchError,
    RegistryError,
    RegistryUnavailableError,
    VerificationError,
)
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Descriptor, Document, Index, parse_document
from polyarch.reference import Reference, is_loopback_host
from polyarch.registry.auth import (
    SCOPES,
    Challenge,
    RegistryAuth,
    bearer_or_basic,
    repository_scope,
    same_origin,
)
from polyarch.registry.credentials import ANONYMOUS, Credential, CredentialSource
from polyarch.registry.retry import (
    RETRY_STATUSES,
    Budget,
    RetryPolicy,
    operation,
    parse_retry_after,
    retry_or_raise,
)
from polyarch.registry.tls import TlsConfig
from polyarch.registry.transport import (
    DEFAULT_IDLE,
    ERROR_BODY_LIMIT,
    LIMIT,
    GuardedTransport,
    read_body,
)

CHUNK: Final = 1024 * 1024
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS: Final = 5
_MAX_TOKEN_BODY: Final = 1024 * 1024
_MAX_TAG_PAGE: Final = 8 * 1024 * 1024
_TRANSIENT: Final = (
    httpx.TransportError,  # connect/read/write errors, timeouts, protocol errors
)
_NON_TRANSIENT_TRANSPORT: Final = (httpx.UnsupportedProtocol,)

UploadResult = Literal["uploaded", "mounted", "exists"]
T = TypeVar("T")


class _Retry(Exception):
    """A try that failed in a way that may pass: tried again while the budget lasts."""

    def __init__(self, error: BaseException, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error, self.retry_after = error, retry_after


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    document: Document
    digest: Digest

    @property
    def media_type(self) -> str:
        return self.document.media_type

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.document.media_type, self.digest, len(self.document.raw))


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


@dataclass(slots=True)
class _Endpoint:
    host: str
    base: httpx.URL
    challenge: Challenge | None
    credential: Credential | None = None
    tokens: dict[frozenset[str], _Token] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    auth: RegistryAuth | None = None


class RegistryClient:
    """Talks to OCI registries. Thread-safe: blobs may be moved from several threads at once."""

    def __init__(
        self,
        *,
        credentials: CredentialSource | None = None,
        transport: httpx.BaseTransport | None = None,
        insecure: Iterable[str] = (),
        certs_dirs: Sequence[Path] = (),
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 120.0,
        idle_timeout: float = DEFAULT_IDLE,
        rng: random.Random | None = None,
    ) -> None:
        self._credentials = credentials
        self.on_retry: Callable[[str], None] | None = None  # told of each retry
        # Asked for a bearer token (host, scopes -> token and seconds it lasts, or None) for a
        # registry this client has no credentials of its own for: a builder's node, whose
        # client keeps the credentials and fetches the token (BuildKit's auth provider).
        self.token_provider: Callable[[str, list[str]], tuple[str, float] | None] | None = None
        self._transport = transport
        self._insecure = frozenset(h.lower() for h in insecure)
        self._tls = TlsConfig(tuple(certs_dirs))
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        # A read waits at most the idle time; the guarded transport fails a trickle too.
        self._idle = idle_timeout
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 30.0), read=idle_timeout)
        self._rng = rng or random.Random()  # noqa: S311 (backoff jitter, not cryptography)
        self._endpoints: dict[str, _Endpoint] = {}
        self._clients: dict[tuple[str, bool], httpx.Client] = {}
        self._pinging: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._user_agent = f"polyarch/{__version__}"

    # lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # manifests ---------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> FetchedDocument:
        """GET a manifest or index by tag or digest; its bytes are checked against the digest."""
        endpoint = self._endpoint(ref.api_host)
        url = self._url(endpoint, ref.repository, "manifests", ref.target)
        headers = {"Accept": ", ".join(mt.ACCEPT_DOCUMENTS)}

        def read(resp: httpx.Response) -> tuple[bytes, str | None, str | None]:
            raw = read_body(resp, MAX_DOCUMENT_SIZE, f"manifest {ref}")
            return raw, _content_type(resp), resp.headers.get("Docker-Content-Digest")

        raw, served_as, header_digest = self._fetch(
            endpoint, "GET", url, ref, _pull(ref.repository), read, headers=headers,
            what="get manifest", limit=MAX_DOCUMENT_SIZE,
        )  # fmt: skip
        algorithm = ref.digest.algorithm if ref.digest else "sha256"
        actual = Digest.of(raw, algorithm)
        if ref.digest is not None and actual != ref.digest:
            raise VerificationError(
                f"manifest {ref}", expected_digest=str(ref.digest), actual_digest=str(actual)
            )
        if ref.digest is None and header_digest:
            claimed = _parse_header_digest(header_digest, ref)
            if claimed.algorithm == "sha256" and claimed != actual:
                raise VerificationError(
                    f"manifest {ref} (registry's Docker-Content-Digest)",
                    expected_digest=str(claimed),
                    actual_digest=str(actual),
                )
        document = parse_document(raw, served_as, what=f"manifest {ref}")
        return FetchedDocument(document, actual)

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        """The descriptor of a manifest (None when it does not exist)."""
        endpoint = self._endpoint(ref.api_host)
        url = self._url(endpoint, ref.repository, "manifests", ref.target)
        headers = {"Accept": ", ".join(mt.ACCEPT_DOCUMENTS)}
        try:
            with self._send(
                endpoint,
                "HEAD",
                url,
                ref,
                _pull(ref.repository),
                headers=headers,
                what="check manifest",
            ) as resp:
                header_digest = resp.headers.get("Docker-Content-Digest")
                length = resp.headers.get("Content-Length")
                media_type = _content_type(resp)
        except NotFoundError:
            return None
        if not header_digest or not length or not length.isdigit() or not media_type:
            fetched = self.get_manifest(ref)
            return fetched.descriptor
        return Descriptor(media_type, _parse_header_digest(header_digest, ref), int(length))

    def put_manifest(self, ref: Reference, raw: bytes, media_type: str) -> Digest:
        """PUT a document under `ref` (its tag, or its digest when it has no tag)."""
        digest = Digest.of(raw)
        target = ref.tag if ref.tag is not None and ref.digest is None else str(digest)
        if ref.digest is not None and ref.digest != digest:
            raise VerificationError(
                f"manifest for {ref}", expected_digest=str(ref.digest), actual_digest=str(digest)
            )
        endpoint = self._endpoint(ref.api_host)
        url = self._url(endpoint, ref.repository, "manifests", target)
        with self._send(
            endpoint,
            "PUT",
            url,
            ref,
            _push(ref.repository),
            headers={"Content-Type": media_type},
            body=lambda: raw,
            ok=(200, 201),
            what="put manifest",
        ) as resp:
            header_digest = resp.headers.get("Docker-Content-Digest")
        if header_digest:
            claimed = _parse_header_digest(header_digest, ref)
            if claimed.algorithm == "sha256" and claimed != digest:
                raise VerificationError(
                    f"manifest pushed to {ref} (registry's Docker-Content-Digest)",
                    expected_digest=str(digest),
                    actual_digest=str(claimed),
                )
        return digest

    def referrers(self, ref: Reference, subject: Digest) -> Index | None:
        """The registry's referrers of `subject` (OCI 1.1 referrers API), or None when the
        registry has no such API (404: the referrers tag schema then holds them)."""
        endpoint = self._endpoint(ref.api_host)
        url = self._url(endpoint, ref.repository, "referrers", str(subject))
        try:
            raw = self._fetch(
                endpoint, "GET", url, ref, _pull(ref.repository),
                lambda resp: read_body(resp, MAX_DOCUMENT_SIZE, f"referrers of {subject}"),
                headers={"Accept": mt.OCI_INDEX}, what="list referrers",
                limit=MAX_DOCUMENT_SIZE,
            )  # fmt: skip
        except NotFoundError:
            return None
        document = parse_document(raw, mt.OCI_INDEX, what=f"referrers of {subject}")
        if not isinstance(document, Index):
            raise RegistryError(f"the referrers of {subject} are not an index", reference=str(ref))
        return document

    def list_tags(self, ref: Reference, page_size: int | None = None) -> list[str]:
        """All tags of the repository, following `Link: <...>; rel="next"` pages."""
        endpoint = self._endpoint(ref.api_host)
        url = self._url(endpoint, ref.repository, "tags", "list")
        if page_size:
            url = url.copy_merge_params({"n": str(page_size)})
        tags: list[str] = []
        seen: set[str] = set()
        next_url: httpx.URL | None = url
        while next_url is not None:
            if str(next_url) in seen:
                raise RegistryError("tag list pagination loops", reference=ref.name)
            seen.add(str(next_url))
            body, link = self._fetch(
                endpoint, "GET", next_url, ref, _pull(ref.repository),
                lambda resp: (read_body(resp, _MAX_TAG_PAGE, f"tag list of {ref.name}"),
                              resp.headers.get("Link")),
                what="list tags", limit=_MAX_TAG_PAGE,
            )  # fmt: skip
            try:
                page = json.loads(body)
                page_tags = page.get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError("tag list is not valid JSON", reference=ref.name) from None
            if not isinstance(page_tags, list) or not all(isinstance(t, str) for t in page_tags):
                raise RegistryError("tag list has a malformed 'tags' field", reference=ref.name)
            tags.extend(page_tags)
            next_url = _next_link(link, next_url)
            if next_url is not None and not same_origin(next_url, endpoint.base):
                raise RegistryError(
                    "tag list pagination points at another host", reference=ref.name
                )
        return tags

    # blobs -------------------------------------------------------------------------------

    def blob_size(self, ref: Reference, digest: Digest) -> int | None:
        """Size of a blob in the repository, or None when it is not there."""
        endpoint = self._endpoint(ref.api_host)
        url = self._url(endpoint, ref.repository, "blobs", str(digest))
        try:
            with self._send(
                endpoint, "HEAD", url, ref, _pull(ref.repository), what=f"check blob {digest}"
            ) as resp:
                length = resp.headers.get("Content-Length")
        except NotFoundError:
            return None
        return int(length) if length and length.isdigit() else -1

    def get_blob(self, ref: Reference, descriptor: Descriptor) -> Iterator[bytes]:
        """Stream a blob. Raises `VerificationError` before the last chunk if it is wrong.

        A connection cut mid-way is resumed from the last byte received with a Range request
        (a server that answers 200 instead of 206 is read again from the start, the bytes
        already seen skipped); the whole stream is hashed, whatever the number of pieces.
        """
        endpoint = self._endpoint(ref.api_host)
        url = self._url(endpoint, ref.repository, "blobs", str(descriptor.digest))
        what = f"blob {descriptor.digest}"
        check = Check(descriptor.digest, descriptor.size, what)
        with operation(self.retry) as budget:
            yield from self._blob_chunks(endpoint, url, ref, check, budget, what)

    def _blob_chunks(
        self,
        endpoint: _Endpoint,
        url: httpx.URL,
        ref: Reference,
        check: Check,
        budget: Budget,
        what: str,
    ) -> Iterator[bytes]:
        """The blob's bytes as received, the last chunk held back until `check` passes."""
        pending: bytes | None = None
        while True:
            offset = check.seen + (len(pending) if pending else 0)
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                with self._send(
                    endpoint,
                    "GET",
                    url,
                    ref,
                    _pull(ref.repository),
                    headers=headers,
                    ok=(200, 206),
                    what=f"get {what}",
                ) as resp:
                    skip = _resume_skip(resp, offset, ref, what)
                    for chunk in resp.iter_raw():  # as received: a cut loses nothing
                        if skip:
                            dropped = min(skip, len(chunk))
                            chunk = chunk[dropped:]  # noqa: PLW2901
                            skip -= dropped
                            if not chunk:
                                continue
                        if check.size is not None and offset + len(chunk) > check.size:
                            check.fail(offset + len(chunk))
                        offset += len(chunk)
                        if pending is not None:
                            check.update(pending)
                            yield pending
                        pending = chunk
                break
            except _TRANSIENT as exc:
                error = RegistryUnavailableError(
                    f"download of {what} kept failing ({exc.__class__.__name__}: {exc})",
                    reference=str(ref),
                )
                self._retry_or_raise(budget, None, error)
        if pending is not None:
            check.update(pending)
        check.verify()
        if pending is not None:
            yield pending

    def upload_bytes(self, ref: Reference, data: bytes) -> UploadResult:
        """A small blob held in memory (a signature payload, a statement), uploaded unless
        the repository has it."""
        descriptor = Descriptor("application/octet-stream", Digest.of(data), len(data))
        return self.upload_blob(ref, descriptor, lambda: iter([data]))

    def upload_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        open_body: Callable[[], Iterable[bytes]],
        *,
        mount_from: str | None = None,
        chunk_size: int | None = None,
        source_verifies: bool = False,
    ) -> UploadResult:
        """Upload a blob unless the repository has it; try a cross-repository mount first.

        `open_body` is called for each try and must give the blob's bytes from the start.
        Monolithic (POST then PUT) by default; chunked (POST, PATCH..., PUT) with `chunk_size`.
        A try that fails starts a fresh upload session. The body is checked against the
        descriptor on the way out (size always; digest too unless `source_verifies`: the
        producer then raises before its last chunk when the bytes are wrong, as every
        `ImageSource.open_blob` does, and hashing them twice would only cost CPU).
        """
        if self.blob_size(ref, descriptor.digest) is not None:
            return "exists"
        endpoint = self._endpoint(ref.api_host)
        scopes = [repository_scope(ref.repository, "pull,push")]
        if mount_from and mount_from != ref.repository:
            scopes.append(repository_scope(mount_from, "pull"))

        def attempt(_budget: Budget) -> UploadResult:
            try:
                return self._upload_once(
                    endpoint, ref, descriptor,
                    _checked_body(open_body, descriptor, hash_it=not source_verifies),
                    scopes, mount_from, chunk_size,
                )  # fmt: skip
            except _TRANSIENT as exc:  # mid-body: the upload starts again, whole
                raise _Retry(RegistryUnavailableError(
                    f"upload of blob {descriptor.digest} kept failing: {exc}", reference=str(ref)
                )) from None  # fmt: skip

        return self._tries(attempt)

    def _upload_once(
        self,
        endpoint: _Endpoint,
        ref: Reference,
        descriptor: Descriptor,
        body: Callable[[], Iterator[bytes]],
        scopes: list[str],
        mount_from: str | None,
        chunk_size: int | None,
    ) -> UploadResult:
        url = self._url(endpoint, ref.repository, "blobs", "uploads/")
        if mount_from and mount_from != ref.repository:
            url = url.copy_merge_params({"mount": str(descriptor.digest), "from": mount_from})
        what = f"upload blob {descriptor.digest}"
        with self._send(
            endpoint,
            "POST",
            url,
            ref,
            scopes,
            headers={"Content-Length": "0"},
            ok=(201, 202),
            what=what,
            retries=False,
        ) as resp:
            if resp.status_code == 201 and mount_from:
                return "mounted"
            location = _location(resp, ref, what)
        stream = body()
        if chunk_size is None:
            put_url = location.copy_merge_params({"digest": str(descriptor.digest)})
            with self._send(
                endpoint,
                "PUT",
                put_url,
                ref,
                scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(descriptor.size),
                },
                body=lambda: stream,
                ok=(201, 204),
                what=what,
                retries=False,
            ):
                pass
            return "uploaded"
        offset = 0
        for piece in _rechunk(stream, chunk_size):
            end = offset + len(piece) - 1
            with self._send(
                endpoint,
                "PATCH",
                location,
                ref,
                scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(piece)),
                    "Content-Range": f"{offset}-{end}",
                },
                body=_constant(piece),
                ok=(202, 204),
                what=what,
                retries=False,
            ) as resp:
                location = _location(resp, ref, what)
            offset = end + 1
        put_url = location.copy_merge_params({"digest": str(descriptor.digest)})
        with self._send(
            endpoint,
            "PUT",
            put_url,
            ref,
            scopes,
            headers={"Content-Length": "0"},
            ok=(201, 204),
            what=what,
            retries=False,
        ):
            pass
        return "uploaded"

    # endpoints and requests --------------------------------------------------------------

    def unreachable(self, host: str) -> str | None:
        """Why the registry at `host` cannot be reached from here, or None when it answers
        (with or without asking for credentials)."""
        try:
            self._endpoint(host)
        except RegistryError as exc:
            return str(exc)
        return None

    def _endpoint(self, host: str) -> _Endpoint:
        host = host.lower()
        with self._lock:
            found = self._endpoints.get(host)
            if found is not None:
                return found
            pinging = self._pinging.setdefault(host, threading.Lock())
        with pinging:  # parallel blob workers wait for one ping instead of each sending one
            with self._lock:
                found = self._endpoints.get(host)
            if found is not None:
                return found
            endpoint = self._ping(host)
            with self._lock:
                return self._endpoints.setdefault(host, endpoint)

    def _plain_http_allowed(self, host: str) -> bool:
        return host.lower() in self._insecure or is_loopback_host(host)

    def _ping(self, host: str) -> _Endpoint:
        if is_loopback_host(host):
            # Nothing crosses a network: try plain http first, which needs no TLS set-up. A
            # TLS-only registry answers it with 400, and https is tried next.
            schemes = ["http", "https"]
        elif host.lower() in self._insecure:
            schemes = ["https", "http"]
        else:
            schemes = ["https"]
        return self._tries(lambda _budget: self._ping_once(host, schemes))

    def _ping_once(self, host: str, schemes: list[str]) -> _Endpoint:
        """GET /v2/ on each scheme in turn: the scheme and the challenge of the registry."""
        last: Exception | None = None
        for scheme in schemes:
            base = httpx.URL(f"{scheme}://{host}")
            client = self._client(base)
            request = client.build_request("GET", base.join("/v2/"),
                                           headers={"User-Agent": self._user_agent})  # fmt: skip
            try:
                resp = client.send(request, stream=True)  # the body is never read
            except _NON_TRANSIENT_TRANSPORT as exc:
                raise RegistryError(f"cannot talk to registry {host}: {exc}") from None
            except _TRANSIENT as exc:
                if _is_certificate_error(exc):
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
                    raise _Retry(RegistryUnavailableError(
                        f"registry {host} answered {resp.status_code}", status=resp.status_code
                    ), parse_retry_after(resp.headers.get("Retry-After")))  # fmt: skip
                if resp.status_code in (200, 401):
                    challenge = bearer_or_basic(resp.headers.get_list("WWW-Authenticate"))
                    return self._new_endpoint(host, base, challenge)
                if scheme != schemes[-1]:
                    last = RegistryError(f"{scheme}://{host}/v2/ answered {resp.status_code}")
                    continue
                raise _error_from(resp, f"{host} is not an OCI registry (GET /v2/)", host)
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
        raise _Retry(error)

    def _new_endpoint(self, host: str, base: httpx.URL, challenge: Challenge | None) -> _Endpoint:
        endpoint = _Endpoint(host, base, challenge)

        def challenged(new: Challenge, _scopes: list[str]) -> None:
            with endpoint.lock:
                endpoint.challenge = new
                endpoint.tokens.clear()

        endpoint.auth = RegistryAuth(
            base, lambda scopes: self._authorization(endpoint, scopes), challenged
        )
        return endpoint

    def _retry_or_raise(
        self, budget: Budget, retry_after: float | None, error: BaseException
    ) -> None:
        def sleep(delay: float) -> None:
            if self.on_retry is not None:  # told before the wait, as buildx tells its retries
                self.on_retry(f"retrying ({budget.failures}/{self.retry.attempts - 1}) in "
                              f"{delay:.1f} s: {error}")  # fmt: skip
            self._sleep(delay)

        retry_or_raise(budget, self.retry, retry_after, self._rng, sleep, lambda: error)

    def _client(self, url: httpx.URL) -> httpx.Client:
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
                    transport=GuardedTransport(inner, self._idle, self._clock),
                    timeout=self._timeout,
                    follow_redirects=False,
                    trust_env=False,
                )
                self._clients[key] = client
        return client

    def _url(self, endpoint: _Endpoint, repository: str, kind: str, target: str) -> httpx.URL:
        return endpoint.base.join(f"/v2/{repository}/{kind}/{target}")

    @contextlib.contextmanager
    def _send(
        self,
        endpoint: _Endpoint,
        method: str,
        url: httpx.URL,
        ref: Reference | str,
        scopes: Sequence[str],
        *,
        headers: dict[str, str] | None = None,
        body: Callable[[], bytes | Iterable[bytes]] | None = None,
        ok: tuple[int, ...] = (200,),
        what: str,
        retries: bool = True,
    ) -> Iterator[httpx.Response]:
        """One logical request, its response open for the caller to stream. With `retries`
        False the request is tried once and what may pass is left to the caller's loop (a
        step of an upload, which starts again whole)."""

        def attempt(budget: Budget) -> httpx.Response:
            return self._attempt(budget, endpoint, method, url, ref, scopes, headers, body, ok,
                                 what, None)  # fmt: skip

        resp = self._tries(attempt) if retries else attempt(Budget(0, 0.0))
        try:
            yield resp
        finally:
            resp.close()

    def _fetch(
        self,
        endpoint: _Endpoint,
        method: str,
        url: httpx.URL,
        ref: Reference | str,
        scopes: Sequence[str],
        read: Callable[[httpx.Response], T],
        *,
        headers: dict[str, str] | None = None,
        what: str,
        limit: int,
    ) -> T:
        """A request whose body is read whole (at most `limit` bytes), inside the try that
        fetched it: a cut or stalled read is tried again like a failed request."""

        def attempt(budget: Budget) -> T:
            resp = self._attempt(budget, endpoint, method, url, ref, scopes, headers, None,
                                 (200,), what, limit)  # fmt: skip
            try:
                return read(resp)
            except _TRANSIENT as exc:
                raise _Retry(self._unavailable(what, exc, endpoint, ref, budget)) from None
            finally:
                resp.close()

        return self._tries(attempt)

    def _tries(self, attempt: Callable[[Budget], T]) -> T:
        """The retry loop, the one place a failure that may pass is waited out: `attempt`
        raises `_Retry`, and the operation's budget (shared by every loop of one operation)
        decides whether it runs again."""
        with operation(self.retry) as budget:
            while True:
                try:
                    return attempt(budget)
                except _Retry as retry:
                    self._retry_or_raise(budget, retry.retry_after, retry.error)

    def _unavailable(
        self, what: str, exc: Exception, endpoint: _Endpoint, ref: Reference | str,
        budget: Budget,
    ) -> RegistryError:  # fmt: skip
        hint = (f" (is a registry listening on {endpoint.host}?)"
                if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower()
                else "")  # fmt: skip
        return RegistryUnavailableError(
            f"{what} failed after {budget.failures + 1} tries: {exc.__class__.__name__}: "
            f"{exc}{hint}",
            reference=str(ref),
        )

    def _attempt(
        self,
        budget: Budget,
        endpoint: _Endpoint,
        method: str,
        url: httpx.URL,
        ref: Reference | str,
        scopes: Sequence[str],
        headers: dict[str, str] | None,
        body: Callable[[], bytes | Iterable[bytes]] | None,
        ok: tuple[int, ...],
        what: str,
        limit: int | None,
    ) -> httpx.Response:
        """One try of a request (auth, redirects): the open response when its status is one
        of `ok`; `_Retry` for what may pass; the registry's error otherwise."""
        scope_set = list(scopes)
        for reauthenticated in (False, True):
            try:
                resp = self._send_following(endpoint, method, url, scope_set, headers, body,
                                            limit)  # fmt: skip
            except _NON_TRANSIENT_TRANSPORT as exc:
                raise RegistryError(f"{what} failed: {exc}", reference=str(ref)) from None
            except _TRANSIENT as exc:
                raise _Retry(self._unavailable(what, exc, endpoint, ref, budget)) from None
            status = resp.status_code
            if (
                status == 401
                and not reauthenticated
                and body is not None
                and same_origin(resp.request.url, endpoint.base)
            ):
                # A streamed body the auth flow could not send twice: send it whole again,
                # with the token the flow has refreshed meanwhile.
                scope_set = list(resp.request.extensions.get(SCOPES, scope_set))
                resp.close()
                continue
            if status in ok:
                return resp
            try:
                error = _error_from(resp, f"{what} failed", str(ref))
            finally:
                resp.close()
            if status in RETRY_STATUSES:
                raise _Retry(error, parse_retry_after(resp.headers.get("Retry-After")))
            raise self._unauthorized(endpoint, error) if status == 401 else error
        raise AssertionError("unreachable: the second pass returns or raises")

    def _send_following(
        self,
        endpoint: _Endpoint,
        method: str,
        url: httpx.URL,
        scopes: Sequence[str],
        headers: dict[str, str] | None,
        body: Callable[[], bytes | Iterable[bytes]] | None,
        limit: int | None = None,
    ) -> httpx.Response:
        extensions: dict[str, object] = {SCOPES: list(scopes)}
        if limit is not None:
            extensions[LIMIT] = limit
        for _hop in range(_MAX_REDIRECTS + 1):
            request_headers = {"User-Agent": self._user_agent, **(headers or {})}
            request = self._client(url).build_request(
                method, url, headers=request_headers, content=body() if body else None,
                extensions=extensions,
            )  # fmt: skip
            auth = endpoint.auth if same_origin(url, endpoint.base) else None
            resp = self._client(url).send(
                request, stream=True, auth=auth or httpx.USE_CLIENT_DEFAULT
            )
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location or method not in ("GET", "HEAD"):
                return resp
            resp.close()
            target = url.join(location)
            if (
                target.scheme == "http"
                and url.scheme == "https"
                and not self._plain_http_allowed(target.netloc.decode("ascii"))
            ):
                raise InsecureTransportError(
                    f"registry redirected {url.path} from https to plain http; refusing",
                    reference=endpoint.host,
                )
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"registry redirected to unsupported URL {target}")
            url = target
        raise RegistryError(f"too many redirects for {url.path}", reference=endpoint.host)

    # authentication ----------------------------------------------------------------------

    def _unauthorized(self, endpoint: _Endpoint, error: RegistryError) -> RegistryError:
        """A 401 that stands: say whether credentials were sent and refused, or none found."""
        credential = self._credential(endpoint)
        base = error.message.split("; log in with", 1)[0]
        if credential.is_anonymous:
            text = (f"{base}; no credentials for {endpoint.host} were found: log in with "
                    "`docker login` (polyarch reads docker's config.json and credential "
                    "helpers) or pass --authfile")  # fmt: skip
        else:
            who = f" for user {credential.username!r}" if credential.username else ""
            text = (f"{base}; the registry rejected the credentials{who} from "
                    f"{credential.source or 'the credential store'}: log in again")  # fmt: skip
        return AuthenticationError(text, status=error.status, code=error.code,
                                   reference=error.reference, detail=error.detail)  # fmt: skip

    def _credential(self, endpoint: _Endpoint) -> Credential:
        if endpoint.credential is None:
            source = self._credentials
            endpoint.credential = source.get(endpoint.host) if source else ANONYMOUS
        return endpoint.credential

    def _authorization(self, endpoint: _Endpoint, scopes: Sequence[str]) -> str | None:
        with endpoint.lock:
            challenge = endpoint.challenge
            if challenge is None:
                return None
            credential = self._credential(endpoint)
            if challenge.scheme == "basic":
                if credential.username is not None and credential.password is not None:
                    pair = f"{credential.username}:{credential.password}".encode()
                    return "Basic " + base64.b64encode(pair).decode("ascii")
                return None
            if credential.registry_token:
                return f"Bearer {credential.registry_token}"
            key = frozenset(scopes)
            token = endpoint.tokens.get(key)
            if token is None or token.expires_at <= self._clock():
                token = self._provided_token(endpoint, credential, list(scopes))
                if token is None:
                    token = self._fetch_token(endpoint, challenge, credential, list(scopes))
                endpoint.tokens[key] = token
            return f"Bearer {token.value}"

    def _provided_token(
        self, endpoint: _Endpoint, credential: Credential, scopes: list[str]
    ) -> _Token | None:
        if self.token_provider is None or not credential.is_anonymous:
            return None
        given = self.token_provider(endpoint.host, scopes)
        if given is None:  # the provider has no credentials for it either: anonymous
            return None
        value, lasts = given
        return _Token(value, self._clock() + max(lasts - 10.0, 1.0))

    def pull_token(self, host: str, scopes: Sequence[str]) -> tuple[str, float] | None:
        """A bearer token for pulling from `host` (each repository scope narrowed to `pull`),
        fetched with this client's credentials from the token service that `host` itself
        names (never one the asker names), and how many seconds it lasts; None when the
        registry does not use tokens or there are no credentials for it here."""
        endpoint = self._endpoint(host)
        challenge = endpoint.challenge
        if challenge is None or challenge.scheme != "bearer":
            return None
        credential = self._credential(endpoint)
        if credential.is_anonymous:
            return None
        if credential.registry_token:  # docker's `registrytoken`: given as BuildKit gives it
            return credential.registry_token, 60.0
        pulls = sorted({repository_scope(scope.split(":")[1], "pull") for scope in scopes
                        if scope.startswith("repository:") and scope.count(":") >= 2})  # fmt: skip
        if not pulls:
            return None
        token = self._fetch_token(endpoint, challenge, credential, pulls)
        return token.value, max(token.expires_at - self._clock() + 10.0, 1.0)

    def _fetch_token(
        self, endpoint: _Endpoint, challenge: Challenge, credential: Credential, scopes: list[str]
    ) -> _Token:
        realm = challenge.realm
        if not realm:
            raise AuthenticationError(
                "registry sent a bearer challenge without a realm", reference=endpoint.host
            )
        realm_url = httpx.URL(realm)
        realm_host = realm_url.netloc.decode("ascii")
        if realm_url.scheme != "https" and not (
            realm_url.scheme == "http" and self._plain_http_allowed(realm_host)
        ):
            raise InsecureTransportError(
                f"token realm {realm_url.scheme}://{realm_host} is not https; refusing to ask "
                "it for a token (configure the registry as insecure if this is intended)",
                reference=endpoint.host,
            )
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        headers = {"User-Agent": self._user_agent}
        client = self._client(realm_url)

        def attempt(_budget: Budget) -> _Token:
            request = self._token_http_request(client, realm_url, challenge, credential, scopes,
                                               params, headers)  # fmt: skip
            try:
                resp = client.send(request, stream=True)
            except _TRANSIENT as exc:
                raise _Retry(RegistryUnavailableError(
                    f"cannot reach token service {realm_host}: {exc}", reference=endpoint.host
                )) from None  # fmt: skip
            try:
                if resp.status_code in RETRY_STATUSES:
                    raise _Retry(
                        _error_from(resp, f"token request to {realm_host} failed", endpoint.host),
                        parse_retry_after(resp.headers.get("Retry-After")),
                    )
                return self._token_from(resp, realm_host, credential, endpoint)
            except _TRANSIENT as exc:
                raise _Retry(RegistryUnavailableError(
                    f"token service {realm_host} stopped answering: {exc}", reference=endpoint.host
                )) from None  # fmt: skip
            finally:
                resp.close()

        return self._tries(attempt)

    def _token_http_request(
        self,
        client: httpx.Client,
        realm_url: httpx.URL,
        challenge: Challenge,
        credential: Credential,
        scopes: list[str],
        params: list[tuple[str, str]],
        headers: dict[str, str],
    ) -> httpx.Request:
        """The token request: an OAuth2 refresh with an identity token, else a GET with basic
        credentials (or none). Its answer is read at most `_MAX_TOKEN_BODY` bytes."""
        extensions = {LIMIT: _MAX_TOKEN_BODY}
        if credential.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credential.identity_token,
                "client_id": "polyarch",
                "scope": " ".join(scopes),
            }
            if challenge.service:
                form["service"] = challenge.service
            return client.build_request("POST", realm_url, data=form, headers=headers,
                                        extensions=extensions)  # fmt: skip
        query: list[tuple[str, str | int | float | bool | None]] = [
            *realm_url.params.multi_items(),
            *params,
            *(("scope", s) for s in scopes),
        ]
        auth_headers = dict(headers)
        if credential.username is not None and credential.password is not None:
            pair = f"{credential.username}:{credential.password}".encode()
            auth_headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return client.build_request(
            "GET", realm_url.copy_with(params=httpx.QueryParams(query)), headers=auth_headers,
            extensions=extensions,
        )  # fmt: skip

    def _token_from(
        self, resp: httpx.Response, realm_host: str, credential: Credential, endpoint: _Endpoint
    ) -> _Token:
        if resp.status_code in (401, 403):
            raise AuthenticationError(
                f"token service {realm_host} refused "
                + ("the credentials" if not credential.is_anonymous else "anonymous access")
                + f" for {endpoint.host}",
                status=resp.status_code,
                reference=endpoint.host,
            )
        if resp.status_code != 200:
            raise _error_from(resp, f"token request to {realm_host} failed", endpoint.host)
        try:
            data = json.loads(read_body(resp, _MAX_TOKEN_BODY, f"token from {realm_host}"))
            value = data.get("token") or data.get("access_token")
            expires_in = data.get("expires_in", 60)
        except (ValueError, AttributeError):
            raise AuthenticationError(
                f"token service {realm_host} answered with invalid JSON", reference=endpoint.host
            ) from None
        if not isinstance(value, str) or not value:
            raise AuthenticationError(
                f"token service {realm_host} gave no token", reference=endpoint.host
            )
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 60
        # Renew a little early so a token never expires between check and use.
        return _Token(value, self._clock() + max(float(expires_in) - 10.0, 1.0))


# helpers -----------------------------------------------------------------------------------


def _pull(repository: str) -> list[str]:
    return [repository_scope(repository, "pull")]


def _push(repository: str) -> list[str]:
    return [repository_scope(repository, "pull,push")]


def _is_certificate_error(exc: BaseException) -> bool:
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


def _content_type(resp: httpx.Response) -> str | None:
    value = resp.headers.get("Content-Type")
    return value.split(";", 1)[0].strip() if value else None


def _parse_header_digest(value: str, ref: Reference | str) -> Digest:
    try:
        return Digest.parse(value.strip())
    except PolyarchError:
        raise RegistryError(
            f"registry sent an invalid Docker-Content-Digest {value[:80]!r}", reference=str(ref)
        ) from None


def _location(resp: httpx.Response, ref: Reference, what: str) -> httpx.URL:
    location = resp.headers.get("Location")
    if not location:
        raise RegistryError(f"{what}: registry sent no upload Location", reference=str(ref))
    return resp.request.url.join(location)


def _resume_skip(resp: httpx.Response, offset: int, ref: Reference, what: str) -> int:
    """How many leading bytes of this response were already received."""
    if offset == 0:
        return 0
    if resp.status_code == 200:
        return offset  # the server ignored Range: read again from the start, skip what we have
    content_range = resp.headers.get("Content-Range", "")
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        raise RegistryError(
            f"{what}: bad Content-Range {content_range!r} on resume", reference=str(ref)
        ) from None
    if start != offset:
        raise RegistryError(
            f"{what}: asked to resume at byte {offset}, server sent from {start}",
            reference=str(ref),
        )
    return 0


def _next_link(header: str | None, current: httpx.URL) -> httpx.URL | None:
    if not header:
        return None
    for part in header.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                return current.join(part[start + 1 : end])
    return None


def _checked_body(
    open_body: Callable[[], Iterable[bytes]], descriptor: Descriptor, *, hash_it: bool
) -> Callable[[], Iterator[bytes]]:
    """The upload body, checked on the way out: never more than the size, and the right digest
    (unless the source checks it itself: `hash_it` False).

    The last chunk is held back until the whole stream is checked, so a wrong blob is never
    completed on the registry.
    """

    def stream() -> Iterator[bytes]:
        what = f"blob {descriptor.digest} (upload source)"
        check = Check(descriptor.digest, descriptor.size, what)
        size = 0
        pending: bytes | None = None
        for chunk in open_body():
            if not chunk:
                continue
            size += len(chunk)
            if size > descriptor.size:
                check.fail(size)
            if hash_it:
                check.update(chunk)
            if pending is not None:
                yield pending
            pending = chunk
        if hash_it:
            check.verify()
        elif size != descriptor.size:
            check.fail(size, str(descriptor.digest))
        if pending is not None:
            yield pending

    return stream


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer.extend(chunk)
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _error_from(resp: httpx.Response, message: str, reference: str) -> RegistryError:
    """A `RegistryError` with the status and the registry's own error code and message."""
    code = detail = None
    try:
        body = (read_body(resp, ERROR_BODY_LIMIT, message, truncate=True)
                if resp.request.method != "HEAD" else b"")  # fmt: skip
    except (httpx.HTTPError, RegistryError):
        body = b""
    registry_message = None
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
