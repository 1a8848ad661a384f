"""The node protocol's framing (pure apart from the streams it is handed): each message is one
line of JSON; a message with `"size": N` is followed by N raw bytes (a file or a blob).

Version 6. 5 sent the context before a build (the files its plan foresaw, all of it when
the node's build read more) and had no `context-ask` session call; 4 sent no provenance facts
in a build's result (its materials, the secrets' and agents' ids its steps mount); 3 had no
SSH agent channels and no `session-end` (a build's session calls are in `nodes/session.py`),
and no cache entries in a build's result; 2 had no secrets (a node asks the client for a
secret's value, `secret` with its id, when a step mounts it), no named contexts and local
caches sent as `layout` of kind `named` and `cache`, and no typed `kind` on errors; 1 had no
build-once stages sent, no partial contexts and no pushing from nodes. The client speaks
first (`hello` with its version); a node of another version answers with its own and stops,
and the client says which two differ."""

from __future__ import annotations

import json
from typing import Any, BinaryIO, Protocol

from polyarch.errors import PolyarchError

PROTOCOL_VERSION = 6
MAX_LINE = 64 << 20  # a message line a node reads (a context listing of many files fits)
MAX_ANSWER = 8 << 20  # a message line the client reads from a node (digests it needs, results)
CHUNK = 1 << 20
MAX_SECRET = 1 << 20  # a secret's value (BuildKit takes up to 500 KiB)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


class NodeError(PolyarchError):
    """A node that cannot be reached, speaks another version, or stopped answering."""


def send(stream: BinaryIO, message: dict[str, Any], payload: bytes | None = None) -> None:
    if payload is not None:
        message = {**message, "size": len(payload)}
    stream.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    if payload is not None:
        stream.write(payload)
    stream.flush()


def send_file(stream: BinaryIO, message: dict[str, Any], source: Readable, size: int) -> None:
    stream.write(json.dumps({**message, "size": size}, separators=(",", ":")).encode() + b"\n")
    left = size
    while left:
        chunk = source.read(min(CHUNK, left))
        if not chunk:
            raise NodeError(f"{message.get('digest', 'a file')} ended {left} bytes early")
        stream.write(chunk)
        left -= len(chunk)
    stream.flush()


def receive(stream: BinaryIO, what: str = "the node", limit: int = MAX_LINE) -> dict[str, Any]:
    line = stream.readline(limit)
    if not line:
        raise NodeError(f"{what} closed the connection")
    if not line.endswith(b"\n"):
        raise NodeError(f"{what} sent a message over {limit} bytes")
    try:
        message = json.loads(line)
    except ValueError:
        text = line.decode("utf-8", "replace").strip()[:200]
        raise NodeError(f"{what} sent something that is not the protocol: {text!r}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise NodeError(f"{what} sent a message without an op")
    return message


def payload_chunks(stream: BinaryIO, size: int, what: str = "the node") -> Any:
    """The `size` bytes after a message, in chunks."""
    left = size
    while left:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            raise NodeError(f"{what} closed the connection {left} bytes before the end of a blob")
        left -= len(chunk)
        yield chunk
