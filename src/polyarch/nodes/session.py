"""A build's session: while a node builds, it calls back into the client for what only the
client has (BuildKit's session does the same over its gRPC stream).

- `secret` (node -> client `{"op": "secret", "id": ID}`): the client answers with the value
  as the payload, or with an `error`. The value stays in memory at both ends.
- SSH agent channels: a step that mounts `--mount=type=ssh,id=ID` connects to a socket the
  node made for ID; each connection is a channel (`ssh-open` with the channel's number and
  ID), its bytes travel as `ssh-data` payloads both ways and either end says `ssh-close`
  when its side is done. The client connects each channel to its own agent (the caller's
  socket, or an agent it started for a key file): no key material leaves the client.
- `auth` (node -> client, `host` and `scopes`): a registry that asks the node for a bearer
  token, where the node has no credentials of its own. The client fetches a token for those
  repositories, narrowed to pull, from the token service the registry names to it, with its
  own credentials, and answers with the token and how long it lasts (or `none`: it has no
  credentials for that registry either). The password never leaves the client.
- `context-ask` (node -> client, the paths a step selects from a build context: the main one
  or a `--build-context` directory, by name): the client
  answers with a `context-listing` of those files by digest (after `.dockerignore`, with every
  directory and symlink); the node asks for the ones it does not hold (`context-need`), which
  come as `blob`s and then `context-ready`. Only what a step reads crosses, when it reads it
  (BuildKit's filesync); the Dockerfile and its ignore files are sent before the build.
- `session-end` (client -> node): the client read the build's last message; nothing more of
  this build's session follows, and the node reads its next request.

While a build runs the node reads nothing else from the client: `NodeSession` reads every
message and dispatches it; the client's end of the connection closing (interrupted, or its
build failed) interrupts the node's build as Ctrl-C interrupts a local one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

from polyarch.digest import Digest
from polyarch.errors import AuthenticationError, PolyarchError, StepError
from polyarch.nodes.protocol import MAX_SECRET, NodeError, payload_chunks, receive, send
from polyarch.nodes.trees import (
    Known,
    NodeContext,
    context_entries,
    materialize,
    needed,
    used_files,
    walk_context,
)
from polyarch.nodes.wire import (
    SESSION_END,
    AuthAnswer,
    AuthAsk,
    BlobHead,
    ContextAsk,
    ContextListing,
    ContextNeed,
    Entry,
    Ready,
    SecretAnswer,
    SecretAsk,
    SshClose,
    SshData,
    SshOpen,
)

if TYPE_CHECKING:
    from polyarch.worker.local.mounts import Agents, SecretSource, SshSource

_Question: TypeAlias = "SecretAsk | AuthAsk | ContextAsk | ContextNeed"
_Answer: TypeAlias = "SecretAnswer | AuthAnswer | ContextListing | Ready"

CHANNEL_CHUNK = 64 << 10  # an agent message is small; a read of a socket sends what it got
MAX_CHANNELS = 64  # open at once, per build


def _channel_message(
    op: str, message: dict[str, Any], channels: Mapping[int, _Channel], inp: BinaryIO, what: str
) -> bool:
    """An agent channel's bytes (its payload) or its peer's end, at either end of the
    connection; False when `op` is neither."""
    if op == "ssh-data":
        number = SshData.from_json(message, what).channel
        data = b"".join(payload_chunks(inp, _size(message, CHANNEL_CHUNK, what), what))
        channel = channels.get(number)
        if channel is not None:
            channel.write(data)
    elif op == "ssh-close":
        channel = channels.get(SshClose.from_json(message, what).channel)
        if channel is not None:
            channel.done_writing()
    else:
        return False
    return True


def _size(message: dict[str, Any], limit: int, what: str) -> int:
    """The size of a message's payload, at most `limit`."""
    size = message.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= limit:
        raise NodeError(f"{what} sent a payload of {size!r:.20} bytes (at most {limit})")
    return size


