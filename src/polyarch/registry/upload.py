"""One try of a blob upload: a cross-repository mount, or a session (POST, then one PUT, or
PATCHes of `chunk_size` and a closing PUT). The body is checked on its way out.

A try that fails is not resumed: the client starts a fresh session with the body from its start
(`RegistryClient.upload_blob` owns the retries).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import httpx

from polyarch.digest import Check
from polyarch.errors import RegistryError
from polyarch.oci.models import Descriptor
from polyarch.reference import Reference
from polyarch.registry.connection import Connection
from polyarch.registry.endpoint import Endpoint, Request

UploadResult = Literal["uploaded", "mounted", "exists"]


@dataclass(frozen=True, slots=True)
class Upload:
    conn: Connection
    endpoint: Endpoint
    ref: Reference
    descriptor: Descriptor
    scopes: list[str]
    mount_from: str | None = None
    chunk_size: int | None = None

    @property
    def what(self) -> str:
        return f"upload blob {self.descriptor.digest}"

    def once(self, body: Callable[[], Iterator[bytes]]) -> UploadResult:
        location = self._start()
        if location is None:
            return "mounted"
        stream = body()
        if self.chunk_size is None:
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(self.descriptor.size),
            }
            self._put(location, headers, lambda: stream)
            return "uploaded"
        offset = 0
        for piece in _rechunk(stream, self.chunk_size):
            end = offset + len(piece) - 1
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(piece)),
                "Content-Range": f"{offset}-{end}",
            }
            with self._send("PATCH", location, headers, _constant(piece), (202, 204)) as resp:
                location = self._location(resp)
            offset = end + 1
        self._put(location, {"Content-Length": "0"}, None)
        return "uploaded"

    def _start(self) -> httpx.URL | None:
        """The session's location, or None when the registry mounted the blob instead."""
        url = self.endpoint.url(self.ref.repository, "blobs", "uploads/")
        mount = self.mount_from and self.mount_from != self.ref.repository
        if mount:
            url = url.copy_merge_params(
                {"mount": str(self.descriptor.digest), "from": str(self.mount_from)}
            )
        with self._send("POST", url, {"Content-Length": "0"}, None, (201, 202)) as resp:
            if resp.status_code == 201 and self.mount_from:
                return None
            return self._location(resp)

    def _put(
        self,
        location: httpx.URL,
        headers: dict[str, str],
        body: Callable[[], bytes | Iterable[bytes]] | None,
    ) -> None:
        url = location.copy_merge_params({"digest": str(self.descriptor.digest)})
        with self._send("PUT", url, headers, body, (201, 204)):
            pass

    def _send(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        body: Callable[[], bytes | Iterable[bytes]] | None,
        ok: tuple[int, ...],
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        request = Request(self.endpoint, method, url, self.ref, self.scopes, self.what,
                          headers=headers, body=body, ok=ok)  # fmt: skip
        return self.conn.send(request, retries=False)

    def _location(self, resp: httpx.Response) -> httpx.URL:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(
                f"{self.what}: registry sent no upload Location", reference=str(self.ref)
            )
        return resp.request.url.join(location)


def checked_body(
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
