"""Command line: flags become requests, errors become exit codes. The only module that exits.

Exit codes: 0 success, 1 an error polyarch explains, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from inspect import cleandoc
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from polyarch import __version__, doctor
from polyarch.api import (
    ImageSummary,
    IndexSummary,
    RegistryOptions,
    default_root,
    index_sources,
    local_images,
    machine_platform,
    open_builder,
    plan_build,
    read_dockerfile,
)
from polyarch.attest.intoto import PREDICATE_SLSA02, PREDICATE_SLSA1, PREDICATE_VSA
from polyarch.cli import builders, failure, project
from polyarch.cli.bake import bake_command
from polyarch.cli.common import (
    GlobalOptions,
    Globals,
    descriptor_json,
    dockerfile_option,
    echo_json,
    format_option,
    globals_of,
    human,
    open_session,
    parse_build_args,
    parse_pairs,
    parse_platforms,
    resolve_dockerfile,
    root_option,
    table,
)
from polyarch.cli.diff import diff_command
from polyarch.cli.signing import sign_command
from polyarch.errors import PolyarchError, UsageError
from polyarch.graph.model import BuildGraph, StageInstance, Vertex
from polyarch.graph.ops import BindMount, CacheMount, ExecOp, Mount, SecretMount, SshMount
from polyarch.platform import Platform
from polyarch.runtime import binfmt, userns

if TYPE_CHECKING:
    from polyarch.api import Session
    from polyarch.nodes.farm import Route


@click.group(cls=GlobalOptions, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="polyarch")
@click.option(
    "--authfile",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="REGISTRY_AUTH_FILE",
    help="Registry credentials file (docker config.json format). "
    "Default: $DOCKER_CONFIG/config.json or ~/.docker/config.json.",
)
@click.option(
    "--insecure-registry",
    "insecure",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Allow plain HTTP and unverified TLS for this registry (repeatable). "
    "Loopback registries may always use plain HTTP.",
)
@click.option(
    "--certs-dir",
    "certs_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of per-registry TLS files: DIR/HOST[:PORT]/*.crt (CAs), *.cert + *.key "
    "(client certificate). /etc/containers/certs.d and /etc/docker/certs.d are always read.",
)
@click.option(
    "--idle-timeout",
    "idle_timeout",
    type=click.FloatRange(min=0, min_open=True, max=86400),
    envvar="POLYARCH_IDLE_TIMEOUT",
    metavar="SECONDS",
    help="Fail (and retry) a registry transfer that makes no progress for this long: a server "
    "that stops sending or trickles a byte at a time. Default: 60.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="POLYARCH_CONFIG",
    help="The project config (default: polyarch.toml in the current directory, if any).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_file: Path | None,
    authfile: Path | None,
    insecure: tuple[str, ...],
    certs_dirs: tuple[Path, ...],
    idle_timeout: float | None,
) -> None:
    """Build, push and verify multi-platform container images, without a daemon."""
    if ctx.invoked_subcommand in userns.COMMANDS and userns.needed(sys.argv[1:]):
        # An ordinary user: the same command, as root of a user namespace of its own (the
        # entry point does this before importing the CLI; this is for callers of main()).
        userns.enter([sys.executable, "-m", "polyarch", *sys.argv[1:]])
    ctx.obj = Globals(
        RegistryOptions.from_environment(
            authfile=authfile, insecure=insecure, certs_dirs=certs_dirs,
            idle_timeout=idle_timeout,
        ),
        config_file,
    )  # fmt: skip


@cli.command()
@click.argument("ref")
@click.option("--raw", is_flag=True, help="Print the manifest or index exactly as stored.")
@click.option("--platform", "platform", help="Pick this platform's image from an index.")
@click.option(
    "--sbom",
    "show",
    flag_value="https://spdx.dev/Document",
    help="Print the SBOM (the SPDX document) of each platform's image.",
)
@click.option(
    "--provenance",
    "show",
    flag_value="provenance",
    help="Print the SLSA provenance of each platform's image.",
)
@click.option(
    "--verification",
    "show",
    flag_value=PREDICATE_VSA,
    help="Print the verification summaries `verify --attest` attached.",
)
@format_option
@click.pass_context
def inspect(
    ctx: click.Context, ref: str, raw: bool, platform: str | None, show: str | None, fmt: str
) -> None:
    """Show an image or index: REF is a registry reference or oci:DIR[:NAME]. An index's
    attestations are listed (type, predicate, subject)."""
    session = open_session(ctx)
    want = Platform.parse(platform) if platform else None
    if show is not None:
        click.echo(json.dumps(_predicates(session, ref, show, want), indent=2))
        return
    if raw:
        if want is None:
            _source, document, _digest = session.fetch(ref)
            sys.stdout.buffer.write(document.raw)
        else:
            summary = session.inspect(ref, want)
            assert isinstance(summary, ImageSummary)
            sys.stdout.buffer.write(summary.manifest.raw)
        sys.stdout.buffer.flush()
        return
    result = session.inspect(ref, want)
    attached = session.attestations(ref) if isinstance(result, IndexSummary) else []
    if fmt == "json":
        shown = _summary_json(result)
        if attached:
            shown["attestations"] = [
                {"platform": str(a.platform) if a.platform else None, "subject": a.subject,
                 "predicateType": a.predicate_type, "digest": a.digest, "size": a.size}
                for a in attached]  # fmt: skip
        click.echo(json.dumps(shown, indent=2))
    elif isinstance(result, IndexSummary):
        click.echo(_index_text(result))
        if attached:
            rows = [[str(a.platform or "-"), a.predicate_type, a.subject[:19], human(a.size)]
                    for a in attached]  # fmt: skip
            click.echo(
                "\nAttestations:\n" + table(["PLATFORM", "PREDICATE TYPE", "SUBJECT", "SIZE"], rows)
            )
    else:
        click.echo(_image_text(result))


def _predicates(session: Session, ref: str, kind: str, platform: Platform | None) -> Any:
    """The predicates of one kind attached to the image's platforms: one platform's alone,
    several by platform (as `buildx imagetools inspect --format '{{json .SBOM}}'`)."""
    types = {"provenance": (PREDICATE_SLSA1, PREDICATE_SLSA02)}.get(kind, (kind,))
    found: dict[str, list[Any]] = {}
    for item in session.attestations(ref, read=types, platform=platform):
        if item.statement is not None and item.predicate_type in types:
            found.setdefault(str(item.platform or item.subject), []).append(
                item.statement.get("predicate"))  # fmt: skip
    if not found:
        what = {"provenance": "provenance", PREDICATE_VSA: "verification summary"}.get(
            kind, "SBOM")  # fmt: skip
        where = f" for {platform}" if platform else ""
        raise UsageError(f"{ref} carries no {what}{where}")
    values = {k: v[0] if len(v) == 1 else v for k, v in found.items()}
    return next(iter(values.values())) if len(values) == 1 else values


def _summary_json(result: ImageSummary | IndexSummary) -> dict[str, Any]:
    if isinstance(result, IndexSummary):
        return {
            "name": result.location,
            "digest": result.digest,
            "mediaType": result.index.media_type,
            "manifests": [descriptor_json(d) for d in result.index.manifests],
        }
    config = result.config
    return {
        "name": result.location,
        "digest": result.digest,
        "mediaType": result.manifest.media_type,
        "platform": str(config.platform),
        "config": descriptor_json(result.manifest.config),
        "layers": [descriptor_json(d) for d in result.manifest.layers],
        "created": config.created,
        "entrypoint": config.entrypoint,
        "cmd": config.cmd,
        "env": list(config.env),
        "workingDir": config.working_dir,
        "user": config.user,
        "labels": dict(config.labels),
        "exposedPorts": list(config.exposed_ports),
    }


def _index_text(result: IndexSummary) -> str:
    rows = []
    for d in result.index.manifests:
        if d.is_attestation:
            kind = d.annotations.get("vnd.docker.reference.type", "attestation")
            target = d.annotations.get("vnd.docker.reference.digest", "")
            platform = f"({kind} for {target[7:19]})" if target else f"({kind})"
        else:
            platform = str(d.platform) if d.platform else "-"
        rows.append([platform, str(d.digest), human(d.size), d.media_type])
    head = [
        f"Name:       {result.location}",
        f"Digest:     {result.digest}",
        f"MediaType:  {result.index.media_type}",
        f"Platforms:  {len(result.index.images())}",
        "",
    ]
    return "\n".join(head) + table(["PLATFORM", "DIGEST", "SIZE", "MEDIA TYPE"], rows)


def _image_text(result: ImageSummary) -> str:
    config = result.config
    manifest = result.manifest
    total = sum(d.size for d in manifest.layers)
    lines = [
        f"Name:        {result.location}",
        f"Digest:      {result.digest}",
        f"MediaType:   {manifest.media_type}",
        f"Platform:    {config.platform}",
        f"Created:     {config.created or '-'}",
        f"Config:      {manifest.config.digest} ({human(manifest.config.size)})",
        f"Entrypoint:  {json.dumps(list(config.entrypoint)) if config.entrypoint else '-'}",
        f"Cmd:         {json.dumps(list(config.cmd)) if config.cmd else '-'}",
        f"WorkingDir:  {config.working_dir or '-'}",
        f"User:        {config.user or '-'}",
        f"Ports:       {', '.join(config.exposed_ports) or '-'}",
    ]
    lines += [f"Env:         {e}" for e in config.env] or ["Env:         -"]
    lines += [f"Label:       {k}={v}" for k, v in sorted(config.labels.items())]
    lines += [f"Layers:      {len(manifest.layers)} ({human(total)} compressed)", ""]
    rows = [[str(i), str(d.digest), human(d.size), d.media_type]
            for i, d in enumerate(manifest.layers)]  # fmt: skip
    return "\n".join(lines) + table(["#", "DIGEST", "SIZE", "MEDIA TYPE"], rows)


# copy and index ------------------------------------------------------------------------------


def _report_line(verb: str, report: Any) -> str:
    parts = [f"{verb} {report.name}", f"digest {report.digest}"]
    if report.platforms:
        parts.append("platforms " + ",".join(report.platforms))
    parts.append(
        f"blobs: {report.uploaded} copied ({human(report.bytes_uploaded)}), "
        f"{report.mounted} mounted, {report.existing} already there"
    )
    return "; ".join(parts)


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="Copy only these platforms (repeatable or comma separated). Default: all.",
)
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Blobs copied at once.")  # fmt: skip
@click.pass_context
def copy(ctx: click.Context, src: str, dst: str, platforms: tuple[str, ...], jobs: int) -> None:
    """Copy an image or index between registries and OCI layouts (oci:DIR[:NAME])."""
    session = open_session(ctx)
    report = session.copy(src, dst, platforms=parse_platforms(platforms), jobs=jobs)
    click.echo(_report_line("copied to", report))


@cli.group()
def index() -> None:
    """Image indexes (multi-platform images)."""


@index.command("create")
@click.argument("dst")
@click.argument("srcs", nargs=-1)
@click.option("--from-metadata", "metadata", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Add the image a build's --metadata-file names (repeatable): the CI-matrix "
              "path, one runner per platform building with push-by-digest.")  # fmt: skip
@click.option("--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              help="An annotation on the index (repeatable).")  # fmt: skip
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Blobs copied at once.")  # fmt: skip
@click.pass_context
def index_create(
    ctx: click.Context,
    dst: str,
    srcs: tuple[str, ...],
    metadata: tuple[Path, ...],
    annotations: tuple[str, ...],
    jobs: int,
) -> None:
    """Assemble one index at DST from single-platform images (and indexes) SRC...

    A SRC is a reference, oci:DIR[:NAME], or a bare sha256:... digest in DST's repository.

    \b
    Example (after one `polyarch build --platform P -o type=registry,name=REPO,push-by-digest=true
    --metadata-file P.json` per runner):
      polyarch index create REPO:1.2.3 --from-metadata amd64.json --from-metadata arm64.json
    """
    pairs = parse_pairs(annotations, "--annotation")
    sources = index_sources(dst, srcs, metadata)
    session = open_session(ctx)
    report = session.create_index(dst, sources, annotations=pairs or None, jobs=jobs)
    click.echo(_report_line("index pushed to", report))


# Dockerfile frontend -----------------------------------------------------------------------


@cli.command("parse")
@dockerfile_option
@format_option
@click.argument("context", type=click.Path(file_okay=False, path_type=Path), default=".")
def parse_command(dockerfile: Path | None, fmt: str, context: Path) -> None:
    """Show the Dockerfile as BuildKit's parser sees it (checked: errors name file:line)."""
    result, _checked = read_dockerfile(resolve_dockerfile(dockerfile, context))
    if fmt == "json":
        click.echo(json.dumps([n.to_json() for n in result.nodes], indent=2, ensure_ascii=False))
        return
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    for node in result.nodes:
        lines = f"{node.start_line}" + (
            f"-{node.end_line}" if node.end_line != node.start_line else ""
        )
        shown = node.sub if node.sub is not None else node
        head = node.cmd + (f" {node.sub_cmd}" if node.sub_cmd else "")
        flags = " ".join(shown.flags)
        form = "exec" if shown.json else "shell"
        values = json.dumps(list(shown.value), ensure_ascii=False)
        click.echo(f"{lines:>7}  {head:<12} {form:<5} {flags + ' ' if flags else ''}{values}")
        for doc in node.heredocs or (node.sub.heredocs if node.sub else ()):
            click.echo(f"{'':>7}  <<{doc.name} (fd {doc.file_descriptor}, "
                       f"{len(doc.content)} bytes)")  # fmt: skip


