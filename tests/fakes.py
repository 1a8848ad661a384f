"""An in-memory OCI registry behind httpx.MockTransport, for unit tests and fault injection.

It follows the distribution spec closely enough to exercise the client: ping and challenges
(none, basic, bearer with scopes and a token service on another host), manifests, blobs with
Range, uploads (monolithic, chunked, cross-repository mount), tag pagination, and redirects of
blob reads to a storage host. `faults` lets a test replace the answer to chosen requests.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

Fault = Callable[[httpx.Request], httpx.Response | None]


class Stream(httpx.SyncByteStream):
    """A body that is really streamed (a plain `content=` arrives already read)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 65536):
            yield self.data[i : i + 65536]


class CutStream(httpx.SyncByteStream):
    """Sends the first `cut_at` bytes, then fails as a reset connection would."""

    def __init__(self, data: bytes, cut_at: int) -> None:
        self.data = data
        self.cut_at = cut_at

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.cut_at]
        raise httpx.ReadError("connection reset by peer")


@dataclass
class FakeRegistry:
    host: str = "reg.test"
    auth: str | None = None  # None, "basic" or "bearer"
    users: dict[str, str] = field(default_factory=lambda: {"alice": "s3cret"})
    realm: str = "https://auth.test/token"
    storage_redirect: bool = False
    honour_range: bool = True
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    repos_with_blob: dict[str, set[str]] = field(default_factory=dict)
    log: list[httpx.Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    tokens_issued: list[tuple[str | None, tuple[str, ...]]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    # wiring ------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        for fault in list(self.faults):
            answer = fault(request)
            if answer is not None:
                return answer
        host = request.url.netloc.decode()
        if host == "auth.test":
            return self._token(request)
        if host == "storage.test":
            digest = request.url.params.get("d", "")
            return self._blob_body(request, digest)
        if host != self.host:
            return httpx.Response(502, text=f"unknown host {host}")
        return self._registry(request)

    # content helpers ---------------------------------------------------------------------

    def add_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        self.repos_with_blob.setdefault(digest, set()).add(repo)
        return digest

    def add_manifest(self, repo: str, raw: bytes, media_type: str, tag: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.manifests[(repo, digest)] = (raw, media_type)
        if tag:
            self.tags.setdefault(repo, {})[tag] = digest
        return digest

    def tagged(self, repo: str, tag: str) -> bytes | None:
        digest = self.tags.get(repo, {}).get(tag)
        return None if digest is None else self.manifests[(repo, digest)][0]

    # auth --------------------------------------------------------------------------------

    def _token(self, request: httpx.Request) -> httpx.Response:
        user = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                return httpx.Response(401, json={"details": "bad credentials"})
            user = name
        scopes = tuple(request.url.params.get_list("scope"))
        self.tokens_issued.append((user, scopes))
        token = base64.urlsafe_b64encode(json.dumps([user, scopes]).encode()).decode()
        return httpx.Response(200, json={"token": token, "expires_in": 300})

    def _challenge(self, scope: str | None) -> httpx.Response:
        if self.auth == "basic":
            value = 'Basic realm="fake"'
        else:
            value = f'Bearer realm="{self.realm}",service="{self.host}"'
            if scope:
                value += f',scope="{scope}"'
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": value},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        )

    def _authorized(self, request: httpx.Request, scope: str | None) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth is None:
            return True
        if self.auth == "basic":
            if not header.startswith("Basic "):
                return False
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return self.users.get(name) == password
        if not header.startswith("Bearer "):
            return False
        user, scopes = json.loads(base64.urlsafe_b64decode(header[7:]))
        if scope is None:
            return True
        repo, actions = scope.split(":")[1], scope.split(":")[2].split(",")
        granted: set[str] = set()
        for s in scopes:
            _, name, acts = s.split(":")
            if name == repo:
                granted.update(acts.split(","))
        if "push" in actions and user is None:
            return False
        return all(a in granted for a in actions)

    # registry API ------------------------------------------------------------------------

    def _registry(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/":
            if not self._authorized(request, None):
                return self._challenge(None)
            return httpx.Response(200, json={})
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs|tags)/(.+)", path)
        if not match:
            return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})
        repo, kind, rest = match.groups()
        write = request.method in ("PUT", "POST", "PATCH", "DELETE")
        scope = f"repository:{repo}:{'pull,push' if write else 'pull'}"
        if not self._authorized(request, scope):
            return self._challenge(scope)
        if kind == "manifests":
            return self._manifest(request, repo, rest)
        if kind == "tags":
            return self._tags(request, repo)
        if rest.startswith("uploads"):
            return self._upload(request, repo, rest)
        return self._blob(request, repo, rest)

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            raw = request.read()
            media_type = request.headers["Content-Type"]
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            if ref.startswith("sha256:") and ref != digest:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.manifests[(repo, digest)] = (raw, media_type)
            if not ref.startswith("sha256:"):
                self.tags.setdefault(repo, {})[ref] = digest
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        digest = ref if ref.startswith("sha256:") else self.tags.get(repo, {}).get(ref)
        found = self.manifests.get((repo, digest or ""))
        if found is None:
            return httpx.Response(
                404,
                json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
            )
        raw, media_type = found
        headers = {
            "Content-Type": media_type,
            "Docker-Content-Digest": digest or "",
            "Content-Length": str(len(raw)),
        }
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, headers=headers, content=raw)

    def _blob(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        if digest not in self.blobs or repo not in self.repos_with_blob.get(digest, set()):
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(self.blobs[digest]))})
        if self.storage_redirect:
            return httpx.Response(
                307, headers={"Location": f"https://storage.test/blob?d={digest}"}
            )
        return self._blob_body(request, digest)

    def _blob_body(self, request: httpx.Request, digest: str) -> httpx.Response:
        data = self.blobs[digest]
        range_header = request.headers.get("Range")
        if range_header and self.honour_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            return httpx.Response(
                206,
                headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                stream=Stream(data[start:]),
            )
        return httpx.Response(200, stream=Stream(data))

    def _upload(self, request: httpx.Request, repo: str, rest: str) -> httpx.Response:
        if request.method == "POST":
            mount = request.url.params.get("mount")
            source = request.url.params.get("from")
            if mount and source and source in self.repos_with_blob.get(mount, set()):
                self.repos_with_blob[mount].add(repo)
                return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{mount}"})
            upload_id = str(next(self._ids))
            self.uploads[upload_id] = bytearray()
            return httpx.Response(
                202, headers={"Location": f"/v2/{repo}/blobs/uploads/{upload_id}?_state=s"}
            )
        upload_id = rest.split("/", 1)[1]
        if upload_id not in self.uploads:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})
        buffer = self.uploads[upload_id]
        body = request.read()
        if request.method == "PATCH":
            start, end = (int(x) for x in request.headers["Content-Range"].split("-"))
            if start != len(buffer) or end - start + 1 != len(body):
                return httpx.Response(416)
            buffer.extend(body)
            return httpx.Response(
                202,
                headers={
                    "Location": f"/v2/{repo}/blobs/uploads/{upload_id}?_state=s{len(buffer)}",
                    "Range": f"0-{len(buffer) - 1}",
                },
            )
        buffer.extend(body)
        digest = request.url.params["digest"]
        if "sha256:" + hashlib.sha256(buffer).hexdigest() != digest:
            return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
        del self.uploads[upload_id]
        self.add_blob(repo, bytes(buffer))
        return httpx.Response(201, headers={"Docker-Content-Digest": digest})

    def _tags(self, request: httpx.Request, repo: str) -> httpx.Response:
        names = sorted(self.tags.get(repo, {}))
        n = request.url.params.get("n")
        last = request.url.params.get("last")
        if last:
            names = [t for t in names if t > last]
        headers = {}
        if n and len(names) > int(n):
            names = names[: int(n)]
            headers["Link"] = f'</v2/{repo}/tags/list?n={n}&last={names[-1]}>; rel="next"'
        return httpx.Response(200, headers=headers, json={"name": repo, "tags": names})


def nth_request(match: Callable[[httpx.Request], bool], answers: list[httpx.Response]) -> Fault:
    """A fault that answers the first len(answers) matching requests with `answers`."""
    remaining = list(answers)

    def fault(request: httpx.Request) -> httpx.Response | None:
        if remaining and match(request):
            return remaining.pop(0)
        return None

    return fault
