"""Builders kept as buildx keeps them; routing of platforms to nodes; the protocol framing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from polyarch.errors import UsageError
from polyarch.nodes.builders import BuilderStore, Endpoint, Node
from polyarch.nodes.client import NodeInfo, command_for
from polyarch.nodes.farm import declared_standing, plan_routes
from polyarch.nodes.protocol import PROTOCOL_VERSION, NodeError, payload_chunks, receive, send
from polyarch.nodes.trees import context_entries
from polyarch.nodes.wire import Tree
from polyarch.platform import Platform

AMD64, ARM64, S390X = (Platform.parse(p) for p in ("linux/amd64", "linux/arm64", "linux/s390x"))


def test_builders_create_append_use_rm(tmp_path: Path) -> None:
    store = BuilderStore(tmp_path)
    assert store.current() == "default" and [s.name for s in store.all()] == ["default"]
    store.add("farm", Node("arm", "ssh://ci@arm-box:2222", ("linux/arm64",)), append=False)
    with pytest.raises(UsageError, match="exists"):
        store.add("farm", Node("x", "local"), append=False)
    store.add("farm", Node("s390", "local", ("linux/s390x",)), append=True)
    with pytest.raises(UsageError, match="no builder 'other' to append to"):
        store.add("other", Node("x", "local"), append=True)
    store.use("farm")
    assert store.current() == "farm"
    assert [n.name for n in store.get(None).nodes] == ["arm", "s390"]
    store.remove("farm")
    assert store.current() == "default"
    with pytest.raises(UsageError, match="no builder 'farm'"):
        store.get("farm")


@pytest.mark.parametrize("text", ["http://x", "ssh://", "ssh://h/path", "ssh://h:port"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="endpoint"):
        Endpoint.parse(text)


def test_the_ssh_command_uses_the_users_openssh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYARCH_SSH_COMMAND", raising=False)
    node = Node("arm", "ssh://ci@arm-box:2222", command="/opt/pa/bin/polyarch")
    command = command_for(node)
    assert command[0] == "ssh" and "BatchMode=yes" in command and "ConnectTimeout=15" in command
    assert command[-8:] == ["-T", "-p", "2222", "-l", "ci", "arm-box", "--",
                            "/opt/pa/bin/polyarch worker"]  # fmt: skip


def test_routing_prefers_native_nodes_then_local_emulation() -> None:
    arm = Node("arm", "local", ("linux/arm64",))
    big = Node("big", "local")  # reports what it runs
    nodes = [(arm, NodeInfo("0.1.0", ("linux/arm64",), (), 0)),
             (big, NodeInfo("0.1.0", ("linux/s390x",), ("linux/riscv64",), 0))]  # fmt: skip
    routes = plan_routes([AMD64, ARM64, S390X, Platform.parse("linux/riscv64"),
                          Platform.parse("linux/ppc64le")], nodes, AMD64, [ARM64])  # fmt: skip
    where = [(str(r.platform), r.node.name if r.node else "here") for r in routes]
    assert where == [("linux/amd64", "here"), ("linux/arm64", "arm"), ("linux/s390x", "big"),
                     ("linux/riscv64", "big"), ("linux/ppc64le", "here")]  # fmt: skip
    assert routes[3].why == "emulated on node big"
    # Variants go where their architecture goes: the node's kernel, or its emulator, runs them.
    wanted = Platform.parse_list(["linux/arm64/v9,linux/amd64/v3,linux/riscv64/rva22u64"])
    variants = plan_routes(wanted, nodes, AMD64, [ARM64])
    assert [r.why for r in variants] == ["native on node arm", "native here",
                                         "emulated on node big"]  # fmt: skip


def test_a_declared_platform_is_checked_against_what_the_node_reports() -> None:
    """Declared linux/arm64 on a node that reports running amd64 and emulating arm64: built
    there (the user's choice) but said to be emulated; one declared for a platform it neither
    runs nor emulates is not sent there."""
    arm = Node("arm", "local", ("linux/arm64", "linux/s390x"))
    info = NodeInfo("0.1.0", ("linux/amd64",), ("linux/arm64",), 0)
    assert declared_standing(arm, info) == [(ARM64, "emulated"), (S390X, "unavailable")]
    routes = plan_routes([AMD64, ARM64, S390X], [(arm, info)], AMD64, [ARM64, S390X])
    assert [(r.node.name if r.node else "here", r.native) for r in routes] == [
        ("here", True), ("arm", False), ("here", False)]  # fmt: skip
    assert routes[1].why.startswith("emulated on node arm: declared for it, but the node "
                                    "reports emulating it (native: linux/amd64)")  # fmt: skip
    assert routes[2].why == ("emulated here; node arm is declared for it but reports neither "
                             "running nor emulating it")  # fmt: skip
    # A node that reports running it natively is preferred to one declared but emulating it.
    real = Node("real", "local")
    native = NodeInfo("0.1.0", ("linux/arm64",), (), 0)
    both = plan_routes([ARM64], [(arm, info), (real, native)], AMD64, [])
    assert (both[0].node, both[0].native) == (real, True)


def test_context_entries_follow_dockerignore(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.js").write_text("a")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "big").write_text("x")
    (tmp_path / "link").symlink_to("src/a.js")
    entries = {e.path: e for e in context_entries(tmp_path, ("node_modules",))}
    assert set(entries) == {"src", "src/a.js", "link"}
    assert entries["link"].target == "src/a.js"
    assert entries["src/a.js"].digest.startswith("sha256:")


def test_framing_round_trip_and_bad_input() -> None:
    stream = io.BytesIO()
    send(stream, {"op": "blob", "digest": "d"}, b"12345")
    stream.seek(0)
    head = receive(stream)
    assert head == {"op": "blob", "digest": "d", "size": 5}
    assert b"".join(payload_chunks(stream, 5)) == b"12345"
    with pytest.raises(NodeError, match="closed the connection"):
        receive(io.BytesIO(b""))
    with pytest.raises(NodeError, match="not the protocol"):
        receive(io.BytesIO(b"bash: polyarch: command not found\n"))
    with pytest.raises(NodeError, match="bytes before the end"):
        list(payload_chunks(io.BytesIO(b"12"), 5))


def test_a_node_never_writes_through_a_symlink_of_the_listing(tmp_path: Path) -> None:
    from polyarch.errors import BuildError
    from polyarch.nodes.trees import NodeContext
    from polyarch.store.blobs import ContentStore

    files = ContentStore(tmp_path / "files")
    digest = files.put_bytes(b"owned\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = [
        {"path": "a", "type": "symlink", "target": str(outside)},
        {"path": "a/x", "type": "file", "digest": str(digest), "size": 6, "mode": 0o644,
         "mtime": 0},
    ]  # fmt: skip
    tree = Tree.from_json({"op": "context", "entries": entries}, "the client")
    with pytest.raises(BuildError, match="goes through a symlink"):
        NodeContext(files, tmp_path / "scratch" / "context").fresh(tree.entries)
    assert list(outside.iterdir()) == []


def test_only_the_files_the_steps_name_are_listed(tmp_path: Path) -> None:
    from polyarch.nodes.trees import used_files

    ctx = tmp_path / "ctx"
    for rel in ("Dockerfile", "app/a.js", "app/lib/b.js", "docs/big.pdf", "pkg.json", "x.lock",
                "real/inside.txt", "other.txt"):  # fmt: skip
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(rel)
    (ctx / "via").symlink_to("real")

    def listed(paths: set[str]) -> list[str] | None:
        used = used_files(ctx, paths)
        if used is None:
            return None
        return [e.path for e in context_entries(ctx, (), used) if e.type == "file"]

    assert listed({"/app", "*.json", "via/inside.txt"}) == [
        "pkg.json", "app/a.js", "app/lib/b.js", "real/inside.txt"]  # fmt: skip
    # Directories and symlinks are always listed (they cost nothing to send).
    entries = context_entries(ctx, (), used_files(ctx, {"x.lock"}))
    kinds = {e.path: e.type for e in entries}
    assert kinds["docs"] == "dir" and kinds["via"] == "symlink" and "docs/big.pdf" not in kinds
    # The root: the whole context. A path that does not resolve here adds nothing (the node
    # says what is missing, as here), whatever the others do.
    assert listed({"."}) is None and listed({"/"}) is None
    assert listed({"missing.txt", "x.lock"}) == ["x.lock"]


@pytest.mark.parametrize("answer", [
    '"native": "linux/arm64"',
    '"native": []',
    '"native": ["not a platform!"]',
    '"native": ["linux/arm64"], "free": "lots"',
])  # fmt: skip
def test_a_node_that_answers_hello_with_nonsense_is_a_clear_node_error(
    tmp_path: Path, answer: str
) -> None:
    from polyarch.nodes.client import NodeConnection

    fake = tmp_path / "fake-polyarch"
    hello = f'{{"op": "hello", "version": {PROTOCOL_VERSION}, "polyarch": "x", {answer}}}'
    fake.write_text(f"#!/bin/sh\nread hello\necho '{hello}'\n")
    fake.chmod(0o755)
    connection = NodeConnection(Node("n", "local", command=str(fake)))
    try:
        with pytest.raises(NodeError, match="answered hello with what polyarch cannot read"):
            connection.hello()
    finally:
        connection.close()


def test_builder_create_takes_several_nodes_each_with_its_platforms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from polyarch.cli import cli

    monkeypatch.setenv("POLYARCH_CONFIG_DIR", str(tmp_path))
    made = CliRunner().invoke(cli, [
        "builder", "create", "farm", "--platform", "linux/arm64", "--node", "a=local",
        "--node=b=ssh://ci@s390x-box", "--platform=linux/s390x,linux/ppc64le", "--node", "c=local",
    ])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert made.output == "builder farm: 3 node(s)\n"
    spec = BuilderStore(tmp_path).get("farm")
    assert [(n.name, n.endpoint, n.platforms) for n in spec.nodes] == [
        ("a", "local", ("linux/arm64",)),
        ("b", "ssh://ci@s390x-box", ("linux/s390x", "linux/ppc64le")),
        ("c", "local", ()),
    ]
    # All or nothing: a node named twice adds none of them.
    twice = CliRunner().invoke(cli, ["builder", "create", "dup", "--node", "x=local",
                                     "--node", "x=local"])  # fmt: skip
    assert twice.exit_code == 2 and "each node needs a name of its own" in twice.output
    clash = CliRunner().invoke(cli, ["builder", "create", "farm", "--append", "--node", "d=local",
                                     "--node", "a=local"])  # fmt: skip
    assert "builder 'farm' has a node 'a' already" in str(clash.exception)
    assert [n.name for n in BuilderStore(tmp_path).get("farm").nodes] == ["a", "b", "c"]


def test_what_travels_to_a_node(tmp_path: Path) -> None:
    """Secrets and SSH agents travel by id (a node calls back for them), named contexts and
    caches to import as given (translated for each node by Farm); a cache export is asked of
    each node as its mode (the export itself is made here)."""
    from polyarch.api import BuildOptions
    from polyarch.nodes.farm import layout_spec, remote_request

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    base = BuildOptions(context=tmp_path)
    agents = BuildOptions(context=tmp_path, ssh=("default", "deploy=/keys/id", "deploy=/x"))
    sent = remote_request(agents, tmp_path, tmp_path / "Dockerfile").ask
    assert sent.ssh == ("default", "deploy")
    exporting = BuildOptions(context=tmp_path, cache_to="type=local,dest=x,mode=max")
    assert remote_request(exporting, tmp_path, tmp_path / "Dockerfile").ask.cache_export == "max"
    assert remote_request(base, tmp_path, tmp_path / "Dockerfile").ask.cache_export is None
    travels = BuildOptions(
        context=tmp_path,
        secrets=("id=a,env=A",),
        contexts={"n": str(tmp_path)},
        cache_from=("type=local,src=c",),
    )
    request = remote_request(travels, tmp_path, tmp_path / "Dockerfile")
    assert request.contexts == {"n": str(tmp_path)}
    assert request.cache_from == ("type=local,src=c",)
    assert request.ask.dockerfile == "Dockerfile" and request.ask.dockerfile_text is None
    assert remote_request(base, tmp_path, tmp_path / "Dockerfile").contexts == {}
    outside = tmp_path.parent / f"{tmp_path.name}.Dockerfile"
    outside.write_text("FROM scratch\n")
    try:
        elsewhere = remote_request(base, tmp_path, outside).ask
        assert elsewhere.dockerfile is None and elsewhere.dockerfile_text == "FROM scratch\n"
    finally:
        outside.unlink()
    assert layout_spec("/l/dir:v1") == ("/l/dir", ":v1")
    assert layout_spec("/l:x/dir@sha256:" + "a" * 64) == ("/l:x/dir", "@sha256:" + "a" * 64)
    assert layout_spec("/l:x/dir") == ("/l:x/dir", "")
