"""`polyarch builder ...` (named builders and their nodes, with buildx's habits) and
`polyarch worker` (the node side, started over SSH by a build)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from polyarch.api import default_root
from polyarch.cli.common import Commands, echo_json, format_option, human, root_option, table
from polyarch.nodes.builders import DEFAULT, BuilderSpec, BuilderStore, Node
from polyarch.nodes.client import NodeConnection, NodeInfo
from polyarch.nodes.farm import declared_standing
from polyarch.nodes.protocol import NodeError


@click.group("builder", cls=Commands)
def builder_group() -> None:
    """Named builders: this machine (`default`) and nodes reached over SSH that build the
    platforms they run natively (polyarch installed on each; nothing stays running there)."""


class _NodesCommand(click.Command):
    """Keeps which `--platform` follows which `--node`: click gathers each option's values
    apart, so the order is read from the arguments before it parses them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["polyarch.nodes"] = _pair_nodes(args)
        return super().parse_args(ctx, args)


def _pair_nodes(args: list[str]) -> list[tuple[str, list[str]]]:
    """[(NODE=ENDPOINT, [platforms given after it, before the next --node])]; platforms given
    before the first --node go to the first node."""
    pairs: list[tuple[str, list[str]]] = []
    early: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            break
        name, eq, inline = arg.partition("=")
        if name not in ("--node", "--platform"):
            continue
        value = inline if eq else next(rest, "")
        if name == "--node":
            pairs.append((value, early if not pairs else []))
        elif pairs:
            pairs[-1][1].append(value)
        else:
            early.append(value)
    return pairs


@builder_group.command("create", cls=_NodesCommand)
@click.argument("name")
@click.option("--node", "nodes", required=True, multiple=True, metavar="NODE=ENDPOINT",
              help="A node (repeatable): ENDPOINT is local or ssh://[user@]host[:port] (your "
              "OpenSSH configuration, keys and agent are used as they are).")  # fmt: skip
@click.option("--platform", "platforms", multiple=True, metavar="P[,P...]",
              help="Platforms the --node before it builds natively (default: what it "
              "reports).")  # fmt: skip
@click.option("--node-command", default="polyarch", show_default=True,
              help="How polyarch is started on the node: a path, with VAR=value before it "
              "if needed (e.g. POLYARCH_ROOT=/srv/pa /opt/polyarch/bin/polyarch).")  # fmt: skip
@click.option("--append", is_flag=True, help="Add the node to an existing builder.")
@click.option("--use", "use", is_flag=True, help="Make it the current builder.")
@click.pass_context
def builder_create(
    ctx: click.Context,
    name: str,
    nodes: tuple[str, ...],
    platforms: tuple[str, ...],
    node_command: str,
    append: bool,
    use: bool,
) -> None:
    """Create builder NAME with its nodes (add more later with --append), as `buildx create`
    does; each --platform belongs to the --node before it.

    \b
    Example:
      polyarch builder create farm --node arm=ssh://ci@arm-box --platform linux/arm64 \\
          --node big=ssh://ci@s390x-box --platform linux/s390x --use
    """
    paired: list[tuple[str, list[str]]] = ctx.meta.get("polyarch.nodes") or []
    if [text for text, _ in paired] != list(nodes):  # not read from the arguments: no order
        paired = [(text, list(platforms) if i == 0 else []) for i, text in enumerate(nodes)]
    added = []
    for text, given in paired:
        node_name, eq, endpoint = text.partition("=")
        if not eq or not node_name or not endpoint:
            raise click.BadParameter(f"want NODE=ENDPOINT, got {text!r}", param_hint="--node")
        wanted = tuple(p.strip() for value in given for p in value.split(",") if p.strip())
        added.append(Node(node_name, endpoint, wanted, node_command))
    names = [node.name for node in added]
    if len(set(names)) != len(names):
        raise click.BadParameter("each node needs a name of its own", param_hint="--node")
    store = BuilderStore()
    spec = store.add(name, *added, append=append)
    if use:
        store.use(name)
    click.echo(f"builder {spec.name}: {len(spec.nodes)} node(s)" + (" (in use)" if use else ""))


