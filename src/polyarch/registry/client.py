"""A client for the OCI distribution API, on httpx.

One `RegistryClient` serves any number of registries: manifests, tags, referrers and blobs, each
byte read checked against its digest and size (a cut blob download resumes with a `Range`
request; an upload's body is checked on its way out). How a request is sent (endpoints, retries,
redirects, credentials) is `connection.py`; tokens are `tokens.py`; an upload's try `upload.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from polyarch.digest import Check, Digest
from polyarch.errors import (
    NotFoundError,
    RegistryError,
    RegistryUnavailableError,
    VerificationError,
)
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Descriptor, Document, Index, parse_document
from polyarch.reference import Reference
from polyarch.registry.auth import repository_scope, same_origin
from polyarch.registry.connection import Connection
from polyarch.registry.credentials import CredentialSource
from polyarch.registry.endpoint import (
    TRANSIENT,
    Endpoint,
    Reach,
    Request,
    Retry,
    Timing,
    content_type,
    header_digest,
    pull,
    push,
)
from polyarch.registry.retry import Budget, RetryPolicy, operation
from polyarch.registry.tokens import TokenProvider
from polyarch.registry.transport import DEFAULT_IDLE, read_body
from polyarch.registry.upload import Upload, UploadResult, checked_body

CHUNK: Final = 1024 * 1024
_MAX_TAG_PAGE: Final = 8 * 1024 * 1024

__all__ = ["CHUNK", "FetchedDocument", "RegistryClient", "Timing", "UploadResult"]


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
        timeout: float = 120.0,
        idle_timeout: float = DEFAULT_IDLE,
        timing: Timing | None = None,
    ) -> None:
        self._conn = Connection(
            credentials=credentials, transport=transport, insecure=insecure,
            certs_dirs=certs_dirs, retry=retry or RetryPolicy(),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0), read=idle_timeout),
            idle_timeout=idle_timeout, timing=timing or Timing(),
        )  # fmt: skip

    @property
    def retry(self) -> RetryPolicy:
        return self._conn.retry

    @property
    def on_retry(self) -> Callable[[str], None] | None:
        """Told of each retry, before its wait."""
        return self._conn.on_retry

    @on_retry.setter
    def on_retry(self, told: Callable[[str], None] | None) -> None:
        self._conn.on_retry = told

    @property
    def token_provider(self) -> TokenProvider | None:
        """Asked for a bearer token (host, scopes -> token and seconds it lasts, or None) for a
        registry this client has no credentials of its own for: a builder's node, whose
        client keeps the credentials and fetches the token (BuildKit's auth provider)."""
        return self._conn.tokens.provider

    @token_provider.setter
    def token_provider(self, provider: TokenProvider | None) -> None:
        self._conn.tokens.provider = provider

    # lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # registries --------------------------------------------------------------------------

    def unreachable(self, host: str) -> str | None:
        """Why the registry at `host` cannot be reached from here, or None when it answers
        (with or without asking for credentials)."""
        try:
            self._conn.endpoint(host)
        except RegistryError as exc:
            return str(exc)
        return None

    def reach(self, host: str) -> Reach:
        """How the registry at `host` answers (raises when it cannot be reached)."""
        endpoint = self._conn.endpoint(host)
        auth = endpoint.challenge.scheme if endpoint.challenge else "none"
        credential = self._conn.tokens.credential(endpoint)
        return Reach(str(endpoint.base), auth, credential.is_anonymous)

    def pull_token(self, host: str, scopes: Sequence[str]) -> tuple[str, float] | None:
        """A bearer token for pulling from `host` (each repository scope narrowed to `pull`),
        fetched with this client's credentials from the token service that `host` itself
        names (never one the asker names), and how many seconds it lasts; None when the
        registry does not use tokens or there are no credentials for it here."""
        return self._conn.tokens.pull_token(self._conn.endpoint(host), scopes)

    # manifests ---------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> FetchedDocument:
        """GET a manifest or index by tag or digest; its bytes are checked against the digest."""
        endpoint = self._conn.endpoint(ref.api_host)

        def read(resp: httpx.Response) -> tuple[bytes, str | None, str | None]:
            raw = read_body(resp, MAX_DOCUMENT_SIZE, f"manifest {ref}")
            return raw, content_type(resp), resp.headers.get("Docker-Content-Digest")

        raw, served_as, claimed_digest = self._conn.fetch(
            Request(endpoint, "GET", endpoint.url(ref.repository, "manifests", ref.target), ref,
                    pull(ref.repository), "get manifest", limit=MAX_DOCUMENT_SIZE,
                    headers={"Accept": ", ".join(mt.ACCEPT_DOCUMENTS)}),
            read,
        )  # fmt: skip
        algorithm = ref.digest.algorithm if ref.digest else "sha256"
        actual = Digest.of(raw, algorithm)
        if ref.digest is not None and actual != ref.digest:
            raise VerificationError(
                f"manifest {ref}", expected_digest=str(ref.digest), actual_digest=str(actual)
            )
        if ref.digest is None and claimed_digest:
            claimed = header_digest(claimed_digest, ref)
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
        endpoint = self._conn.endpoint(ref.api_host)
        request = Request(
            endpoint, "HEAD", endpoint.url(ref.repository, "manifests", ref.target), ref,
            pull(ref.repository), "check manifest",
            headers={"Accept": ", ".join(mt.ACCEPT_DOCUMENTS)},
        )  # fmt: skip
        try:
            with self._conn.send(request) as resp:
                claimed = resp.headers.get("Docker-Content-Digest")
                length = resp.headers.get("Content-Length")
                media_type = content_type(resp)
        except NotFoundError:
            return None
        if not claimed or not length or not length.isdigit() or not media_type:
            return self.get_manifest(ref).descriptor
        return Descriptor(media_type, header_digest(claimed, ref), int(length))

    def put_manifest(self, ref: Reference, raw: bytes, media_type: str) -> Digest:
        """PUT a document under `ref` (its tag, or its digest when it has no tag)."""
        digest = Digest.of(raw)
        target = ref.tag if ref.tag is not None and ref.digest is None else str(digest)
        if ref.digest is not None and ref.digest != digest:
            raise VerificationError(
                f"manifest for {ref}", expected_digest=str(ref.digest), actual_digest=str(digest)
            )
        endpoint = self._conn.endpoint(ref.api_host)
        request = Request(
            endpoint, "PUT", endpoint.url(ref.repository, "manifests", target), ref,
            push(ref.repository), "put manifest", headers={"Content-Type": media_type},
            body=lambda: raw, ok=(200, 201),
        )  # fmt: skip
        with self._conn.send(request) as resp:
            claimed_digest = resp.headers.get("Docker-Content-Digest")
        if claimed_digest:
            claimed = header_digest(claimed_digest, ref)
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
        endpoint = self._conn.endpoint(ref.api_host)
        request = Request(
            endpoint, "GET", endpoint.url(ref.repository, "referrers", str(subject)), ref,
            pull(ref.repository), "list referrers", headers={"Accept": mt.OCI_INDEX},
            limit=MAX_DOCUMENT_SIZE,
        )  # fmt: skip
        try:
            raw = self._conn.fetch(
                request, lambda resp: read_body(resp, MAX_DOCUMENT_SIZE, f"referrers of {subject}")
            )
        except NotFoundError:
            return None
        document = parse_document(raw, mt.OCI_INDEX, what=f"referrers of {subject}")
        if not isinstance(document, Index):
            raise RegistryError(f"the referrers of {subject} are not an index", reference=str(ref))
        return document

    def list_tags(self, ref: Reference, page_size: int | None = None) -> list[str]:
        """All tags of the repository, following `Link: <...>; rel="next"` pages."""
        endpoint = self._conn.endpoint(ref.api_host)
        url = endpoint.url(ref.repository, "tags", "list")
        if page_size:
            url = url.copy_merge_params({"n": str(page_size)})
        tags: list[str] = []
        seen: set[str] = set()
        next_url: httpx.URL | None = url
        while next_url is not None:
            if str(next_url) in seen:
                raise RegistryError("tag list pagination loops", reference=ref.name)
            seen.add(str(next_url))
            body, link = self._conn.fetch(
                Request(endpoint, "GET", next_url, ref, pull(ref.repository), "list tags",
                        limit=_MAX_TAG_PAGE),
                lambda resp: (read_body(resp, _MAX_TAG_PAGE, f"tag list of {ref.name}"),
                              resp.headers.get("Link")),
            )  # fmt: skip
            tags.extend(_tag_page(body, ref))
            next_url = _next_link(link, next_url)
            if next_url is not None and not same_origin(next_url, endpoint.base):
                raise RegistryError(
                    "tag list pagination points at another host", reference=ref.name
                )
        return tags

    # blobs -------------------------------------------------------------------------------

    def blob_size(self, ref: Reference, digest: Digest) -> int | None:
        """Size of a blob in the repository, or None when it is not there."""
        endpoint = self._conn.endpoint(ref.api_host)
        request = Request(endpoint, "HEAD", endpoint.url(ref.repository, "blobs", str(digest)),
                          ref, pull(ref.repository), f"check blob {digest}")  # fmt: skip
        try:
            with self._conn.send(request) as resp:
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
        endpoint = self._conn.endpoint(ref.api_host)
        what = f"blob {descriptor.digest}"
        check = Check(descriptor.digest, descriptor.size, what)
        with operation(self._conn.retry) as budget:
            yield from self._blob_chunks(endpoint, ref, check, budget, what)

    def _blob_chunks(
        self, endpoint: Endpoint, ref: Reference, check: Check, budget: Budget, what: str
    ) -> Iterator[bytes]:
        """The blob's bytes as received, the last chunk held back until `check` passes."""
        url = endpoint.url(ref.repository, "blobs", str(check.digest))
        pending: bytes | None = None
        while True:
            offset = check.seen + (len(pending) if pending else 0)
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            request = Request(endpoint, "GET", url, ref, pull(ref.repository), f"get {what}",
                              headers=headers, ok=(200, 206))  # fmt: skip
            try:
                with self._conn.send(request) as resp:
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
            except TRANSIENT as exc:
                error = RegistryUnavailableError(
                    f"download of {what} kept failing ({exc.__class__.__name__}: {exc})",
                    reference=str(ref),
                )
                self._conn.retry_or_raise(budget, None, error)
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
        scopes = [repository_scope(ref.repository, "pull,push")]
        if mount_from and mount_from != ref.repository:
            scopes.append(repository_scope(mount_from, "pull"))
        upload = Upload(self._conn, self._conn.endpoint(ref.api_host), ref, descriptor, scopes,
                        mount_from, chunk_size)  # fmt: skip
        body = checked_body(open_body, descriptor, hash_it=not source_verifies)

        def attempt(_budget: Budget) -> UploadResult:
            try:
                return upload.once(body)
            except TRANSIENT as exc:  # mid-body: the upload starts again, whole
                raise Retry(RegistryUnavailableError(
                    f"upload of blob {descriptor.digest} kept failing: {exc}", reference=str(ref)
                )) from None  # fmt: skip

        return self._conn.tries(attempt)


# helpers -----------------------------------------------------------------------------------


def _tag_page(body: bytes, ref: Reference) -> list[str]:
    try:
        page = json.loads(body)
        page_tags = page.get("tags") or []
    except (ValueError, AttributeError):
        raise RegistryError("tag list is not valid JSON", reference=ref.name) from None
    if not isinstance(page_tags, list) or not all(isinstance(t, str) for t in page_tags):
        raise RegistryError("tag list has a malformed 'tags' field", reference=ref.name)
    return page_tags


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
