"""Command line: flags become requests, errors become exit codes. The only module that exits.

Exit codes: 0 success, 1 an error polyarch explains, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from polyarch import __version__, doctor
from polyarch.api import (
    ImageSummary,
    IndexSummary,
    RegistryOptions,
    Session,
    build_image,
    default_root,
    git_version,
    local_images,
    machine_platform,
    plan_build,
    read_dockerfile,
)
from polyarch.config import effective, parse_config
from polyarch.errors import PolyarchError, UsageError
from polyarch.oci.models import Descriptor
from polyarch.plan import Plan
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.runtime import binfmt
from polyarch.transfer.location import LayoutLocation


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.pass_context
def cli(
    ctx: click.Context,
    authfile: Path | None,
    insecure: tuple[str, ...],
    certs_dirs: tuple[Path, ...],
) -> None:
    """Build, push and verify multi-platform container images, without a daemon."""
    ctx.obj = RegistryOptions.from_environment(
        authfile=authfile, insecure=insecure, certs_dirs=certs_dirs
    )


def _session(ctx: click.Context) -> Session:
    options = ctx.find_object(RegistryOptions)
    session = Session(options)
    ctx.call_on_close(session.close)
    return session


def _platforms(values: Sequence[str]) -> tuple[Platform, ...]:
    return Platform.parse_list(values)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in
              enumerate(headers)]  # fmt: skip
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _descriptor_json(d: Descriptor) -> dict[str, Any]:
    return d.to_json()


# inspect -------------------------------------------------------------------------------------


@cli.command()
@click.argument("ref")
@click.option("--raw", is_flag=True, help="Print the manifest or index exactly as stored.")
@click.option("--platform", "platform", help="Pick this platform's image from an index.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def inspect(ctx: click.Context, ref: str, raw: bool, platform: str | None, fmt: str) -> None:
    """Show an image or index: REF is a registry reference or oci:DIR[:NAME]."""
    session = _session(ctx)
    want = Platform.parse(platform) if platform else None
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
    if fmt == "json":
        click.echo(json.dumps(_summary_json(result), indent=2))
    elif isinstance(result, IndexSummary):
        click.echo(_index_text(result))
    else:
        click.echo(_image_text(result))


def _summary_json(result: ImageSummary | IndexSummary) -> dict[str, Any]:
    if isinstance(result, IndexSummary):
        return {
            "name": result.location,
            "digest": result.digest,
            "mediaType": result.index.media_type,
            "manifests": [_descriptor_json(d) for d in result.index.manifests],
        }
    config = result.config
    return {
        "name": result.location,
        "digest": result.digest,
        "mediaType": result.manifest.media_type,
        "platform": str(config.platform),
        "config": _descriptor_json(result.manifest.config),
        "layers": [_descriptor_json(d) for d in result.manifest.layers],
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
        rows.append([platform, str(d.digest), _human(d.size), d.media_type])
    head = [
        f"Name:       {result.location}",
        f"Digest:     {result.digest}",
        f"MediaType:  {result.index.media_type}",
        f"Platforms:  {len(result.index.images())}",
        "",
    ]
    return "\n".join(head) + _table(["PLATFORM", "DIGEST", "SIZE", "MEDIA TYPE"], rows)


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
        f"Config:      {manifest.config.digest} ({_human(manifest.config.size)})",
        f"Entrypoint:  {json.dumps(list(config.entrypoint)) if config.entrypoint else '-'}",
        f"Cmd:         {json.dumps(list(config.cmd)) if config.cmd else '-'}",
        f"WorkingDir:  {config.working_dir or '-'}",
        f"User:        {config.user or '-'}",
        f"Ports:       {', '.join(config.exposed_ports) or '-'}",
    ]
    lines += [f"Env:         {e}" for e in config.env] or ["Env:         -"]
    lines += [f"Label:       {k}={v}" for k, v in sorted(config.labels.items())]
    lines += [f"Layers:      {len(manifest.layers)} ({_human(total)} compressed)", ""]
    rows = [[str(i), str(d.digest), _human(d.size), d.media_type]
            for i, d in enumerate(manifest.layers)]  # fmt: skip
    return "\n".join(lines) + _table(["#", "DIGEST", "SIZE", "MEDIA TYPE"], rows)


# copy and index ------------------------------------------------------------------------------


def _report_line(verb: str, report: Any) -> str:
    parts = [f"{verb} {report.name}", f"digest {report.digest}"]
    if report.platforms:
        parts.append("platforms " + ",".join(report.platforms))
    parts.append(
        f"blobs: {report.uploaded} copied ({_human(report.bytes_uploaded)}), "
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
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True)
@click.pass_context
def copy(ctx: click.Context, src: str, dst: str, platforms: tuple[str, ...], jobs: int) -> None:
    """Copy an image or index between registries and OCI layouts (oci:DIR[:NAME])."""
    session = _session(ctx)
    report = session.copy(src, dst, platforms=_platforms(platforms), jobs=jobs)
    click.echo(_report_line("copied to", report))


@cli.group()
def index() -> None:
    """Image indexes (multi-platform images)."""


@index.command("create")
@click.argument("dst")
@click.argument("srcs", nargs=-1, required=True)
@click.option("--annotation", "annotations", multiple=True, metavar="KEY=VALUE")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True)
@click.pass_context
def index_create(
    ctx: click.Context, dst: str, srcs: tuple[str, ...], annotations: tuple[str, ...], jobs: int
) -> None:
    """Assemble one index at DST from single-platform images (and indexes) SRC..."""
    pairs = _pairs(annotations, "--annotation")
    session = _session(ctx)
    report = session.create_index(dst, srcs, annotations=pairs or None, jobs=jobs)
    click.echo(_report_line("index pushed to", report))


# Dockerfile frontend -----------------------------------------------------------------------


def _dockerfile_option(fn: Any) -> Any:
    return click.option(
        "-f",
        "--file",
        "dockerfile",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The Dockerfile (default: CONTEXT/Dockerfile).",
    )(fn)


def _resolve_dockerfile(dockerfile: Path | None, context: Path) -> Path:
    return dockerfile if dockerfile is not None else context / "Dockerfile"


@cli.command("parse")
@_dockerfile_option
@click.option(
    "--format", "fmt", type=click.Choice(["json", "text"]), default="text", show_default=True
)
@click.argument("context", type=click.Path(file_okay=False, path_type=Path), default=".")
def parse_command(dockerfile: Path | None, fmt: str, context: Path) -> None:
    """Show the Dockerfile as BuildKit's parser sees it (checked: errors name file:line)."""
    result, _checked = read_dockerfile(_resolve_dockerfile(dockerfile, context))
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