@builder_group.command("ls")
@format_option
def builder_ls(fmt: str) -> None:
    """List the builders and their nodes; `*` marks the current one."""
    store = BuilderStore()
    current = store.current()
    specs = store.all()
    if fmt == "json":
        echo_json([{"name": s.name, "current": s.name == current,
                    "nodes": [{"name": n.name, "endpoint": n.endpoint,
                               "platforms": list(n.platforms)} for n in s.nodes]}
                   for s in specs])  # fmt: skip
        return
    rows = []
    for spec in specs:
        mark = "*" if spec.name == current else ""
        if not spec.nodes:
            rows.append([spec.name + mark, "(this machine)", "local", "native and emulated"])
        for node in spec.nodes:
            rows.append([spec.name + mark, node.name, node.endpoint,
                         ",".join(node.platforms) or "(reported)"])  # fmt: skip
    click.echo(table(["BUILDER", "NODE", "ENDPOINT", "PLATFORMS"], rows))


@builder_group.command("use")
@click.argument("name")
def builder_use(name: str) -> None:
    """Make NAME the builder `build` and `release` use (`default`: this machine)."""
    BuilderStore().use(name)
    click.echo(f"using builder {name}")


@builder_group.command("rm")
@click.argument("name")
def builder_rm(name: str) -> None:
    """Forget builder NAME (its nodes keep their workspaces and caches)."""
    BuilderStore().remove(name)
    click.echo(f"removed builder {name}")


def describe(info: NodeInfo) -> str:
    """A reached node in one line, as `builder inspect` and `doctor --builder` show it."""
    return (f"polyarch {info.version}; native {', '.join(info.native)}; emulated "
            f"{', '.join(info.emulated) or 'none'}; {human(info.free)} free; "
            f"runtime {info.runtime}")  # fmt: skip


def declared_problems(node: Node, info: NodeInfo) -> list[str]:
    """What the builder declares for `node` that it does not run natively, in the words
    `builder inspect`, `doctor --builder` and `plan --builder` share."""
    out = []
    for platform, state in declared_standing(node, info):
        if state == "emulated":
            out.append(f"declared {platform}, but the node reports emulating it: builds of "
                       "it there run under emulation")  # fmt: skip
        elif state == "unavailable":
            out.append(f"declared {platform}, but the node reports neither running nor "
                       "emulating it: it is not built there")  # fmt: skip
    return out


def inspect_nodes(spec: BuilderSpec) -> list[tuple[Node, NodeInfo | None, str]]:
    out: list[tuple[Node, NodeInfo | None, str]] = []
    for node in spec.nodes:
        try:
            connection = NodeConnection(node)
            try:
                out.append((node, connection.hello(), ""))
            finally:
                connection.close()
        except NodeError as exc:
            out.append((node, None, str(exc)))
    return out


@builder_group.command("inspect")
@click.argument("name", required=False)
@format_option
def builder_inspect(name: str | None, fmt: str) -> None:
    """Reach each node of NAME (default: the current builder): polyarch version, native and
    emulated platforms, free disk; non-zero when a node cannot be reached."""
    spec = BuilderStore().get(name)
    found = inspect_nodes(spec)
    if fmt == "json":
        echo_json({"name": spec.name, "nodes": [
            {"name": n.name, "endpoint": n.endpoint, "reachable": info is not None,
             "error": error or None, "version": info.version if info else None,
             "native": list(info.native) if info else [],
             "emulated": list(info.emulated) if info else [],
             "free": info.free if info else None,
             "runtime": info.runtime if info else None,
             "declared": [{"platform": str(p), "state": state}
                          for p, state in (declared_standing(n, info) if info else [])]}
            for n, info, error in found]})  # fmt: skip
    else:
        click.echo(f"Name:   {spec.name}" + (" (this machine)" if spec.name == DEFAULT else ""))
        for node, info, error in found:
            click.echo(f"Node:   {node.name} ({node.endpoint})")
            if info is None:
                click.echo(f"  unreachable: {error}")
                continue
            click.echo(f"  {describe(info)}")
            for problem in declared_problems(node, info):
                click.echo(f"  {problem}")
    if any(info is None for _n, info, _e in found):
        raise click.exceptions.Exit(1)


@click.command("worker", hidden=True)
@root_option
def worker_command(root: Path | None) -> None:
    """The node side of a build (started by `polyarch build` over SSH; speaks the node
    protocol on stdin and stdout). Not for interactive use."""
    from polyarch.cli.serve import protocol_streams, serve  # noqa: PLC0415

    with protocol_streams() as (inp, out):
        code = serve(inp, out, root or default_root())
    sys.exit(code)


COMMANDS = (builder_group, worker_command)
