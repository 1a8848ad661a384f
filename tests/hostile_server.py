"""A registry (and token service) written for the tests that send what a hostile or broken
server sends: huge bodies (generated, never held in memory here), a body that stops half way,
one that trickles a byte at a time. Plain HTTP on 127.0.0.1; each route is a function of the
request and how many times that path was asked for."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Iterator[bytes] | bytes = b""
    length: int | None = None  # Content-Length when the body is an iterator
    pause: float = 0.0  # between chunks of an iterator body


Route = Callable[["Handler", int], Reply]


def huge(size: int = GiB, byte: bytes = b"x") -> Iterator[bytes]:
    block = byte * MiB
    left = size
    while left:
        n = min(left, MiB)
        yield block[:n]
        left -= n


def trickle(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def gzip_bomb(size: int = GiB) -> bytes:
    """A gzip stream of `size` zero bytes (about 1 MiB per GiB), made once per size."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * MiB
    parts = [compressor.compress(zeros) for _ in range(size // MiB)]
    parts.append(compressor.flush())
    return b"".join(parts)


def error_json(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    server: HostileRegistry  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def body(self, pause: float = 0.0, piece: int = 64 * 1024) -> bytes:
        """The request's body (Content-Length), read `piece` bytes at a time with `pause`."""
        left = int(self.headers.get("Content-Length") or 0)
        data = bytearray()
        while left:
            chunk = self.rfile.read(min(piece, left))
            if not chunk:
                break
            data += chunk
            left -= len(chunk)
            if pause:
                time.sleep(pause)
        return bytes(data)

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        route, count = self.server.route_for(self.command, path)
        reply = route(self, count) if route else Reply(404, body=error_json("NOT_FOUND", path))
        self.send_response(reply.status)
        body = reply.body
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
        elif reply.length is not None:
            self.send_header("Content-Length", str(reply.length))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if isinstance(body, bytes):
                self.wfile.write(body)
                return
            for chunk in body:
                self.wfile.write(chunk)
                self.wfile.flush()
                if reply.pause:
                    time.sleep(reply.pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should
        if not isinstance(body, bytes) and reply.length is None:
            self.close_connection = True


class HostileRegistry(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: list[tuple[str, re.Pattern[str], Route]] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.route("GET", r"/v2/", lambda _h, _n: Reply(200, body=b"{}"))
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def route(self, method: str, pattern: str, reply: Route) -> None:
        """Answer `method` on paths matching `pattern` (later routes first)."""
        self.routes.insert(0, (method, re.compile(pattern + r"\Z"), reply))

    def route_for(self, method: str, path: str) -> tuple[Route | None, int]:
        for wanted, pattern, reply in self.routes:
            also = "GET" if method == "HEAD" else ""
            if wanted in (method, also) and pattern.match(path):
                with self.lock:
                    self.counts[path] = self.counts.get(path, 0) + 1
                    return reply, self.counts[path]
        return None, 0

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


__all__ = [
    "GiB",
    "HostileRegistry",
    "MiB",
    "Reply",
    "digest",
    "error_json",
    "gzip",
    "gzip_bomb",
    "huge",
    "trickle",
]


MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def one_layer_image(server: HostileRegistry, name: str, content: bytes, *, level: int = 9,
                    env: tuple[str, ...] = ()) -> dict[str, bytes]:  # fmt: skip
    """An image under a/b (any tag) whose one layer holds the file `name` with `content`:
    the manifest and config are served; the layer's route is the caller's (`layer` in the
    result; how it is sent is what a test is about)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(buf.getvalue(), compresslevel=level, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": list(env)},
                         "rootfs": {"type": "layers", "diff_ids": [digest(buf.getvalue())]}}
                        ).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(layer), "size": len(layer)}],
    }).encode()  # fmt: skip
    server.route("GET", r"/v2/a/b/manifests/.*",
                 lambda _h, _n: Reply(200, {"Content-Type": MANIFEST}, manifest))  # fmt: skip
    server.route("GET", rf"/v2/a/b/blobs/{digest(config)}", lambda _h, _n: Reply(200, body=config))
    return {"manifest": manifest, "config": config, "layer": layer}