@cli.command("plan")
@dockerfile_option
@click.option("--platform", "platforms", multiple=True, help="Target platforms (repeatable or "
              "comma separated). Default: build.platforms in polyarch.toml, else this "
              "machine's.")  # fmt: skip
@click.option("--target", help="Build this stage (name or index) instead of the last.")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY[=VALUE]",
              help="Added to (and overriding) build.args in polyarch.toml.")  # fmt: skip
@click.option(
    "--build-platform",
    help="Plan as if on a machine of this platform (default: this machine).",
)
@format_option
@click.option("--builder", metavar="NAME", help="Show which of this builder's nodes builds "
              "each platform (default: build.builder, else the current builder).")  # fmt: skip
@click.argument("context", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.pass_context
def plan_command(  # noqa: PLR0913 (a click command: one parameter per flag)
    ctx: click.Context,
    dockerfile: Path | None,
    platforms: tuple[str, ...],
    target: str | None,
    build_args: tuple[str, ...],
    build_platform: str | None,
    fmt: str,
    context: Path,
    builder: str | None,
) -> None:
    """Show what a build would do, without building: each stage, whether it runs once or per
    platform, where it runs (natively or under emulation), its steps, and warnings. With a
    builder that has nodes, which node builds each platform and why (the nodes are asked)."""
    project = globals_of(ctx).project()
    args = dict(project.get("build.args"))
    args.update(parse_build_args(build_args))
    dockerfile_path = resolve_dockerfile(dockerfile, context)
    plan = plan_build(
        dockerfile_path,
        platforms=parse_platforms(platforms) or project.platforms,
        build_args=args,
        target=target or project.get("build.target") or None,
        build_platform=Platform.parse(build_platform) if build_platform else None,
    )
    routes = _routes(builder or project.get("build.builder") or None, plan.platforms)
    sent: list[str] = []
    if any(r.node is not None for r in routes):
        from polyarch.build import shared_stages  # noqa: PLC0415

        sent = sorted(shared_stages(plan, read_dockerfile(dockerfile_path)[1]))
    if fmt == "json":
        data = plan.to_json()
        if routes:
            data["routes"] = [{"platform": str(r.platform), "where": r.where, "why": r.why,
                               "node": r.node.name if r.node else None, "native": r.native}
                              for r in routes]  # fmt: skip
            data["sent_to_nodes"] = sent
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(plan_text(plan, routes))
        if routes:
            click.echo("\nRouting (builder nodes):")
            for route in routes:
                click.echo(f"  {route.platform}: {route.where} ({route.why})")
        if sent:
            click.echo(f"  build-once stages run here and are sent to the nodes: "
                       f"{', '.join(sent)} (unless found to make native code)")  # fmt: skip


def _node_checks(builder: str) -> list[doctor.Check]:
    from polyarch.nodes.builders import BuilderStore  # noqa: PLC0415

    out = []
    for node, info, error in builders.inspect_nodes(BuilderStore().get(builder)):
        name = f"node {node.name} ({node.endpoint})"
        if info is None:
            said = error.removeprefix(name).lstrip(": ") or error  # the check names the node
            out.append(doctor.Check(name, "fail", said, "check SSH to it (ssh -o BatchMode=yes "
                                    "HOST polyarch --version) and that polyarch is installed "
                                    "there (--node-command)"))  # fmt: skip
        elif problems := builders.declared_problems(node, info):
            fix = (
                "declare only what the node runs natively (builder rm, then builder create "
                "with those --platform values), or none to take what it reports"
            )
            detail = "; ".join([builders.describe(info), *problems])
            out.append(doctor.Check(name, "warn", detail, fix))
        else:
            out.append(doctor.Check(name, "ok", builders.describe(info)))
    return out


def _routes(builder: str | None, platforms: Sequence[Platform]) -> list[Route]:
    notes: list[str] = []
    opened = open_builder(builder, platforms, lambda event: notes.append(event.text))
    if opened is None:
        return []
    farm, routes = opened
    farm.close()
    for note in notes:
        click.echo(f"note: {note}", err=True)
    return routes


def _on_node(inst: StageInstance, routes: Sequence[Route]) -> Route | None:
    """The route that sends `inst` to a node (its one target's platform is built there), or
    None when it runs here (build-once stages always do)."""
    if inst.mode == "build-once" or len(inst.targets) != 1:
        return None
    return next((r for r in routes if r.node is not None and r.platform == inst.targets[0]), None)


def _emulated_on(plan: BuildGraph, inst: StageInstance, route: Route | None) -> bool | None:
    """Whether `inst`'s RUN steps run under emulation where they run: here, as planned; on a
    node, as the node reports (a stage on $BUILDPLATFORM runs on the node's own platform)."""
    if route is None:
        return None
    return not route.native and inst.platform != plan.build_platform


def plan_text(plan: BuildGraph, routes: Sequence[Route] = ()) -> str:
    """The plan as a table and each stage's steps; with routes, the stages a node builds say
    so (and whether they run natively there), as the Routing section does."""
    head = (
        f"Plan for {', '.join(str(p) for p in plan.platforms)} "
        f"(target: {plan.target}; this machine: {plan.build_platform})"
    )
    rows = [_stage_row(plan, inst, routes) for inst in plan.stages]
    lines = [head, "", table(["STAGE", "RUNS", "ON", "STEPS", "RUN STEPS"], rows), ""]
    for inst in plan.stages:
        lines += _stage_steps(plan, inst, routes)
    lines += _cache_mounts(plan)
    steps = plan.steps()
    execs = [v for v in steps if v.kind == "exec"]
    lines += ["", f"{len(steps)} distinct filesystem steps; {len(execs)} RUN steps, "
              f"{_emulated_count(plan, execs, routes)} of them under emulation"]  # fmt: skip
    if plan.warnings:
        lines += ["", "Warnings:"] + [f"  {w}" for w in plan.warnings]
    return "\n".join(lines)


def _stage_row(plan: BuildGraph, inst: StageInstance, routes: Sequence[Route]) -> list[str]:
    """A stage's row of the plan's table: where and how often it runs, and its RUN steps."""
    execs = [plan.vertices[k] for k in inst.vertices if plan.vertices[k].kind == "exec"]
    route = _on_node(inst, routes)
    if not execs:
        runs = "-"
    elif route is not None and route.node is not None:
        how = "emulated" if _emulated_on(plan, inst, route) else "native"
        runs = f"{len(execs)} {how} on node {route.node.name}"
    elif any(v.emulated for v in execs):
        runs = f"{len(execs)} emulated (qemu-{inst.platform.qemu_name})"
    else:
        runs = f"{len(execs)} native"
    when = (
        f"once for {len(inst.targets)} targets"
        if len(inst.targets) > 1
        else ("once" if len(plan.platforms) == 1 else f"for {inst.targets[0]}")
    )
    if inst.mode == "build-once":
        when += " (build-once)"
    return [inst.stage, when, str(inst.platform), str(len(inst.steps)), runs]


def _stage_steps(plan: BuildGraph, inst: StageInstance, routes: Sequence[Route]) -> list[str]:
    """A stage's steps, each with its key, [emulated] where it runs under emulation, and a
    RUN's mounts."""
    label = "once" if len(inst.targets) > 1 or len(plan.platforms) == 1 else str(inst.targets[0])
    route = _on_node(inst, routes)
    where = f", node {route.node.name}" if route is not None and route.node else ""
    lines = [f"{inst.stage} ({label}, on {inst.platform}{where}):"]
    on_node = _emulated_on(plan, inst, route)
    for step in inst.steps:
        vertex = plan.vertices[step.vertex] if step.vertex else None
        emulated_here = vertex is not None and vertex.emulated
        mark = " [emulated]" if (emulated_here if on_node is None else on_node) else ""
        if vertex is None or vertex.kind != "exec":
            mark = ""
        key = step.vertex[7:19] if step.vertex else " " * 12
        lines.append(f"  {key}  {step.description}{mark}")
        is_run = step.description.startswith("RUN")
        if is_run and vertex is not None and isinstance(vertex.op, ExecOp) and vertex.op.mounts:
            shown = ", ".join(_mount_text(m) for m in vertex.op.mounts)
            lines.append(f"  {'':12}    mounts: {shown}")
    return lines


def _cache_mounts(plan: BuildGraph) -> list[str]:
    caches: dict[str, list[str]] = {}
    for vertex in plan.vertices.values():
        if isinstance(vertex.op, ExecOp):
            for mount in vertex.op.mounts:
                if isinstance(mount, CacheMount):
                    caches.setdefault(mount.id, []).append(str(vertex.platform))
    if not caches:
        return []
    lines = ["", "Cache mounts (kept across builds; one directory per id, as in BuildKit):"]
    for cache_id, users in sorted(caches.items()):
        on = sorted(set(users))
        who = f"shared by {', '.join(on)}" if len(on) > 1 else f"on {on[0]}"
        count = f"{len(users)} step{'s' if len(users) > 1 else ''}"
        lines.append(f"  {cache_id}: {count}, {who}")
    return lines


def _emulated_count(plan: BuildGraph, execs: Sequence[Vertex], routes: Sequence[Route]) -> int:
    """How many RUN steps run under emulation: a step of a stage a node builds runs as the
    node runs it."""
    if not routes:
        return sum(1 for v in execs if v.emulated)
    where_emulated: dict[str, bool] = {}
    for inst in plan.stages:
        on_node = _emulated_on(plan, inst, _on_node(inst, routes))
        for key in inst.vertices:
            vertex = plan.vertices[key]
            if vertex.kind == "exec":
                here = vertex.emulated if on_node is None else on_node
                where_emulated[key] = where_emulated.get(key, False) or here
    return sum(where_emulated.values())


def _mount_text(mount: Mount) -> str:
    if isinstance(mount, CacheMount):
        named = f" id={mount.id}" if mount.id != mount.target else ""
        return f"cache {mount.target}{named} ({mount.sharing})"
    if isinstance(mount, BindMount):
        return f"bind {mount.target}" + (" (rw)" if mount.readwrite else "")
    if isinstance(mount, SecretMount):
        return f"secret {mount.id}" + (" (required)" if mount.required else "")
    if isinstance(mount, SshMount):
        return f"ssh {mount.id}" + (" (required)" if mount.required else "")
    return f"tmpfs {mount.target}"


# build, images, push ------------------------------------------------------------------------


@cli.command("images")
@root_option
@format_option
def images_command(root: Path | None, fmt: str) -> None:
    """List the images kept in the local store."""
    if fmt == "json":
        echo_json([{"name": img.name, "digest": str(img.descriptor.digest),
                    "mediaType": img.descriptor.media_type, "platforms": list(img.platforms),
                    "size": img.size} for img in local_images(root or default_root())])  # fmt: skip
        return
    rows = [
        [img.name, str(img.descriptor.digest)[:19], ",".join(img.platforms), human(img.size)]
        for img in local_images(root or default_root())
    ]
    click.echo(table(["NAME", "DIGEST", "PLATFORMS", "SIZE"], rows))


# emulators and doctor -------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.option(
    "--platform", "platforms", multiple=True, help="Platforms to show (default: common ones)."
)
@format_option
@click.pass_context
def emulators(ctx: click.Context, platforms: tuple[str, ...], fmt: str) -> None:
    """Show, per platform: native, emulated (qemu binary, F flag), missing, or unsupported
    (no emulator runs it here: another OS)."""
    if ctx.invoked_subcommand is not None:
        return
    machine = machine_platform()
    wanted = parse_platforms(platforms) or Platform.parse_list([COMMON_PLATFORMS])
    rows = []
    found = []
    for platform in wanted:
        status = binfmt.status(platform, machine)
        found.append({"platform": str(platform), "state": status.kind,
                      "interpreter": status.handler.interpreter if status.handler else None,
                      "fix_binary": status.fix_binary,
                      "installable": status.available is not None})  # fmt: skip
        if status.kind == "native":
            detail = "this machine" if platform == machine else f"this {machine} machine"
        elif status.kind == "unsupported":
            detail = (f"QEMU's user mode runs Linux programs only (RUN steps need a "
                      f"{platform.os} machine)")  # fmt: skip
        elif status.handler is not None and status.handler.enabled:
            flag = "F flag" if status.fix_binary else "no F flag: fails in containers"
            detail = f"{status.handler.interpreter} ({flag})"
        elif status.available:
            detail = f"available: polyarch emulators install --platform {platform}"
        elif binfmt.formats():
            detail = f"qemu-user-static has no emulator for {platform.architecture}"
        else:
            detail = "apt-get install qemu-user-static"
        rows.append([str(platform), status.kind, detail])
    if fmt == "json":
        echo_json(found)
        return
    click.echo(table(["PLATFORM", "STATE", "DETAIL"], rows))


