"""A build's session calls (nodes/session.py) between a node and a client over two pipes, as
over SSH: a secret asked and answered, an SSH agent reached through a channel (a real unix
socket at each end), a secret the build was not given, the context's files as a step reads
them, the session's end; and a client that gets garbage from a node."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyarch.errors import StepError
from polyarch.nodes.protocol import NodeError, receive, send
from polyarch.nodes.session import ClientCalls, ClientSession, NodeSession
from polyarch.worker.local.mounts import Agents, SecretSource, SshSource


@pytest.fixture
def echo_agent(tmp_path: Path) -> Iterator[Path]:
    """A unix socket that answers each message with `agent:` and the message (an agent's
    request and answer, in shape)."""
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(b"agent:" + data)

    threading.Thread(target=serve, daemon=True).start()
    yield path
    server.close()


def test_secrets_and_agent_channels_cross_the_connection(
    echo_agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    to_node, from_client = os.pipe()
    to_client, from_node = os.pipe()
    node_in, node_out = os.fdopen(to_node, "rb"), os.fdopen(from_node, "wb")
    client_in, client_out = os.fdopen(to_client, "rb"), os.fdopen(from_client, "wb")
    writing = threading.Lock()

    def write(message: dict[str, Any], payload: bytes | None) -> None:
        with writing:
            send(client_out, message, payload)

    calls = ClientCalls(
        {"token": SecretSource("token", env="TOKEN")},
        Agents({"default": SshSource("default", socket=echo_agent)}),
    )
    client = ClientSession(write, client_in, "the node", calls)
    seen: list[str] = []

    def client_loop() -> None:
        while True:
            message = receive(client_in, "the node")
            op = message.pop("op")
            seen.append(op)
            if op == "result":
                client.end()
                return
            assert client.handle(op, message), op

    node = NodeSession(node_in, node_out, threading.Lock())
    node.start()
    reading = threading.Thread(target=client_loop)
    reading.start()
    try:
        sources = node.agents(["default"])
        assert node.secrets(["token"])["token"].read() == b"s3cret"
        with pytest.raises(StepError, match="'other': not given to this build"):
            node.secret("other")
        step = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        step.connect(str(sources["default"].socket))
        step.sendall(b"list keys")
        answer = b""
        while len(answer) < len(b"agent:list keys"):
            answer += step.recv(100)
        assert answer == b"agent:list keys"  # through both ends' sockets and the pipes
        step.close()
        node.finish({"op": "result"})  # returns once the client said session-end
    finally:
        reading.join(10)
        node.close()
    assert not reading.is_alive()
    assert seen[:2] == ["secret", "secret"] and "ssh-open" in seen and seen[-1] == "result"
    assert "ssh-data" in seen
    for stream in (node_in, node_out, client_in, client_out):
        stream.close()


def test_a_client_refuses_what_a_node_should_not_send(tmp_path: Path) -> None:
    """An agent the build was not given gets its channel closed at once; a channel message
    of an absurd size is a NodeError; an op that is no session call is not handled; a token
    is answered from the provider (none without one)."""
    sent: list[dict[str, Any]] = []
    read, _write = os.pipe()
    with os.fdopen(read, "rb") as inp:
        client = ClientSession(lambda m, _p: sent.append(m), inp, "node x", ClientCalls())
        assert client.handle("ssh-open", {"channel": 1, "id": "default"})
        assert sent == [{"op": "ssh-close", "channel": 1}]
        with pytest.raises(NodeError, match="a payload of 1073741824 bytes"):
            client.handle("ssh-data", {"channel": 1, "size": 1 << 30})
        with pytest.raises(NodeError, match="channel must be an integer"):
            client.handle("ssh-close", {"channel": "1"})
        with pytest.raises(NodeError, match="scopes must be a list of strings"):
            client.handle("auth", {"host": "h", "scopes": "repository:a:push"})
        assert not client.handle("result", {})
        assert client.handle("auth", {"host": "reg.test", "scopes": ["repository:a:pull"]})
        assert sent[-1] == {"op": "auth", "host": "reg.test", "none": True}  # no provider
        client.tokens = lambda host, scopes: ("t0k", 240.0)
        client.handle("auth", {"host": "reg.test", "scopes": ["repository:a:pull"]})
        assert sent[-1] == {"op": "auth", "host": "reg.test", "token": "t0k", "expires_in": 240.0}
        client.end()
    os.close(_write)
    assert sent[-1] == {"op": "session-end"}


def test_the_wire_round_trips_and_names_what_is_wrong() -> None:
    """Each message's JSON reads back as the same value; a peer's message that is not what
    it should be is a NodeError naming the field (never a KeyError or a value on trust)."""
    from polyarch.digest import Digest
    from polyarch.nodes.wire import (
        BuildAsk,
        BuildDone,
        CacheSource,
        Failure,
        HelloAnswer,
        NamedEntry,
        Warmed,
        event_from_json,
    )
    from polyarch.oci.models import Descriptor
    from polyarch.progress import Event

    ask = BuildAsk(
        platform="linux/arm64", dockerfile="sub/Dockerfile", build_args={"A": "1"},
        named_contexts={"libs": NamedEntry("dir", 0), "img": NamedEntry("as-is", value="x:1"),
                        "laid": NamedEntry("layout", 1, ":v1")},
        cache_from=(CacheSource(spec="type=registry,ref=r/c"), CacheSource(index=0,
                                                                           rest=("type=local",))),
        secrets=("token",), ssh=("default",), cache_export="max", base_layouts={"b:1": 1000},
        stage_layouts={"ui": 0}, pending=("ui",), step_timeout=30.0,
    )  # fmt: skip
    assert BuildAsk.from_json(ask.to_json()) == ask
    # Stages forced to run once reach the node as names (not as a mode it does not know).
    forced = BuildAsk(dockerfile="D", build_once=frozenset({"ui", "docs"}))
    assert BuildAsk.from_json(forced.to_json()).build_once == frozenset({"ui", "docs"})
    assert (
        BuildAsk.from_json(BuildAsk(dockerfile="D", build_once="off").to_json()).build_once == "off"
    )
    descriptor = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of(b"m"), 1)
    done = BuildDone(descriptor, 3, 4, 1.5)
    assert BuildDone.from_json(done.to_json(), "node") == done
    assert Warmed.from_json(Warmed(2).to_json(), "node") == Warmed(2)
    failure = Failure("no such file", "missing-source", "build", "linux/arm64", 4)
    assert Failure.from_json(failure.to_json(), "node") == failure
    hello = HelloAnswer(4, "1.0", ("linux/amd64",), ("linux/arm64",), "runc", 10)
    assert HelloAnswer.from_json(hello.to_json(), "node") == hello
    event = event_from_json({"event": "log", "step": "k", "text": "hi"}, "arm", "node arm")
    assert event.step == "arm:k" and event.node == "arm" and event.kind == "log"
    assert isinstance(Event("note", "", "x").to_json(), dict)

    for bad, said in (
        ({**ask.to_json(), "jobs": "2"}, "jobs must be an integer"),
        ({**ask.to_json(), "no_cache": 1}, "no_cache must be true or false"),
        ({**ask.to_json(), "dockerfile": None}, "name the Dockerfile or send its text"),
        ({**ask.to_json(), "cache_export": "all"}, "cache_export must be min, max or null"),
        ({**ask.to_json(), "base_layouts": {"b": -1}}, "base_layouts must be a mapping"),
        ({**ask.to_json(), "named_contexts": {"n": {"kind": "file"}}}, "kind must be dir"),
        ({**ask.to_json(), "cache_from": [{"kind": "local"}]}, "index must be an integer"),
    ):
        with pytest.raises(NodeError, match=said):
            BuildAsk.from_json(bad)
    with pytest.raises(NodeError, match="kind must be"):
        Failure.from_json({"op": "error", "message": "m", "kind": "whatever"}, "node")
    with pytest.raises(NodeError, match="result: missing 'mediaType'"):
        BuildDone.from_json({"op": "result", "descriptor": {"digest": "nope"}}, "node")
    with pytest.raises(NodeError, match="steps_run must be an integer"):
        BuildDone.from_json({**done.to_json(), "steps_run": "many"}, "node")
    with pytest.raises(NodeError, match="names no native platform"):
        HelloAnswer.from_json({**hello.to_json(), "native": []}, "node")
    with pytest.raises(NodeError, match="progress event of kind"):
        event_from_json({"event": "explode"}, "arm", "node arm")


def test_trees_and_blobs_on_the_wire() -> None:
    """A tree's entries are checked as they are read: a type, a mode, a digest, an index
    that are not what they should be are NodeErrors; a tree's place under the scratch
    directory follows its kind."""
    from polyarch.nodes.wire import BlobHead, Entry, Get, Tree

    tree = Tree("named", (Entry("d", "dir", 0o755), Entry("d/l", "symlink", target="x"),
                          Entry("d/f", "file", 0o644, digest="sha256:" + "a" * 64, size=3,
                                mtime=5)), 2)  # fmt: skip
    assert Tree.from_json(tree.to_json(), "c") == tree
    assert tree.place == "named/2" and Tree("context", ()).place == "context"
    assert Tree.from_json({"op": "layout", "index": 0, "entries": []}, "c").place == "layouts/0"
    file = tree.to_json()["entries"][2]
    for bad, said in (
        ({**file, "type": "fifo"}, "type must be dir or file or symlink"),
        ({**file, "mode": 0o100644}, "is not a file mode"),
        ({**file, "digest": "md5:x"}, "sha256"),
        ({**file, "size": -1}, "negative"),
    ):
        with pytest.raises(NodeError, match=said):
            Tree.from_json({"op": "context", "entries": [bad]}, "c")
    with pytest.raises(NodeError, match="index -1 is negative"):
        Tree.from_json({"op": "layout", "kind": "stage", "index": -1, "entries": []}, "c")
    with pytest.raises(NodeError, match="kind must be"):
        Tree.from_json({"op": "layout", "kind": "home", "index": 0, "entries": []}, "c")
    with pytest.raises(NodeError, match="get"):
        Get.from_json({"op": "get", "digest": "../../etc/passwd"}, "c")
    with pytest.raises(NodeError, match="size -5 is negative"):
        BlobHead.from_json({"op": "blob", "digest": "sha256:" + "b" * 64, "size": -5}, "n")


def pipes() -> tuple[Any, Any, Any, Any]:
    to_node, from_client = os.pipe()
    to_client, from_node = os.pipe()
    return (os.fdopen(to_node, "rb"), os.fdopen(from_node, "wb"), os.fdopen(to_client, "rb"),
            os.fdopen(from_client, "wb"))  # fmt: skip


def test_a_step_reads_the_context_through_the_session(tmp_path: Path) -> None:
    """The node asks for what a step selects when it reads it: only those files cross (and
    only the ones it does not hold), after .dockerignore, with their mode and mtime; a
    selection asked once is not asked again; the directories come with every listing."""
    from polyarch.nodes.protocol import send_file
    from polyarch.nodes.session import SharedContext
    from polyarch.nodes.trees import NodeContext
    from polyarch.store.blobs import ContentStore

    ctx = tmp_path / "ctx"
    (ctx / "dir" / "deep").mkdir(parents=True)
    (ctx / "a.txt").write_text("same\n")
    (ctx / "copy.txt").write_text("same\n")  # the same bytes as a.txt: never sent twice
    (ctx / "dir" / "b.txt").write_text("b\n")
    (ctx / "dir" / "deep" / "c.txt").write_text("c\n")
    (ctx / "secret.txt").write_text("ignored\n")
    os.chmod(ctx / "a.txt", 0o640)
    os.utime(ctx / "a.txt", ns=(1_000_000_000, 1_000_000_000))
    node_in, node_out, client_in, client_out = pipes()
    writing = threading.Lock()

    def write(message: dict[str, Any], payload: bytes | None) -> None:
        with writing:
            send(client_out, message, payload)

    def write_file(message: dict[str, Any], path: Path, size: int) -> None:
        with writing, path.open("rb") as f:
            send_file(client_out, message, f, size)

    shared = SharedContext(ctx, ("secret.txt",))
    libs = tmp_path / "libs"
    (libs / "sub").mkdir(parents=True)
    (libs / "sub" / "l.txt").write_text("lib\n")
    (libs / "secret.txt").write_text("not ignored in a named context\n")
    offered = {"context": shared, "libs": SharedContext(libs)}
    client = ClientSession(write, client_in, "the node", ClientCalls(contexts=offered),
                           write_file)  # fmt: skip
    seen: list[tuple[str, dict[str, Any]]] = []

    def client_loop() -> None:
        while True:
            message = receive(client_in, "the node")
            op = message.pop("op")
            seen.append((op, message))
            if op == "result":
                client.end()
                return
            assert client.handle(op, message), op

    files = ContentStore(tmp_path / "files")
    there = tmp_path / "node-ctx"
    named = tmp_path / "node-libs"
    contexts = {"context": NodeContext(files, there), "libs": NodeContext(files, named)}
    node = NodeSession(node_in, node_out, threading.Lock(), contexts)
    node.start()
    reading = threading.Thread(target=client_loop)
    reading.start()
    try:
        node.context("context", ("a.txt",))
        assert (there / "a.txt").read_text() == "same\n"
        st = (there / "a.txt").stat()
        assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, 1_000_000_000)
        assert (there / "dir" / "deep").is_dir() and not (there / "dir" / "b.txt").exists()
        node.context("context", ("dir",))
        assert (there / "dir" / "deep" / "c.txt").read_text() == "c\n"
        asks = [m for op, m in seen if op == "context-ask"]
        node.context("context", ("a.txt",))  # asked already
        assert [m for op, m in seen if op == "context-ask"] == asks
        node.context("context", ("copy.txt", "secret.txt"))  # held by digest; ignored
        assert (there / "copy.txt").read_text() == "same\n"
        assert not (there / "secret.txt").exists()
        node.context("git:abc", ("/",))  # not the client's: nothing asked
        node.context("libs", ("/",))  # a named directory: no .dockerignore applies
        assert (named / "sub" / "l.txt").read_text() == "lib\n"
        assert (named / "secret.txt").exists()
        node.finish({"op": "result"})
    finally:
        reading.join(10)
        node.close()
    needs = [m["digests"] for op, m in seen if op == "context-need"]
    assert [len(d) for d in needs] == [1, 2, 2], needs  # copy.txt's bytes were there
    assert [m["name"] for op, m in seen if op == "context-ask"] == ["context"] * 3 + ["libs"]
    assert shared.sent == 3
    assert shared.listed == {"a.txt", "copy.txt", "dir/b.txt", "dir/deep/c.txt"}
    for stream in (node_in, node_out, client_in, client_out):
        stream.close()


def test_a_node_writes_a_tree_only_inside_its_place(tmp_path: Path) -> None:
    """What a client lists is written under the tree's place: a path out of it, or through a
    symlink the listing made, is refused; an entry listed again as another type replaces
    the earlier one (never written through it)."""
    from polyarch.digest import Digest
    from polyarch.errors import BuildError
    from polyarch.nodes.trees import materialize
    from polyarch.nodes.wire import Entry
    from polyarch.store.blobs import ContentStore

    files = ContentStore(tmp_path / "files")
    files.ingest([b"x\n"], Digest.of(b"x\n"), 2)
    digest = str(Digest.of(b"x\n"))
    into = tmp_path / "ctx"
    outside = tmp_path / "outside"
    outside.mkdir()
    made: dict[str, str] = {}
    for bad in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(BuildError, match="leaves the context"):
            materialize((Entry(bad, "file", 0o644, digest=digest, size=2),), files, into, made)
    link = Entry("l", "symlink", target=str(outside))
    with pytest.raises(BuildError, match="goes through a symlink"):
        materialize((link, Entry("l/f", "file", 0o644, digest=digest, size=2)), files, into,
                    made)  # fmt: skip
    assert not (outside / "f").exists()
    materialize((Entry("l", "file", 0o600, digest=digest, size=2),), files, into, made)
    assert not (into / "l").is_symlink() and (into / "l").read_text() == "x\n"
    assert list(outside.iterdir()) == []


def test_the_context_calls_on_the_wire() -> None:
    from polyarch.nodes.wire import ContextAsk, ContextListing, ContextNeed, Entry, Ready

    listing = ContextListing((Entry("d", "dir", 0o755),))
    assert ContextListing.from_json(listing.to_json(), "c") == listing
    failed = ContextListing(error="permission denied")
    assert ContextListing.from_json(failed.to_json(), "c") == failed
    assert ContextAsk.from_json(ContextAsk(("a", "b/*")).to_json(), "n").includes == ("a", "b/*")
    assert ContextAsk.from_json(ContextAsk(("/",), "libs").to_json(), "n").name == "libs"
    assert ContextNeed.from_json(ContextNeed(("sha256:" + "a" * 64,)).to_json(), "n").digests
    assert Ready.from_json(Ready(3).to_json(), "n") == Ready(3)
    with pytest.raises(NodeError, match="selects nothing"):
        ContextAsk.from_json({"op": "context-ask", "includes": []}, "n")
    with pytest.raises(NodeError, match="includes must be a list of strings"):
        ContextAsk.from_json({"op": "context-ask", "includes": "a"}, "n")
    with pytest.raises(NodeError, match="-1 files received"):
        Ready.from_json({"op": "context-ready", "received": -1}, "n")