def _build_args(values: Sequence[str]) -> dict[str, str]:
    """`K=V`, or `K` alone to take the value from the environment (as docker does)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"--build-arg wants KEY=VALUE, got {item!r}")
        if not sep:
            env = os.environ.get(key)
            if env is None:
                continue
            value = env
        out[key] = value
    return out


@cli.command("plan")
@_dockerfile_option
@click.option("--platform", "platforms", multiple=True, help="Target platforms (repeatable or "
              "comma separated). Default: this machine's.")  # fmt: skip
@click.option("--target", help="Build this stage (name or index) instead of the last.")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY[=VALUE]")
@click.option(
    "--build-platform",
    help="Plan as if on a machine of this platform (default: this machine).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.argument("context", type=click.Path(file_okay=False, path_type=Path), default=".")
def plan_command(
    dockerfile: Path | None,
    platforms: tuple[str, ...],
    target: str | None,
    build_args: tuple[str, ...],
    build_platform: str | None,
    fmt: str,
    context: Path,
) -> None:
    """Show what a build would do, without building: each stage, whether it runs once or per
    platform, where it runs (natively or under emulation), its steps, and warnings."""
    plan = plan_build(
        _resolve_dockerfile(dockerfile, context),
        platforms=_platforms(platforms),
        build_args=_build_args(build_args),
        target=target,
        build_platform=Platform.parse(build_platform) if build_platform else None,
    )
    if fmt == "json":
        click.echo(json.dumps(plan.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(plan_text(plan))


def plan_text(plan: Plan) -> str:
    machine = plan.build_platform
    head = (
        f"Plan for {', '.join(str(p) for p in plan.platforms)} "
        f"(target: {plan.target}; this machine: {machine})"
    )
    rows = []
    for inst in plan.stages:
        execs = [plan.ops[k] for k in inst.ops if plan.ops[k].kind == "exec"]
        emulated = [op for op in execs if op.emulated]
        if not execs:
            runs = "-"
        elif emulated:
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
        rows.append([inst.stage, when, str(inst.platform), str(len(inst.ops)), runs])
    lines = [head, "", _table(["STAGE", "RUNS", "ON", "STEPS", "RUN STEPS"], rows), ""]
    for inst in plan.stages:
        label = (
            "once" if len(inst.targets) > 1 or len(plan.platforms) == 1 else str(inst.targets[0])
        )
        lines.append(f"{inst.stage} ({label}, on {inst.platform}):")
        for key in inst.ops:
            op = plan.ops[key]
            mark = " [emulated]" if op.emulated else ""
            lines.append(f"  {key[7:19]}  {op.description}{mark}")
    total_exec = sum(1 for op in plan.ops.values() if op.kind == "exec")
    emulated_exec = sum(1 for op in plan.ops.values() if op.kind == "exec" and op.emulated)
    lines += ["", f"{len(plan.ops)} distinct steps; {total_exec} RUN steps, "
              f"{emulated_exec} of them under emulation"]  # fmt: skip
    if plan.warnings:
        lines += ["", "Warnings:"] + [f"  {w}" for w in plan.warnings]
    return "\n".join(lines)


# build, images, push ------------------------------------------------------------------------


def _root_option(fn: Any) -> Any:
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="POLYARCH_ROOT",
        help="Where polyarch keeps images, layers and cache (default: /var/lib/polyarch as "
        "root, else the user data directory). Two roots are fully isolated.",
    )(fn)


class _Renderer:
    """Progress as lines: `plain` for logs and terminals, `json` (one event per line)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.numbers: dict[str, int] = {}
        self.lock = threading.Lock()  # steps of parallel stages report from their threads

    def __call__(self, event: Any) -> None:
        with self.lock:
            self._show(event)

    def _show(self, event: Any) -> None:
        if self.mode == "json":
            click.echo(json.dumps(event.to_json()), err=True)
            return
        if event.step:
            n = self.numbers.setdefault(event.step, len(self.numbers) + 1)
            where = f"[{event.stage} {event.platform}] " if event.stage else f"[{event.platform}] "
        else:
            n, where = 0, ""
        tag = f"#{n}" if n else "#-"
        if event.kind == "start":
            click.echo(f"{tag} {where}{event.description}", err=True)
        elif event.kind == "cached":
            click.echo(f"{tag} {where}{event.description} CACHED", err=True)
        elif event.kind == "log":
            click.echo(f"{tag} {event.text}", err=True)
        elif event.kind == "done":
            seconds = f" {event.seconds:.1f}s" if event.seconds is not None else ""
            click.echo(f"{tag} DONE{seconds}", err=True)
        elif event.kind == "error":
            click.echo(f"{tag} ERROR {event.text.splitlines()[0]}", err=True)
        else:
            click.echo(f"{tag} {event.text}", err=True)


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _outputs(values: Sequence[str], push: bool) -> list[dict[str, str]]:
    outputs = []
    for item in values:
        spec = dict(part.split("=", 1) for part in item.split(",") if "=" in part)
        kind = spec.get("type")
        if kind not in ("registry", "oci", "docker", "image"):
            raise UsageError(f"--output type must be registry, oci or docker, got {item!r}")
        if kind in ("oci", "docker") and not spec.get("dest"):
            raise UsageError(f"--output type={kind} needs dest=PATH")
        outputs.append(spec)
    if push:
        outputs.append({"type": "registry"})
    return outputs