def _open_only(channels: dict[int, _Channel]) -> None:
    """Closed channels closed and forgotten (a build may open many, one after another)."""
    for number in [n for n, c in channels.items() if c.over]:
        channels.pop(number).close()


class _Channel:
    """One connection to an agent, at either end: bytes from the socket go out as `ssh-data`;
    bytes that come in are written to it."""

    def __init__(
        self, number: int, sock: socket.socket, out: Callable[[dict[str, Any], bytes | None], None]
    ) -> None:
        self.number, self.sock, self.out = number, sock, out
        self.thread = threading.Thread(target=self._pump, daemon=True, name=f"ssh-{number}")
        self.peer_done = False

    def start(self) -> _Channel:
        self.thread.start()
        return self

    def _pump(self) -> None:
        with contextlib.suppress(OSError, NodeError):
            while data := self.sock.recv(CHANNEL_CHUNK):
                self.out(SshData(self.number).to_json(), data)
        with contextlib.suppress(OSError, NodeError):
            self.out(SshClose(self.number).to_json(), None)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def done_writing(self) -> None:
        self.peer_done = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    @property
    def over(self) -> bool:
        """Both ends are done with it."""
        return self.peer_done and self.thread.ident is not None and not self.thread.is_alive()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self.thread.is_alive():
            self.thread.join(5)
        self.sock.close()