COMMON_PLATFORMS = ",".join(
    [
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/386",
        "linux/ppc64le",
        "linux/s390x",
        "linux/riscv64",
    ]
)


@emulators.command("install")
@click.option("--platform", "platforms", multiple=True, help="Platforms, or `all` (default: all).")
@click.option(
    "--persist",
    is_flag=True,
    help="Also have them registered at every boot: "
    "written to /etc/binfmt.d (F flag) for systemd-binfmt, unless a binfmt.d "
    "file registers them with the F flag already (as qemu-user-static's do).",
)
def emulators_install(platforms: tuple[str, ...], persist: bool) -> None:
    """Mount binfmt_misc if needed and register qemu-user-static handlers with the F flag.
    The kernel forgets them at reboot: --persist, or a build run as root, registers them
    again."""
    machine = machine_platform()
    if not platforms or "all" in platforms:
        wanted = [p for p in Platform.parse_list([COMMON_PLATFORMS])
                  if binfmt.status(p, machine).kind != "native"]  # fmt: skip
    else:
        wanted = list(parse_platforms(platforms))
    for line in binfmt.install(wanted, machine, persist=binfmt.BOOT_DIRS if persist else ()):
        click.echo(line)


@cli.command("doctor")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="Platforms you build for (default: build.platforms in polyarch.toml, else "
    "linux/amd64,linux/arm64).",
)
@click.option(
    "--registry",
    "hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Registries to check (default: image.registry in polyarch.toml).",
)
@click.option("--builder", metavar="NAME", help="Also reach every node of this builder.")
@root_option
@format_option
@click.pass_context
def doctor_command(
    ctx: click.Context,
    platforms: tuple[str, ...],
    hosts: tuple[str, ...],
    builder: str | None,
    root: Path | None,
    fmt: str,
) -> None:
    """Check this machine for building (each problem with its fix); non-zero when something
    needed is missing."""
    machine = machine_platform()
    project = globals_of(ctx).project()
    wanted = (parse_platforms(platforms) or project.platforms
              or Platform.parse_list(["linux/amd64,linux/arm64"]))  # fmt: skip
    if not hosts and project.get("image.registry"):
        hosts = (project.get("image.registry"),)
    checks = [doctor.kernel(), *doctor.emulation(wanted, machine), doctor.runtime(),
              doctor.init(), doctor.overlay(), doctor.namespaces(),
              doctor.disk(root or default_root()), doctor.clock()]  # fmt: skip
    if hosts:
        checks += doctor.registries(hosts, open_session(ctx).client)
    if builder:
        checks += _node_checks(builder)
    if fmt == "json":
        echo_json([dataclasses.asdict(check) for check in checks])
        if any(c.level == "fail" for c in checks):
            raise click.exceptions.Exit(1)
        return
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for check in checks:
        line = f"{marks[check.level]}  {check.name}: {check.detail}"
        if check.fix and check.level != "ok":
            line += f"\n      fix: {check.fix}"
        click.echo(line)
    if any(c.level == "fail" for c in checks):
        raise click.exceptions.Exit(1)