@cli.command("build")
@_dockerfile_option
@click.option("-t", "--tag", "tags", multiple=True, help="Name the image (repeatable).")
@click.option("--platform", "platforms", multiple=True, help="Target platforms (repeatable or "
              "comma separated). Default: this machine's.")  # fmt: skip
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY[=VALUE]")
@click.option("--target", help="Build this stage (name or index) instead of the last.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.option("--no-cache", is_flag=True, help="Run every step, whatever the cache holds.")
@click.option("--push", is_flag=True, help="Push every tag (same as --output type=registry).")
@click.option("--output", "outputs", multiple=True, metavar="type=registry|oci|docker,dest=...")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=os.cpu_count() or 1)
@click.option("--progress", type=click.Choice(["auto", "tty", "plain", "json"]), default="auto")
@click.option(
    "--build-once",
    "build_once",
    default="auto",
    show_default=True,
    metavar="auto|off|STAGE[,STAGE]",
    help="Run platform-neutral stages once, natively: auto (stages that use no TARGET* value, "
    "checked for native code after running), off (BuildKit's behaviour), or named stages.",
)
@click.option(
    "--ca-certs",
    "ca_certs",
    default="none",
    show_default=True,
    metavar="host|PATH|none",
    help="Make RUN steps trust a CA bundle (host: /etc/ssl/certs/ca-certificates.crt), for "
    "TLS-intercepting proxies. Mounted read-only per step; never in a layer or the config.",
)
@_root_option
@click.argument("context", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.pass_context
def build_command(
    ctx: click.Context,
    dockerfile: Path | None,
    tags: tuple[str, ...],
    platforms: tuple[str, ...],
    build_args: tuple[str, ...],
    target: str | None,
    labels: tuple[str, ...],
    no_cache: bool,
    push: bool,
    outputs: tuple[str, ...],
    jobs: int,
    progress: str,
    build_once: str,
    ca_certs: str,
    root: Path | None,
    context: Path,
) -> None:
    """Build CONTEXT's Dockerfile into an image, kept in the local store (and pushed or
    exported when asked)."""
    session = _session(ctx)
    mode = progress
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    renderer: Any
    if mode == "tty":
        from polyarch.progress_tty import LiveRenderer  # noqa: PLC0415 (rich only for terminals)

        renderer = LiveRenderer()
        ctx.call_on_close(renderer.close)
    else:
        renderer = _Renderer(mode)
    result = build_image(
        session,
        context=context,
        dockerfile=_resolve_dockerfile(dockerfile, context),
        tags=tags,
        platforms=_platforms(platforms),
        build_args=_build_args(build_args),
        target=target,
        labels=_pairs(labels, "--label"),
        no_cache=no_cache,
        outputs=_outputs(outputs, push),
        root=root,
        progress=renderer,
        jobs=jobs,
        build_once=_build_once(build_once),
        ca_certs=_ca_bundle(ca_certs),
    )
    if mode == "tty":
        renderer.close()  # the live view ends before anything else is printed
    click.echo(result)


def _ca_bundle(value: str) -> Path | None:
    if value == "none":
        return None
    path = Path("/etc/ssl/certs/ca-certificates.crt") if value == "host" else Path(value)
    if not path.is_file():
        raise UsageError(f"--ca-certs: no CA bundle at {path}")
    return path


def _build_once(value: str) -> str | frozenset[str]:
    if value in ("auto", "off"):
        return value
    return frozenset(v.strip().lower() for v in value.split(",") if v.strip())


@cli.command("images")
@_root_option
def images_command(root: Path | None) -> None:
    """List the images kept in the local store."""
    rows = [
        [img.name, str(img.descriptor.digest)[:19], ",".join(img.platforms), _human(img.size)]
        for img in local_images(root or default_root())
    ]
    click.echo(_table(["NAME", "DIGEST", "PLATFORMS", "SIZE"], rows))


@cli.command("push")
@click.argument("name")
@click.argument("destination", required=False)
@_root_option
@click.pass_context
def push_command(ctx: click.Context, name: str, destination: str | None, root: Path | None) -> None:
    """Push a locally kept image NAME to its registry (or to DESTINATION)."""
    session = _session(ctx)
    store = (root or default_root()) / "store"
    local = str(Reference.parse(name))  # names are kept in their full form
    report = session.copy(LayoutLocation(str(store), local), destination or local)
    click.echo(_report_line("pushed to", report))


@cli.command("config")
@click.option("--file", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("polyarch.toml"), show_default=True)  # fmt: skip
@click.option("--platform", "platforms", multiple=True)
@click.option("--base-version")
def config_command(config_file: Path, platforms: tuple[str, ...], base_version: str | None) -> None:
    """Print the effective settings and where each comes from (flag, file or default)."""
    text = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    config = parse_config(text, str(config_file))
    flags = {
        "build.platforms": [str(p) for p in _platforms(platforms)],
        "image.base_version": base_version,
    }
    rows = [[key, json.dumps(value), source] for key, value, source in effective(config, flags)]
    click.echo(_table(["KEY", "VALUE", "FROM"], rows))


@cli.command("version")
@click.option("--base-version", default="0.0.0", show_default=True,
              help="Used when no tag contains HEAD: BASE_VERSION-<short sha>.")  # fmt: skip
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
def version_command(base_version: str, directory: Path) -> None:
    """Print the version of the git work tree: the first tag containing HEAD, else
    BASE_VERSION-<7-character sha>; `-dirty` when there are uncommitted changes."""
    click.echo(git_version(directory, base_version))


# emulators and doctor -------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.option(
    "--platform", "platforms", multiple=True, help="Platforms to show (default: common ones)."
)
@click.pass_context
def emulators(ctx: click.Context, platforms: tuple[str, ...]) -> None:
    """Show, per platform: native, emulated (qemu binary, F flag) or missing."""
    if ctx.invoked_subcommand is not None:
        return
    machine = machine_platform()
    wanted = _platforms(platforms) or Platform.parse_list([COMMON_PLATFORMS])
    rows = []
    for platform in wanted:
        status = binfmt.status(platform, machine)
        if status.kind == "native":
            detail = "this machine"
        elif status.handler is not None:
            flag = "F flag" if status.fix_binary else "no F flag: fails in containers"
            detail = f"{status.handler.interpreter} ({flag})"
        else:
            detail = (
                "available: polyarch emulators install"
                if status.available
                else ("apt-get install qemu-user-static")
            )
        rows.append([str(platform), status.kind, detail])
    click.echo(_table(["PLATFORM", "STATE", "DETAIL"], rows))


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
def emulators_install(platforms: tuple[str, ...]) -> None:
    """Mount binfmt_misc if needed and register qemu-user-static handlers with the F flag."""
    machine = machine_platform()
    if not platforms or "all" in platforms:
        wanted = Platform.parse_list([COMMON_PLATFORMS])
    else:
        wanted = _platforms(platforms)
    for line in binfmt.install(list(wanted), machine):
        click.echo(line)