class NodeSession:
    """The node's end of one build's session (see the module's doc)."""

    def __init__(
        self,
        inp: BinaryIO,
        out: BinaryIO,
        writing: threading.Lock,
        contexts: Mapping[str, NodeContext] | None = None,
    ) -> None:
        self.inp, self.out, self.writing = inp, out, writing
        self._contexts = dict(contexts or {})  # by name: the main one, named directories
        self._receiving: NodeContext | None = None  # whose files are asked for now
        self._expected: set[str] = set()  # the context files asked for, not yet received
        # The client's answers, with their payloads; None: the client is gone.
        self._answers: queue.Queue[tuple[_Answer, bytes] | None] = queue.Queue()
        self._asking = threading.Lock()
        self._channels: dict[int, _Channel] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._listeners: list[socket.socket] = []
        self._directory: Path | None = None
        self._building = True
        self._gone: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True, name="session")

    # the client's messages ---------------------------------------------------------------

    def start(self) -> None:
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = receive(self.inp, "the client")
                op = message["op"]
                if op == "session-end":
                    return
                if op == "secret":
                    answer = SecretAnswer.from_json(message, "the client")
                    size = 0 if answer.error else _size(message, MAX_SECRET, "the client")
                    self._answers.put((answer, b"".join(payload_chunks(self.inp, size,
                                                                       "the client"))))  # fmt: skip
                elif op == "auth":
                    self._answers.put((AuthAnswer.from_json(message, "the client"), b""))
                elif op == "context-listing":
                    self._answers.put((ContextListing.from_json(message, "the client"), b""))
                elif op == "blob":
                    self._context_file(BlobHead.from_json(message, "the client"))
                elif op == "context-ready":
                    self._answers.put((Ready.from_json(message, "the client"), b""))
                elif not _channel_message(op, message, self._channels, self.inp, "the client"):
                    raise NodeError(f"the client sent {op!r} during a build")
        except (PolyarchError, KeyError, TypeError, ValueError, OSError) as exc:
            self._left(str(exc))

    def _context_file(self, head: BlobHead) -> None:
        """A context file the node asked for, kept by digest (checked as it is written)."""
        receiving = self._receiving
        if receiving is None or str(head.digest) not in self._expected:
            raise NodeError(f"the client sent {head.digest}, which was not asked for")
        self._expected.discard(str(head.digest))
        chunks = payload_chunks(self.inp, head.size, "the client")
        receiving.files.ingest(chunks, head.digest, head.size)

    def _left(self, why: str) -> None:
        """The client went away (or broke the protocol) while the build runs: the build is
        interrupted as Ctrl-C interrupts a local one; a step waiting for an answer fails."""
        with self._lock:
            self._gone = why
            building = self._building
        self._answers.put(None)
        if building:
            os.kill(os.getpid(), signal.SIGINT)

    def _send(self, message: dict[str, Any], payload: bytes | None = None) -> None:
        with self.writing:
            send(self.out, message, payload)

    # secrets -------------------------------------------------------------------------------

    def secrets(self, ids: Iterable[object]) -> dict[str, SecretSource]:
        from polyarch.worker.local.mounts import SecretSource  # noqa: PLC0415

        return {str(i): SecretSource(str(i), fetch=functools.partial(self.secret, str(i)))
                for i in ids}  # fmt: skip

    def _ask(self, question: _Question) -> tuple[_Answer, bytes]:
        """One question to the client and its answer (one question at a time)."""
        with self._asking:
            if self._gone is not None:
                raise NodeError(f"the client is gone ({self._gone})")
            self._send(question.to_json())
            answer = self._answers.get()
            if answer is None:
                raise NodeError(f"the client is gone ({self._gone})")
            return answer

    def token(self, host: str, scopes: list[str]) -> tuple[str, float] | None:
        """A pull token for `host`, fetched by the client with its credentials (None: it has
        none for that registry)."""
        answer, _ = self._ask(AuthAsk(host, tuple(scopes)))
        if not isinstance(answer, AuthAnswer) or answer.host != host:
            raise NodeError(f"the client answered a token request for {host} with another")
        if answer.error is not None:
            raise AuthenticationError(f"{answer.error} (the client, asked for a token for "
                                      f"{host})", reference=host)  # fmt: skip
        return None if answer.token is None else (answer.token, answer.expires_in)

    def secret(self, secret_id: str) -> bytes:
        """A secret's value, asked of the client now."""
        answer, value = self._ask(SecretAsk(secret_id))
        if not isinstance(answer, SecretAnswer) or answer.id != secret_id:
            raise NodeError(f"the client answered secret request {secret_id!r} with another")
        if answer.error is not None:
            raise StepError(f"secret {secret_id!r}: {answer.error} (on the client)")
        return value

    # the main context --------------------------------------------------------------------

    def context(self, name: str, includes: tuple[str, ...]) -> None:
        """The files that `includes` select from build context `name` (the main one, or a
        named directory), asked of the client now (once per selection and connection) and
        written into the directory the build reads; other names (git) are not the client's."""
        shared = self._contexts.get(name)
        if shared is None:
            return
        with shared.lock:
            if includes in shared.asked:
                return
            listing, _ = self._ask(ContextAsk(includes, name))
            if not isinstance(listing, ContextListing):
                raise NodeError("the client answered a context request with something else")
            if listing.error is not None:
                raise StepError(f"build context: {listing.error} (on the client)")
            need = needed(listing.entries, shared.files)
            if need:
                self._receiving, self._expected = shared, set(need)
                ready, _ = self._ask(ContextNeed(need))
                missing = sorted(d for d in need if not shared.files.has(Digest.parse(d)))
                if not isinstance(ready, Ready) or missing:
                    raise NodeError(f"the client did not send the context files asked for "
                                    f"({len(missing)} missing)")  # fmt: skip
            materialize(listing.entries, shared.files, shared.directory, shared.made)
            shared.asked.add(includes)

    # SSH agents ----------------------------------------------------------------------------

    def agents(self, ids: Iterable[object]) -> dict[str, SshSource]:
        """For each agent id, a socket of this node whose connections are channels to the
        client's agent (made now, in a directory only this user can enter)."""
        from polyarch.worker.local.mounts import SshSource  # noqa: PLC0415

        out: dict[str, SshSource] = {}
        for index, agent_id in enumerate(sorted(map(str, ids))):
            if self._directory is None:
                self._directory = Path(tempfile.mkdtemp(prefix="polyarch-relay-"))
            path = self._directory / f"{index}.sock"
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            listener.listen(16)
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, agent_id), daemon=True,
                             name=f"relay-{index}").start()  # fmt: skip
            out[agent_id] = SshSource(agent_id, socket=path)
        return out

    def _accept(self, listener: socket.socket, agent_id: str) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                _open_only(self._channels)
                if self._gone is not None or len(self._channels) >= MAX_CHANNELS:
                    conn.close()
                    continue
                self._next += 1
                number = self._next
                # Known before the client can answer it, said before its first bytes.
                channel = self._channels[number] = _Channel(number, conn, self._send)
                with contextlib.suppress(OSError):
                    self._send(SshOpen(number, agent_id).to_json())
                channel.start()

    # the end -------------------------------------------------------------------------------

    def finish(self, last: dict[str, Any]) -> None:
        """The build is over: its agent sockets and channels are closed, `last` (its result
        or error) is sent, and the client's `session-end` read (or its leaving noticed)."""
        with self._lock:
            self._building = False
        self.close()
        with contextlib.suppress(OSError):
            self._send(last)
        self._reader.join()

    def close(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._listeners.clear()
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


@dataclass(slots=True)
class SharedContext:
    """The main context as the client offers it to a node's steps: its directory and
    `.dockerignore` patterns, the digests listed so far (a file is hashed once per build),
    and the files listed and how many were sent since the last note."""

    directory: Path
    ignore: tuple[str, ...] = ()
    known: Known = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)
    sent: int = 0
    walked: tuple[Entry, ...] | None = None  # the context's walk, made once per build

    def walk(self) -> tuple[Entry, ...]:
        if self.walked is None:
            self.walked = walk_context(self.directory, self.ignore)
        return self.walked