for _command in (*project.COMMANDS, *builders.COMMANDS, diff_command, bake_command, sign_command):
    cli.add_command(_command)

# An example for each command that has none in its docstring, shown by --help.
EXAMPLES = {
    "release": "polyarch release --platform linux/amd64,linux/arm64   # build, push, verify, tag",
    "verify": "polyarch verify --http 80/~Welcome registry.lan/app:1.2.0",
    "push": "polyarch push registry.lan/app:1.2.0",
    "clean": "polyarch clean registry.lan/app",
    "du": "polyarch du --verbose",
    "prune": "polyarch prune --filter until=24h --keep-storage 10GB",
    "config": "polyarch config --format json",
    "version": "polyarch version --base-version 1.1.0 .",
    "images": "polyarch images --format json",
    "inspect": "polyarch inspect --platform linux/arm64 registry.lan/app:1.2.0",
    "copy": "polyarch copy registry.lan/app:1.2.0 oci:./app-layout:1.2.0",
    "emulators": "polyarch emulators --platform linux/arm64,linux/s390x",
    "emulators install": "polyarch emulators install --platform linux/arm64",
    "doctor": "polyarch doctor --platform linux/amd64,linux/arm64 --registry registry.lan",
    "plan": "polyarch plan --platform linux/amd64,linux/arm64 .",
    "parse": "polyarch parse --format json .",
    "builder ls": "polyarch builder ls",
    "builder use": "polyarch builder use farm",
    "builder rm": "polyarch builder rm farm",
    "builder inspect": "polyarch builder inspect farm",
}