@cli.command("doctor")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="Platforms you build for (default: linux/amd64,linux/arm64).",
)
@click.option(
    "--registry", "hosts", multiple=True, metavar="HOST[:PORT]", help="Registries to check."
)
@_root_option
@click.pass_context
def doctor_command(
    ctx: click.Context, platforms: tuple[str, ...], hosts: tuple[str, ...], root: Path | None
) -> None:
    """Check this machine for building (each problem with its fix); non-zero when something
    needed is missing."""
    machine = machine_platform()
    wanted = _platforms(platforms) or Platform.parse_list(["linux/amd64,linux/arm64"])
    checks = [doctor.kernel(), *doctor.emulation(wanted, machine), doctor.runtime(),
              doctor.overlay(), doctor.namespaces(), doctor.disk(root or default_root()),
              doctor.clock()]  # fmt: skip
    if hosts:
        checks += doctor.registries(hosts, _session(ctx).client)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for check in checks:
        line = f"{marks[check.level]}  {check.name}: {check.detail}"
        if check.fix and check.level != "ok":
            line += f"\n      fix: {check.fix}"
        click.echo(line)
    if any(c.level == "fail" for c in checks):
        raise click.exceptions.Exit(1)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    try:
        # Without standalone mode click returns (not raises) the code of click.exceptions.Exit.
        code = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except PolyarchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