@dataclass(frozen=True, slots=True)
class ClientCalls:
    """What a node's build may ask this machine for: secrets and SSH agents by id, pull
    tokens for a registry the node has no credentials for (`RegistryClient.pull_token`), and
    the main context's files."""

    secrets: Mapping[str, SecretSource] = field(default_factory=dict)
    agents: Agents | None = None
    tokens: Callable[[str, list[str]], tuple[str, float] | None] | None = None
    # The build contexts a node's steps read through the session, by name: `context` (the
    # main one) and the `--build-context` directories.
    contexts: Mapping[str, SharedContext] = field(default_factory=dict)


class ClientSession:
    """The client's end: answers a node's calls from what the build was given (secret
    sources by id, SSH agents by id) while it reads the build's messages."""

    def __init__(
        self,
        write: Callable[[dict[str, Any], bytes | None], None],
        inp: BinaryIO,
        what: str,
        calls: ClientCalls,
        write_file: Callable[[dict[str, Any], Path, int], None] | None = None,
    ) -> None:
        self.write, self.inp, self.what = write, inp, what
        self.secrets, self.agents, self.tokens = calls.secrets, calls.agents, calls.tokens
        self.contexts = calls.contexts
        self.write_file = write_file
        self._listed: dict[str, Entry] = {}  # the files of the last listing, by digest
        self._listing_of: SharedContext | None = None  # the context the last listing is of
        self._channels: dict[int, _Channel] = {}

    def handle(self, op: str, message: dict[str, Any]) -> bool:
        """Answer one message of the node if it is a session call (False: it is not)."""
        if op == "secret":
            self._secret(SecretAsk.from_json(message, self.what).id)
        elif op == "auth":
            ask = AuthAsk.from_json(message, self.what)
            self._token(ask.host, list(ask.scopes))
        elif op == "ssh-open":
            opened = SshOpen.from_json(message, self.what)
            self._open(opened.channel, opened.id)
        elif op == "context-ask":
            wanted = ContextAsk.from_json(message, self.what)
            self._listing(wanted.name, wanted.includes)
        elif op == "context-need":
            self._context_files(ContextNeed.from_json(message, self.what).digests)
        else:
            return _channel_message(op, message, self._channels, self.inp, self.what)
        return True

    def _secret(self, secret_id: str) -> None:
        """A node's step mounts secret `secret_id`: its value, read here now, goes over the
        connection (in memory at both ends), or why it cannot."""
        source = self.secrets.get(secret_id)
        if source is None:  # the node asked for one the build was not given
            self.write(SecretAnswer(secret_id, "not given to this build").to_json(), None)
            return
        try:
            value = source.read()
        except PolyarchError as exc:
            self.write(SecretAnswer(secret_id, str(exc)).to_json(), None)
            return
        self.write(SecretAnswer(secret_id).to_json(), value)

    def _listing(self, name: str, includes: tuple[str, ...]) -> None:
        """A node's step reads these paths of build context `name`: its files by digest (the
        whole context when a path names its root; a path that does not resolve here adds
        nothing, and the node says what is missing as a local build would)."""
        shared = self.contexts.get(name)
        if shared is None:
            self.write(ContextListing(error=f"no build context {name!r:.80} was offered to "
                                            "this node").to_json(), None)  # fmt: skip
            return
        try:
            used = used_files(shared.directory, includes)
            entries = context_entries(shared.directory, shared.ignore, used, shared.known,
                                      shared.walk())  # fmt: skip
        except OSError as exc:
            self.write(ContextListing(error=f"{shared.directory}: {exc.strerror}").to_json(),
                       None)  # fmt: skip
            return
        self._listed = {e.digest: e for e in entries if e.type == "file"}
        self._listing_of = shared
        shared.listed.update(e.path for e in entries if e.type == "file")
        self.write(ContextListing(tuple(entries)).to_json(), None)

    def _context_files(self, digests: tuple[str, ...]) -> None:
        """The listed files the node does not hold, each as a blob, then `context-ready`."""
        shared = self._listing_of
        for digest in digests:
            entry = self._listed.get(digest)
            if shared is None or entry is None or self.write_file is None:
                raise NodeError(f"{self.what} asked for {digest:.80}, which was not listed")
            self.write_file(BlobHead(Digest.parse(digest), entry.size).to_json(),
                            shared.directory / entry.path, entry.size)  # fmt: skip
        if shared is not None:
            shared.sent += len(digests)
        self.write(Ready(len(digests)).to_json(), None)

    def _token(self, host: str, scopes: list[str]) -> None:
        """A node's registry asks it for a token: one fetched here, for pulling only."""
        try:
            got = self.tokens(host, scopes) if self.tokens is not None else None
        except PolyarchError as exc:
            self.write(AuthAnswer(host, error=str(exc)).to_json(), None)
            return
        answer = AuthAnswer(host) if got is None else AuthAnswer(host, got[0], got[1])
        self.write(answer.to_json(), None)

    def _open(self, number: int, agent_id: str) -> None:
        """A node's step connected to agent `agent_id`: a channel to this machine's agent (a
        node that asks for one the build was not given gets the channel closed at once)."""
        _open_only(self._channels)
        path = None
        with contextlib.suppress(PolyarchError):
            path = self.agents.socket(agent_id) if self.agents is not None else None
        if path is None or number in self._channels or len(self._channels) >= MAX_CHANNELS:
            self.write(SshClose(number).to_json(), None)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            self.write(SshClose(number).to_json(), None)
            return
        self._channels[number] = _Channel(number, sock, self.write).start()

    def end(self) -> None:
        """The build's last message was read: its channels are closed, then `session-end`."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()
        self.write(dict(SESSION_END), None)


@contextlib.contextmanager
def node_session(
    inp: BinaryIO,
    out: BinaryIO,
    writing: threading.Lock,
    contexts: Mapping[str, NodeContext] | None = None,
) -> Iterator[NodeSession]:
    """A node's session for one build; closed (sockets, channels) however the build ends."""
    session = NodeSession(inp, out, writing, contexts)
    session.start()
    try:
        yield session
    finally:
        session.close()