def _with_examples(group: click.Group, prefix: str = "") -> None:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        example = EXAMPLES.get(path)
        if example and command.help and "Example" not in command.help:
            text = cleandoc(command.help)
            command.help = f"{text}\n\n\b\nExample:\n  {example}"
        if isinstance(command, click.Group):
            _with_examples(command, f"{path} ")


_with_examples(cli)


def _terminated(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a build as Ctrl-C does: steps killed, no debris


def _interrupted() -> NoReturn:
    if failure.state.json_progress:
        click.echo(failure.fatal_json(KeyboardInterrupt("interrupted"), 130), err=True)
    else:
        click.echo("interrupted", err=True)
    sys.stderr.flush()
    sys.stdout.flush()
    # Running steps were told to stop and given a moment; a download still in a thread is
    # abandoned (its half-written blob is cleared by the next command), not waited for; the
    # processes that unpack layers end with this one.
    snapshots = sys.modules.get("polyarch.worker.local.snapshots")
    if snapshots is not None:
        snapshots.stop_workers()
    os._exit(130)


def _internal_error(exc: BaseException) -> NoReturn:
    """An exception polyarch did not expect: one line, the details in a log file."""
    detail = "".join(traceback.format_exception(exc))
    try:
        logs = Path(tempfile.gettempdir()) / "polyarch-errors"
        logs.mkdir(mode=0o700, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=logs, prefix="internal-", suffix=".log")
        with os.fdopen(fd, "w") as log:
            log.write(f"polyarch {__version__}: {' '.join(sys.argv)}\n{detail}")
        where = f"details in {name}"
    except OSError:
        where = "no log could be written"
    line = f"internal error: {exc.__class__.__name__}: {exc} ({where}; please report it)"
    if failure.state.json_progress:
        click.echo(failure.fatal_json(RuntimeError(line), 70), err=True)
    else:
        click.echo(line, err=True)
    sys.exit(70)


def _failed(exc: PolyarchError, status: int) -> NoReturn:
    if failure.state.json_progress:
        click.echo(failure.fatal_json(exc, status), err=True)
    else:
        click.echo("\n".join(failure.text_lines(exc)), err=True)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        # Without standalone mode click returns (not raises) the code of click.exceptions.Exit.
        code = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # click turns EOFError into Abort
            click.echo(f"error: unexpected end of data ({exc.__cause__})", err=True)
            sys.exit(1)
        _interrupted()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UsageError as exc:
        _failed(exc, 2)
    except PolyarchError as exc:
        _failed(exc, 1)
    except KeyboardInterrupt:
        _interrupted()
    except BrokenPipeError:
        # Whoever read the output went away (`polyarch images | head -1`): nothing more to
        # say, and nowhere to say it; as a shell's pipeline expects, no traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.dup2(devnull, sys.stderr.fileno())
        sys.exit(141)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            where = f" writing {exc.filename}" if exc.filename else ""
            click.echo(f"error: no space left on the device{where}: free some space (polyarch "
                       "clean) and try again", err=True)  # fmt: skip
            sys.exit(1)
        _internal_error(exc)
    except Exception as exc:
        _internal_error(exc)
    sys.exit(0)
