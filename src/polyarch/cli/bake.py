"""`polyarch bake [TARGET|GROUP ...]`: many images from one file, as `docker buildx bake`."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from polyarch.api import machine_platform
from polyarch.bake.definition import BakeError, Resolved, parse_overrides, read_targets
from polyarch.bake.files import load as load_definition
from polyarch.bake.files import read_files
from polyarch.cli import failure
from polyarch.cli.common import (
    globals_of,
    open_session,
    parse_platforms,
    result_file_option,
    root_option,
    write_result,
)

if TYPE_CHECKING:
    from polyarch.bake.run import BakeSettings


@click.command("bake")
@click.argument("targets", nargs=-1)
@click.option("-f", "--file", "files", multiple=True, metavar="FILE",
              help="A bake file (repeatable; - for stdin). Default: compose.yaml, compose.yml, "
              "docker-compose.yml, docker-compose.yaml, docker-bake.json, docker-bake.hcl and "
              "their .override files found here, merged in that order.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="TARGET.KEY=VALUE",
              help="Override a target's attribute (repeatable; TARGET may be a pattern, "
              "KEY+=VALUE appends), as buildx does: args.NAME, tags, platform, output, "
              "cache-from, cache-to, secrets, ssh, context, dockerfile, target, no-cache, "
              "push, load, ...")  # fmt: skip
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a variable of the bake file (over the environment).",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the resolved definition as JSON and build nothing.",
)
@click.option(
    "--list",
    "list_what",
    metavar="targets|variables",
    help="List the targets (and groups) or the variables, and build nothing.",
)
@click.option("--push", is_flag=True, help="Push every target's image (*.push=true).")
@click.option("--load", is_flag=True, help="Load every target's image into the local Docker "
              "engine (*.load=true).")  # fmt: skip
@click.option(
    "--no-cache",
    "no_cache",
    is_flag=True,
    default=None,
    help="Run every step of every target (*.no-cache=true).",
)
@click.option("--pull", is_flag=True, help="Accepted: base images are always re-resolved.")
@click.option("--check", is_flag=True, help="Run the build checks of every target instead of "
              "building (*.call=check).")  # fmt: skip
@click.option("--call", "call", metavar="build|check", help="What to do with each target "
              "(*.call=...).")  # fmt: skip
@click.option("--allow", "allow", multiple=True, metavar="ENTITLEMENT",
              help="Grant fs.read=PATH, fs.write=PATH, fs=PATH (* for any), network.host or "
              "security.insecure, which the definition asks for.")  # fmt: skip
@result_file_option("--metadata-file", "Write each target's build result as JSON, by target name.")
@click.option("--progress", type=click.Choice(["auto", "tty", "plain", "json", "rawjson",
                                               "quiet", "none"]), default="auto",
              envvar="BUILDKIT_PROGRESS", help="How to show the builds.")  # fmt: skip
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 64),
    default=os.cpu_count() or 1,
    help="Steps run at once, over all targets.",
)
@click.option("--builder", metavar="NAME", help="Build on this builder's nodes.")
@click.option("--provenance", hidden=True, callback=lambda _c, _p, v: _no_attest(v, "provenance"),
              expose_value=False)  # fmt: skip
@click.option("--sbom", hidden=True, callback=lambda _c, _p, v: _no_attest(v, "sbom"),
              expose_value=False)  # fmt: skip
@root_option
@click.pass_context
def bake_command(  # noqa: PLR0913 (a click command: one parameter per flag)
    ctx: click.Context,
    targets: tuple[str, ...],
    files: tuple[str, ...],
    overrides: tuple[str, ...],
    variables: tuple[str, ...],
    print_only: bool,
    list_what: str | None,
    push: bool,
    load: bool,
    no_cache: bool | None,
    pull: bool,
    check: bool,
    call: str | None,
    allow: tuple[str, ...],
    metadata_file: Path | None,
    progress: str,
    jobs: int,
    builder: str | None,
    root: Path | None,
) -> None:
    """Build the targets (and groups) of a bake file side by side, as `docker buildx bake`
    does: docker-bake.hcl, docker-bake.json, or the build sections of a Compose file, with
    variables, functions, inherits, matrix, target: contexts, --set and --print. Targets share
    one build session: the cache, and the steps they have in common, run once.

    \b
    Example:
      polyarch bake --print
      polyarch bake --set '*.platform=linux/amd64,linux/arm64' --push app worker
    """
    from polyarch.bake.run import bake  # noqa: PLC0415 (the engine only here)

    if print_only and list_what:
        raise click.UsageError("--print and --list are mutually exclusive")
    extra = list(overrides)
    if push:
        extra.append("*.push=true")
    if load:
        extra.append("*.load=true")
    function = "check" if check and not call else call
    if function:
        extra.append(f"*.call={function}")
    if no_cache is not None:
        extra.append(f"*.no-cache={str(no_cache).lower()}")
    if pull:
        click.echo("note: --pull: base images are always re-resolved from their registry",
                   err=True)  # fmt: skip
    definition = bake_definition(ctx, files, targets, extra, variables, allow, list_what)
    if definition is None:
        return
    resolved, settings = definition
    if print_only:
        click.echo(resolved.print_json())
        return
    from polyarch.cli.project import _renderer  # noqa: PLC0415

    renderer, mode = _renderer(ctx, progress)
    settings = dataclasses.replace(settings, root=root, jobs=jobs, builder=builder)
    outcome = "FAILED"
    try:
        results = bake(open_session(ctx), resolved, settings, progress=renderer)
        outcome = "FINISHED"
    except KeyboardInterrupt:
        outcome = "CANCELED"
        raise
    finally:
        if mode == "tty":
            renderer.close(outcome)
    _report(results, metadata_file)


def bake_definition(
    ctx: click.Context,
    files: Sequence[str],
    targets: Sequence[str],
    overrides: Sequence[str],
    variables: Sequence[str],
    allow: Sequence[str],
    list_what: str | None = None,
) -> tuple[Resolved, BakeSettings] | None:
    """The resolved definition and the settings to build it: the files named, else the
    project's `[bake] files` (relative to polyarch.toml, which is then the working directory),
    else the default files here. None when `--list` printed what it lists."""
    from polyarch.bake.run import BakeSettings  # noqa: PLC0415

    if targets and ("://" in targets[0] or targets[0].endswith(".git")):
        raise BakeError(f"{targets[0]}: a remote bake definition is not supported; clone it "
                        "and run bake in it")  # fmt: skip
    cwd = Path.cwd()
    project = globals_of(ctx).project()
    names = list(files)
    if not names and project.get("bake.files"):
        from polyarch.cli.project import ProjectFiles  # noqa: PLC0415

        checker = ProjectFiles(Path(project.path).parent, project.path, allow)
        names = [checker.read(f, "bake.files") for f in project.get("bake.files")]
        cwd = Path(project.path).parent.resolve()
    wanted = list(targets) or list(project.get("bake.targets"))
    bake_files = read_files(names, cwd)
    env = dict(os.environ)
    pairs = {}
    for item in variables:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"want NAME=VALUE, got {item!r}", param_hint="--var")
        pairs[key] = value
    builtins = {"BAKE_CMD_CONTEXT": "cwd://", "BAKE_LOCAL_PLATFORM": str(machine_platform())}
    parsed = load_definition(bake_files, cwd, env, builtins, pairs)
    if list_what is not None:
        _list(parsed, list_what)
        return None
    config = parsed.config
    given = parse_overrides(config, overrides, env) if config.targets else {}
    resolved = read_targets(config, wanted, given)
    epoch = env.get("SOURCE_DATE_EPOCH")
    if epoch:
        for target in resolved.targets.values():
            if "SOURCE_DATE_EPOCH" not in (target.args or {}):
                target.args = {**(target.args or {}), "SOURCE_DATE_EPOCH": epoch}
    settings = BakeSettings(
        cwd=cwd, allow=tuple(allow), roots=tuple(dict.fromkeys(f.directory for f in bake_files)),
        platform_of=lambda text: parse_platforms([text]),
    )  # fmt: skip
    return resolved, settings


def _no_attest(value: str | None, kind: str) -> None:
    if value and value.lower() not in ("false", "0", "disabled"):
        raise click.UsageError(f"--{kind}: attestations are not made yet; polyarch writes none")


def _list(parsed: Any, what: str) -> None:
    kind, _, fmt = what.partition(",")
    kind = kind.removeprefix("type=")
    as_json = fmt.removeprefix("format=") == "json"
    if kind == "targets":
        config = parsed.config
        rows = [(g.name, g.description, "group") for g in config.groups]
        rows += [(t.name, t.description, "target") for t in config.targets]
        rows.sort()
        if as_json:
            click.echo(json.dumps([{"name": n, "description": d, **({"group": True} if k ==
                                   "group" else {})} for n, d, k in rows], indent=2))  # fmt: skip
            return
        click.echo(f"{'TARGET':<24} DESCRIPTION")
        for name, description, kind_name in rows:
            shown = f"{name} (group)" if kind_name == "group" else name
            click.echo(f"{shown:<24} {description}")
        return
    if kind == "variables":
        values = parsed.variables
        if as_json:
            click.echo(json.dumps([{"name": k, "value": values[k],
                                    "description": parsed.descriptions.get(k, "")}
                                   for k in sorted(values)], indent=2))  # fmt: skip
            return
        click.echo(f"{'VARIABLE':<24} {'VALUE':<24} DESCRIPTION")
        for key in sorted(values):
            value = values[key]
            shown = value if isinstance(value, str) else json.dumps(value)
            click.echo(f"{key:<24} {shown:<24} {parsed.descriptions.get(key, '')}")
        return
    raise click.BadParameter("targets or variables", param_hint="--list")


def _report(results: list[Any], metadata_file: Path | None) -> None:
    from polyarch.cli.check import parse_call, print_check  # noqa: PLC0415
    from polyarch.cli.project import _build_lines, build_metadata  # noqa: PLC0415

    metadata: dict[str, Any] = {}
    status = 0
    for result in results:
        if result.check is not None:
            click.echo(f"target {result.name}:")
            call = parse_call("check")
            assert call is not None
            status = max(status, print_check(result.check, call))
            continue
        report = result.report
        assert report is not None
        metadata[result.name] = build_metadata(report)
        if failure.state.json_progress:
            event = {"event": "result", "version": failure.PROGRESS_SCHEMA_VERSION,
                    "time": time.time(), "status": 0, "target": result.name,
                    **metadata[result.name]}  # fmt: skip
            click.echo(json.dumps(event), err=True)
        prefix = f"target {result.name}" + (" (a context of another)" if result.linked else "")
        lines = _build_lines(report)
        click.echo(f"{prefix}: {lines[0]}")
        for line in lines[1:]:
            click.echo(f"  {line}")
    if metadata_file is not None:
        write_result(metadata_file, json.dumps(metadata, indent=2) + "\n", "--metadata-file")
    if status:
        raise click.exceptions.Exit(status)


COMMANDS = (bake_command,)
