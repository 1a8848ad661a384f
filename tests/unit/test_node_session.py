"""A build's session calls (nodes/session.py) between a node and a client over two pipes, as
over SSH: a secret asked and answered, an SSH agent reached through a channel (a real unix
socket at each end), a secret the build was not given, the session's end; and a client that
gets garbage from a node."""

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
from polyarch.nodes.session import ClientSession, NodeSession
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

    client = ClientSession(write, client_in, "the node", {"token": SecretSource("token",
                           env="TOKEN")}, Agents({"default": SshSource("default",
                           socket=echo_agent)}))  # fmt: skip
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
        client = ClientSession(lambda m, _p: sent.append(m), inp, "node x", {}, None)
        assert client.handle("ssh-open", {"channel": 1, "id": "default"})
        assert sent == [{"op": "ssh-close", "channel": 1}]
        with pytest.raises(NodeError, match="bytes of an agent channel"):
            client.handle("ssh-data", {"channel": 1, "size": 1 << 30})
        assert not client.handle("result", {})
        assert client.handle("auth", {"host": "reg.test", "scopes": ["repository:a:pull"]})
        assert sent[-1] == {"op": "auth", "host": "reg.test", "none": True}  # no provider
        client.tokens = lambda host, scopes: ("t0k", 240.0)
        client.handle("auth", {"host": "reg.test", "scopes": ["repository:a:pull"]})
        assert sent[-1] == {"op": "auth", "host": "reg.test", "token": "t0k", "expires_in": 240.0}
        client.end()
    os.close(_write)
    assert sent[-1] == {"op": "session-end"}
