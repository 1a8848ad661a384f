"""`Farm` driven with fake nodes (a local process speaking the node protocol as the test
script tells it): routing a platform there, a node that answers a build with garbage or with
an op it should not send (a protocol error naming what it sent; its platform built here when
fallback allows, the build failed when not), and a node whose build fails (the failure's
kind comes back typed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from polyarch.errors import BuildError
from polyarch.nodes.builders import BuilderSpec, Node
from polyarch.nodes.farm import Farm, RemoteBuild
from polyarch.nodes.protocol import PROTOCOL_VERSION, NodeError
from polyarch.nodes.wire import BuildAsk
from polyarch.platform import Platform
from polyarch.progress import Event
from polyarch.store.layout import OciLayout

ARM64 = Platform.parse("linux/arm64")
AMD64 = Platform.parse("linux/amd64")

FAKE_NODE = """
import json, sys
answer = sys.argv[1]
out = sys.stdout.buffer
def send(message):
    out.write(json.dumps(message).encode() + b"\\n"); out.flush()
for line in sys.stdin.buffer:
    message = json.loads(line)
    op = message["op"]
    if op == "hello":
        send({"op": "hello", "version": VERSION, "polyarch": "fake", "native": ["linux/arm64"],
              "emulated": [], "runtime": "none", "free": 1})
    elif op in ("context", "layout"):
        send({"op": "need", "digests": []}); send({"op": "context-ready", "received": 0})
    elif op == "reach":
        send({"op": "reach", "unreachable": {}})
    elif op == "build":
        send({"op": "event", "event": "note", "step": "", "description": "fake", "text": "hi"})
        if answer == "garbage":
            send({"op": "result", "descriptor": {"mediaType": 7}, "steps_run": "many"})
        elif answer == "unknown-op":
            send({"op": "explode"})
        elif answer == "failure":
            send({"op": "error", "message": "COPY failed: no source", "kind": "step",
                  "stage": "build", "platform": "linux/arm64", "line": 3})
            continue
        sys.exit(0)
    elif op == "bye":
        sys.exit(0)
""".replace("VERSION", str(PROTOCOL_VERSION))


def farm_with(tmp_path: Path, answer: str, *, fallback: bool) -> tuple[Farm, list[Event]]:
    script = tmp_path / "fake_node.py"
    script.write_text(FAKE_NODE)
    node = Node("arm", "local", ("linux/arm64",), f"{sys.executable} {script} {answer} #")
    events: list[Event] = []
    farm = Farm(BuilderSpec("fake", (node,)), events.append, fallback=fallback)
    farm.open()
    return farm, events


def build_on(farm: Farm, tmp_path: Path) -> tuple[dict[Platform, object], list[Platform]]:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (context / "a").write_text("a\n")
    routes = farm.routes([AMD64, ARM64], AMD64, [])
    assert [(str(r.platform), r.node.name if r.node else None) for r in routes] == [
        ("linux/amd64", None), ("linux/arm64", "arm")]  # fmt: skip
    request = RemoteBuild(BuildAsk(dockerfile="Dockerfile"), context, context / "Dockerfile")
    try:
        done, lost = farm.build(routes, request, OciLayout(tmp_path / "store"))
    finally:
        farm.close()
    return dict(done), lost


@pytest.mark.parametrize(("answer", "said"), [
    ("garbage", "mediaType"),
    ("unknown-op", "sent 'explode' during a build"),
])  # fmt: skip
def test_a_node_that_answers_garbage(tmp_path: Path, answer: str, said: str) -> None:
    farm, events = farm_with(tmp_path, answer, fallback=True)
    done, lost = build_on(farm, tmp_path)
    assert done == {} and lost == [ARM64]  # built here instead
    notes = [e.text for e in events if e.kind == "note"]
    assert any(said in n and "building linux/arm64 here instead" in n for n in notes), notes
    assert any(e.node == "arm" and e.text == "hi" for e in events)  # its progress came here

    farm, _events = farm_with(tmp_path, answer, fallback=False)
    with pytest.raises(NodeError, match=said):
        build_on(farm, tmp_path)


def test_a_nodes_failed_build_comes_back_typed(tmp_path: Path) -> None:
    farm, _events = farm_with(tmp_path, "failure", fallback=True)
    with pytest.raises(BuildError) as failed:
        build_on(farm, tmp_path)
    error = failed.value
    assert error.message == "COPY failed: no source (on node arm)"
    assert error.platform == "linux/arm64" and error.stage == "build"
    assert error.location.endswith("Dockerfile:3") and error.kind == ""
