"""The client side of a node: start `polyarch worker` there (over the user's own OpenSSH, its
configuration, keys and agent as they are; or as a local process for a `local` node), check
versions, send the Dockerfile, named contexts and layouts by content (only files the node
lacks), ask for one platform's build, answer its session calls (the context's files as its
steps read them, secrets, agents, tokens), stream its progress back, and bring the result
home as verified blobs."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from polyarch.digest import Digest
from polyarch.errors import BuildError
from polyarch.nodes.builders import Endpoint, Node
from polyarch.nodes.protocol import (
    MAX_ANSWER,
    PROTOCOL_VERSION,
    NodeError,
    payload_chunks,
    receive,
    send,
    send_file,
)
from polyarch.nodes.session import ClientCalls, ClientSession
from polyarch.nodes.trees import context_entries
from polyarch.nodes.wire import (
    BYE,
    BlobHead,
    BuildAsk,
    BuildDone,
    Entry,
    Failure,
    Get,
    Hello,
    HelloAnswer,
    Need,
    Reach,
    Tree,
    TreeKind,
    Unreachable,
    Warmed,
    event_from_json,
    expect_op,
)
from polyarch.oci.models import Descriptor, Manifest, parse_document
from polyarch.progress import Progress
from polyarch.store.layout import OciLayout

MAX_MANIFEST = 4 << 20
SSH_ENV = "POLYARCH_SSH_COMMAND"  # like GIT_SSH_COMMAND: the ssh to use, with its options


@dataclass(frozen=True, slots=True)
class NodeInfo:
    version: str
    native: tuple[str, ...]
    emulated: tuple[str, ...]
    free: int
    runtime: str = ""


def command_for(node: Node) -> list[str]:
    remote = f"{node.command} worker"
    endpoint = Endpoint.parse(node.endpoint)
    if endpoint.kind == "local":
        return ["/bin/sh", "-c", remote]
    ssh = shlex.split(os.environ.get(SSH_ENV) or "ssh")
    # No prompts; give up on a host that does not answer; notice a connection that died.
    ssh += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4", "-T"]  # fmt: skip
    if endpoint.port:
        ssh += ["-p", str(endpoint.port)]
    if endpoint.user:
        ssh += ["-l", endpoint.user]
    return [*ssh, endpoint.host, "--", remote]


class NodeConnection:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        command = command_for(node)
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
            )
        except OSError as exc:
            raise NodeError(f"node {node.name} ({node.endpoint}): cannot start "
                            f"{command[0]}: {exc.strerror}") from None  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self.inp: IO[bytes] = self.process.stdout
        self.out: IO[bytes] = self.process.stdin
        # What the node's build may ask for (secrets and agents by id, values read when
        # asked; pull tokens for its registries, fetched here).
        self.calls = ClientCalls()
        self.lock = threading.Lock()  # one message at a time on `out`

    def _what(self) -> str:
        return f"node {self.node.name} ({self.node.endpoint})"

    def _failed(self, exc: NodeError) -> NodeError:
        """The node's own words (ssh's, or the worker's stderr) with the protocol error."""
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._stderr.seek(0)
        said = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        tail = said.splitlines()[-1] if said else ""
        text = str(exc) if str(exc).startswith(self._what()) else f"{self._what()}: {exc}"
        return NodeError(text + (f": {tail}" if tail else ""))

    def _receive(self) -> dict[str, Any]:
        try:
            return receive(self.inp, self._what(), MAX_ANSWER)  # type: ignore[arg-type]
        except NodeError as exc:
            raise self._failed(exc) from None

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._write(message)
        except NodeError:
            raise self._failed(NodeError("the connection was cut")) from None

    def hello(self) -> NodeInfo:
        from polyarch import __version__  # noqa: PLC0415

        self._send(Hello(PROTOCOL_VERSION, __version__).to_json())
        answer = self._receive()
        try:
            version, polyarch = HelloAnswer.version_of(answer, self._what())
        except NodeError as exc:
            raise self._failed(exc) from None
        if version != PROTOCOL_VERSION:
            raise NodeError(
                f"{self._what()} speaks node protocol version {version} (polyarch "
                f"{polyarch}); this polyarch ({__version__}) speaks version "
                f"{PROTOCOL_VERSION}: install the same polyarch on both"
            )
        try:
            hello = HelloAnswer.from_json(answer, self._what())
        except NodeError as exc:
            raise self._failed(NodeError(f"answered hello with what polyarch cannot read: "
                                         f"{exc}")) from None  # fmt: skip
        return NodeInfo(hello.polyarch, hello.native, hello.emulated, hello.free, hello.runtime)

    def send_context(
        self,
        context: Path,
        ignore: tuple[str, ...],
        used: Callable[[str], bool] | None = None,
        walked: tuple[Entry, ...] | None = None,
    ) -> tuple[list[str], int]:
        """The context (the files `used` accepts), by content: returns the files listed and
        how many of them the node did not have."""
        entries = context_entries(context, ignore, used, walked=walked)
        listed = [e.path for e in entries if e.type == "file"]
        return listed, self._send_tree(Tree("context", tuple(entries)), context)

    def send_layout(self, index: int, layout: Path, *, kind: TreeKind = "base") -> int:
        """An image as an OCI layout, by content: a base image (the node names it
        `layouts/INDEX`) or a build-once stage's output (`stages/INDEX`)."""
        return self.send_tree(index, layout, kind=kind)

    def send_tree(self, index: int, directory: Path, *, kind: TreeKind) -> int:
        """A directory of this machine, by content, whole: a `--build-context` directory or
        OCI layout (`kind` named: the node names it `named/INDEX`) or a local `--cache-from`
        (cache: `caches/INDEX`). Returns how many files the node did not have."""
        return self._send_tree(Tree(kind, tuple(context_entries(directory, ())), index), directory)

    def reach(self, registries: list[str]) -> dict[str, str]:
        """The registries the node cannot reach, with why."""
        self._send(Reach(tuple(registries)).to_json())
        answer = self._receive()
        try:
            expect_op(answer, "reach", self._what())
            return dict(Unreachable.from_json(answer, self._what()).unreachable)
        except NodeError as exc:
            raise self._failed(exc) from None

    def _send_tree(self, tree: Tree, directory: Path) -> int:
        """The tree's listing, then the files the node asks for; returns how many."""
        self._send(tree.to_json())
        answer = self._receive()
        try:
            expect_op(answer, "need", self._what())
            need = Need.from_json(answer, self._what())
        except NodeError as exc:
            raise self._failed(exc) from None
        by_digest = {e.digest: e for e in tree.entries if e.type == "file"}
        try:
            for digest in need.digests:
                entry = by_digest.get(digest)
                if entry is None:
                    raise self._failed(NodeError(f"asked for {digest:.80}, which was not "
                                                 "offered"))  # fmt: skip
                with (directory / entry.path).open("rb") as f:
                    send_file(self.out, BlobHead(Digest.parse(digest), entry.size).to_json(),  # type: ignore[arg-type]
                              f, entry.size)  # fmt: skip
        except (BrokenPipeError, OSError) as exc:
            raise self._failed(NodeError(f"sending the context failed: {exc}")) from None
        try:
            expect_op(self._receive(), "context-ready", self._what())
        except NodeError as exc:
            raise self._failed(exc) from None
        return len(need.digests)

    def build(self, ask: BuildAsk, dockerfile: Path, progress: Progress) -> BuildDone:
        """Build one platform there; its progress is told here, labelled with the node."""
        answer = self._ask(ask, dockerfile, progress)
        if not isinstance(answer, BuildDone):
            raise self._failed(NodeError("answered a build with a warm-up's end"))
        return answer

    def warm(self, ask: BuildAsk, dockerfile: Path, progress: Progress) -> int:
        """Run there what one platform's build can run before the `ask.pending` stages are
        sent (into its step cache); returns how many steps ran."""
        answer = self._ask(ask, dockerfile, progress)
        if not isinstance(answer, Warmed):
            raise self._failed(NodeError("answered a warm-up with a build's result"))
        return answer.steps_run

    def _ask(self, ask: BuildAsk, dockerfile: Path, progress: Progress) -> BuildDone | Warmed:
        self._send(ask.to_json())
        calls = ClientSession(self._write, self.inp, self._what(), self.calls,  # type: ignore[arg-type]
                              self._write_file)  # fmt: skip
        what = self._what()
        while True:
            message = self._receive()
            op = message.get("op")
            try:
                if op == "event":
                    progress(event_from_json(message, self.node.name, what))
                elif op == "error":
                    failure = Failure.from_json(message, what)
                    with contextlib.suppress(NodeError):  # the build's error is what to say
                        calls.end()
                    raise BuildError(
                        f"{failure.message} (on node {self.node.name})",
                        location=f"{dockerfile}:{failure.line}" if failure.line else "",
                        stage=failure.stage, platform=failure.platform or ask.platform,
                        kind="missing-source" if failure.kind == "missing-source" else "",
                    )  # fmt: skip
                elif op in ("result", "warmed"):
                    done = (BuildDone.from_json(message, what) if op == "result"
                            else Warmed.from_json(message, what))  # fmt: skip
                    calls.end()
                    return done
                elif not calls.handle(str(op), message):
                    raise NodeError(f"sent {op!r} during a build")
            except NodeError as exc:
                raise self._failed(exc) from None
            except (KeyError, TypeError, ValueError) as exc:
                raise self._failed(NodeError(f"sent a {op!r} polyarch cannot read: "
                                             f"{exc!r}")) from None  # fmt: skip

    def _write(self, message: dict[str, Any], payload: bytes | None = None) -> None:
        """One message (and its payload) whole, whichever thread sends it."""
        with self.lock:
            try:
                send(self.out, message, payload)  # type: ignore[arg-type]
            except (BrokenPipeError, OSError):
                raise NodeError(f"{self._what()}: the connection was cut") from None

    def _write_file(self, message: dict[str, Any], path: Path, size: int) -> None:
        """A message and a file's bytes as its payload, whole, whichever thread sends."""
        with self.lock:
            try:
                with path.open("rb") as f:
                    send_file(self.out, message, f, size)  # type: ignore[arg-type]
            except (BrokenPipeError, OSError) as exc:
                raise NodeError(f"{self._what()}: sending {path.name} failed: {exc}") from None

    def fetch(
        self, descriptor: Descriptor, layout: OciLayout, *, documents_only: bool = False
    ) -> None:
        """The image's manifest, config and layers (or only its manifest and config) into the
        local store, each verified."""
        if descriptor.size > MAX_MANIFEST:
            raise NodeError(f"{self._what()}: a manifest of {descriptor.size} bytes; refused")
        raw = self._blob(descriptor.digest, descriptor.size, layout)
        manifest = parse_document(raw, descriptor.media_type, what="the node's manifest")
        if not isinstance(manifest, Manifest):
            raise NodeError(f"{self._what()} built an index, not one platform's image")
        if manifest.config.size > MAX_MANIFEST:
            raise NodeError(f"{self._what()}: a config of {manifest.config.size} bytes; refused")
        for blob in (manifest.config,) if documents_only else manifest.blobs():
            if not layout.blobs.has(blob.digest, blob.size):
                self._blob(blob.digest, blob.size, layout)

    def fetch_blob(self, descriptor: Descriptor, layout: OciLayout) -> None:
        """One blob of the node's store into the local one, verified (kept if it is there)."""
        if not layout.blobs.has(descriptor.digest, descriptor.size):
            self._blob(descriptor.digest, descriptor.size, layout)

    def _blob(self, digest: Digest, size: int, layout: OciLayout) -> bytes:
        self._send(Get(digest).to_json())
        answer = self._receive()
        if answer.get("op") == "error":
            said = Failure.from_json(answer, self._what()).message
            raise self._failed(NodeError(f"did not send {digest}: {said}"))
        try:
            expect_op(answer, "blob", self._what())
            head = BlobHead.from_json(answer, self._what())
        except NodeError as exc:
            raise self._failed(exc) from None
        if head.digest != digest:
            raise self._failed(NodeError(f"sent {head.digest} when asked for {digest}"))
        if head.size != size:
            raise NodeError(f"{self._what()} sent {head.size} bytes for {digest}, not {size}")
        layout.blobs.ingest(payload_chunks(self.inp, size, self._what()), digest, size)  # type: ignore[arg-type]
        return layout.blobs.read_bytes(digest, size) if size <= MAX_MANIFEST else b""

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self._send(dict(BYE))
                self.out.close()
                self.process.wait(timeout=10)
        except (NodeError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
        finally:
            self._stderr.close()


Connect = Callable[[Node], NodeConnection]
