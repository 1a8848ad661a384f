"""The commands of a project (a release Makefile's targets): build, push, release, verify,
clean, config and version. Each reads `polyarch.toml` when there is one; flags override it."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from polyarch.api import (
    BuildOptions,
    BuildReport,
    ReleaseResult,
    build_image,
    check_build,
    clean_images,
    default_root,
    git_version,
    prune_workspace,
    release,
    verify_image,
    workspace_usage,
)
from polyarch.attest.spec import AttestSpec, attest_entries, from_config, parse_attests
from polyarch.cli import failure
from polyarch.cli.check import CallFunction, parse_call, print_check
from polyarch.cli.common import (
    Globals,
    Renderer,
    ca_bundle,
    echo_json,
    format_option,
    globals_of,
    human,
    open_session,
    parse_build_args,
    parse_pairs,
    parse_platforms,
    result_file_option,
    root_option,
    table,
    write_result,
)
from polyarch.config import effective
from polyarch.errors import UsageError
from polyarch.export.outputs import parse_outputs
from polyarch.frontend.convert import CheckResult, parse_build_once
from polyarch.frontend.gitref import GitRefError, parse_git_ref
from polyarch.frontend.runmount import ram_in_bytes
from polyarch.platform import Platform
from polyarch.progress import Event, silent
from polyarch.reference import Reference
from polyarch.trace import TraceRecorder
from polyarch.transfer.location import LayoutLocation
from polyarch.units import parse_duration, parse_size

if TYPE_CHECKING:
    from polyarch.api.signing import SigningKey
    from polyarch.verify import RunSpec, VerifyReport


def _settings(g: Globals, flags: dict[str, Any]) -> dict[str, Any]:
    """The effective value of every setting: the flag if given, else the file, else default."""
    return {key: value for key, value, _source in effective(g.project(), flags)}


def _project_image(
    g: Globals, base_version: str | None = None, give: str = "-t REGISTRY/NAME:TAG"
) -> str:
    """`REGISTRY/IMAGE:VERSION` from the config and git, or a usage error naming what lacks
    (`give`: how this command takes a name)."""
    project = g.project()
    if not project.image:
        raise UsageError(
            f"no image named: give {give}, or set [image] registry and name in {project.path}"
        )
    base = base_version or project.get("image.base_version")
    return f"{project.image}:{git_version(g.project_path('.'), base)}"


def _renderer(ctx: click.Context, progress: str) -> tuple[Any, str]:
    mode = {"none": "quiet", "rawjson": "json"}.get(progress, progress)
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    if mode == "quiet":
        return silent, mode
    failure.state.json_progress = mode == "json"
    if mode == "tty":
        from polyarch.progress_tty import LiveRenderer  # noqa: PLC0415 (rich only for terminals)

        renderer: Any = LiveRenderer()
        ctx.call_on_close(renderer.close)
        return renderer, mode
    return Renderer(mode), mode


# buildx flags polyarch does not take, each with what to do instead (not "did you mean").
_NO_CGROUPS = ("polyarch sets no cgroup limits on RUN steps (they run in the build's own "
               "cgroup); use --ulimit for per-process limits, or limit polyarch itself "
               "(systemd-run -p MemoryMax=...)")  # fmt: skip
# buildx build flags polyarch does not take, each with what to do instead (not "did you
# mean"); short forms after the long one.
_BUILDX_POINTERS: dict[tuple[str, ...], str] = {
    ("--cgroup-parent",): _NO_CGROUPS,
    ("--resource",): _NO_CGROUPS,
    ("--memory", "-m"): _NO_CGROUPS,
    ("--memory-swap",): _NO_CGROUPS,
    ("--cpu-shares", "-c"): _NO_CGROUPS,
    ("--cpu-period",): _NO_CGROUPS,
    ("--cpu-quota",): _NO_CGROUPS,
    ("--cpuset-cpus",): _NO_CGROUPS,
    ("--cpuset-mems",): _NO_CGROUPS,
    ("--policy",): "source policies are not applied by polyarch; pin base images by digest "
    "(FROM image@sha256:...) to fix what a build takes",
    ("--isolation",): "RUN steps run in runc containers; there is no other isolation to choose",
    ("--security-opt",): "RUN steps get Docker's default seccomp profile; use "
    "RUN --security=insecure with --allow security.insecure for an unconfined step",
    ("--print",): "use --call (buildx's newer name): --call check, or polyarch plan for the "
    "outline and the targets",
}
_BUILDX_BOOLEAN_POINTERS: dict[tuple[str, ...], str] = {
    ("--squash",): "polyarch keeps each step's layer; squashing layers is not supported",
}
# buildx's legacy docker-build flags that ask for what polyarch does anyway.
_BUILDX_HONOURED: dict[tuple[str, ...], str] = {
    ("--rm",): "",  # intermediate containers are always removed
    ("--force-rm",): "",
    ("--compress",): "note: --compress: the build context is read in place, never sent, so "
    "there is nothing to compress",
}


def _pointer(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value and param.opts:
        pointers: dict[tuple[str, ...], str] = {**_BUILDX_POINTERS, **_BUILDX_BOOLEAN_POINTERS}
        text = next(v for k, v in pointers.items() if param.opts[0] in k)
        raise UsageError(f"{param.opts[0]}: {text}")
    return value


def _honoured(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    note = next((v for k, v in _BUILDX_HONOURED.items() if param.opts[0] in k), "")
    if value and note:
        click.echo(note, err=True)
    return value


def _pull_noted(_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        click.echo("note: --pull: base images are always re-resolved from their registry "
                   "(digests checked), so there is nothing more to pull", err=True)  # fmt: skip
    return value


def _buildx_flags(fn: Any) -> Any:
    flags = [click.option("--pull", is_flag=True, hidden=True, expose_value=False,
                          callback=_pull_noted)]  # fmt: skip
    for names in _BUILDX_POINTERS:
        flags.append(click.option(*names, hidden=True, expose_value=False, callback=_pointer))
    for names in _BUILDX_BOOLEAN_POINTERS:
        flags.append(click.option(*names, is_flag=True, hidden=True, expose_value=False,
                                  callback=_pointer))  # fmt: skip
    for names in _BUILDX_HONOURED:
        flags.append(click.option(*names, is_flag=True, hidden=True, expose_value=False,
                                  callback=_honoured))  # fmt: skip
    return _stacked(fn, flags)


def _stacked(fn: Any, options: Sequence[Any]) -> Any:
    """`fn` with the options applied as if written as decorators, first on top."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def _build_options(fn: Any) -> Any:
    return _stacked(_stacked(fn, _run_options()), _input_options())


def _input_options() -> list[Any]:
    """What the build reads: the Dockerfile, platforms, arguments, stages, caches, secrets."""
    return [
        click.option("-f", "--file", "dockerfile", type=click.Path(dir_okay=False,
                     path_type=Path), help="The Dockerfile (default: CONTEXT/Dockerfile, or "
                     "build.dockerfile in polyarch.toml)."),
        click.option("--platform", "platforms", multiple=True, help="Target platforms "
                     "(repeatable or comma separated). Default: build.platforms in "
                     "polyarch.toml, else this machine's."),
        click.option("--build-arg", "build_args", multiple=True, metavar="KEY[=VALUE]",
                     help="Added to (and overriding) build.args in polyarch.toml."),
        click.option("--target", help="Build this stage (name or index) instead of the last."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="Set a label in the image config (repeatable), as LABEL does."),
        click.option("--no-cache", is_flag=True, help="Run every step, whatever the cache "
                     "holds."),
        click.option("--jobs", "-j", type=click.IntRange(1, 64), default=os.cpu_count() or 1,
                     show_default="this machine's cores", help="Steps run at once (emulated "
                     "steps take turns within this)."),
        click.option("--progress", type=click.Choice(["auto", "tty", "plain", "json", "rawjson",
                                                     "quiet", "none"]),
                     default=lambda: os.environ.get("BUILDKIT_PROGRESS") or "auto",
                     show_default="auto, or $BUILDKIT_PROGRESS",
                     help="How progress shows on stderr: a live view (tty), a line per event "
                     "(plain), a JSON object per event (json; rawjson is the same), or "
                     "nothing (quiet, none)."),
        click.option("--build-once", "build_once", metavar="auto|off|STAGE[,STAGE]",
                     help="Run platform-neutral stages once, natively: auto (stages that use "
                     "no TARGET* value, checked for native code after running), off "
                     "(BuildKit's behaviour), or named stages. Default: auto."),
        click.option("--allow", "allow", multiple=True, metavar="ENTITLEMENT",
                     callback=_entitlements,
                     help="Grant an entitlement, as buildx does (repeatable): "
                     "security.insecure lets `RUN --security=insecure` run with every "
                     "capability; fs.read=PATH, fs.write=PATH (fs=PATH: both; * for any) let "
                     "polyarch.toml name a path outside the project's directory."),
        click.option("--ca-certs", "ca_certs", metavar="host|PATH|none", help="Make RUN "
                     "steps trust a CA bundle (host: /etc/ssl/certs/ca-certificates.crt), for "
                     "TLS-intercepting proxies. Mounted read-only per step; never in a layer "
                     "or the config. Default: none."),
        click.option("--secret", "secrets", multiple=True, metavar="id=ID[,src=FILE|,env=VAR]",
                     help="A secret for RUN --mount=type=secret (repeatable); never in a layer, "
                     "the config or the cache key. Added to build.secrets in polyarch.toml."),
        click.option("--ssh", "ssh", multiple=True, metavar="default|ID[=KEYFILE|SOCKET]",
                     help="An SSH agent for RUN --mount=type=ssh (repeatable): default is "
                     "$SSH_AUTH_SOCK; a key file gets an agent of its own."),
        click.option("--cache-from", "cache_from", multiple=True,
                     metavar="type=registry,ref=REF|type=local,src=DIR",
                     help="Use the build cache exported there (repeatable; entries are read at "
                     "the start, layers fetched only for the steps that hit). Added to "
                     "build.cache.from in polyarch.toml."),
        click.option("--cache-to", "cache_to", metavar="type=registry,ref=REF[,mode=max]",
                     help="Export the build cache there after the build (mode=min: the "
                     "final images' steps; max: every step). Also max-age=DURATION, "
                     "max-size=SIZE, ignore-error=true; type=local,dest=DIR for a directory. "
                     "Default: build.cache.to in polyarch.toml."),
    ]  # fmt: skip


def _run_options() -> list[Any]:
    """How the build runs: mirrors, trace, annotations, builder, steps' limits, explain."""
    return [
        click.option("--registry-mirror", "registry_mirrors", multiple=True,
                     metavar="REGISTRY=HOST[/PREFIX]",
                     help="Pull base images of REGISTRY through this mirror first (repeatable, "
                     "tried in order, then the registry; every blob checked against its "
                     "digest; nothing pushed to it). Added to [registries.mirrors]."),
        click.option("--trace", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the build as a Chrome trace (open it in Perfetto): a track "
                     "per platform and stage, a slice per step, pull and cache transfer. "
                     "Default: build.trace in polyarch.toml."),
        click.option("--annotation", "annotations", multiple=True,
                     metavar="[LEVEL[,LEVEL][[PLATFORM]]:]KEY=VALUE",
                     help="Annotate the images, as buildx does (repeatable): LEVEL is manifest "
                     "(the default), index or manifest-descriptor; e.g. "
                     "index,manifest:org.opencontainers.image.source=URL."),
        click.option("--builder", "builder", metavar="NAME",
                     help="Build on this builder's nodes (`polyarch builder ls`). Default: "
                     "build.builder in polyarch.toml, else the current builder."),
        click.option("--no-fallback", "no_fallback", is_flag=True,
                     help="Fail when a builder node cannot be reached or dies, instead of "
                     "building its platforms on this machine."),
        click.option("--step-timeout", "step_timeout", metavar="DURATION",
                     help="Stop a RUN step that runs longer than this (e.g. 30m, 1h: a hung "
                     "install under emulation) with an error naming the step and platform. "
                     "Default: build.step_timeout in polyarch.toml, else none."),
        click.option("--network", "network", type=click.Choice(["default", "none", "host"]),
                     default="default", help="The network of RUN steps that name none: "
                     "default (the host's, as BuildKit's), none (loopback only) or host."),
        click.option("--ulimit", "ulimits", multiple=True, metavar="NAME=SOFT[:HARD]",
                     callback=_ulimits, help="A resource limit of RUN steps (repeatable), as "
                     "docker takes it: nofile=1024:2048, nproc=512 (-1: unlimited)."),
        click.option("--shm-size", "shm_size", metavar="SIZE", callback=_shm_size,
                     help="Size of RUN steps' /dev/shm (e.g. 128m, 1g). Default: 64m."),
        click.option("--explain", is_flag=True, help="After the build, say why each step "
                     "that ran did not come from the cache: the first of its inputs that "
                     "changed since the last build of this context, Dockerfile and target (a "
                     "context file, a build argument, the base image, the instruction, the "
                     "step before). The plain and JSON progress say it as the step starts."),
        click.option("--no-emulator-install", "no_emulator_install", is_flag=True,
                     help="Fail when a platform's emulator is not registered, instead of "
                     "registering it (as root) and going on."),
        click.option("--no-cache-filter", "no_cache_filter", multiple=True, metavar="STAGE",
                     help="Run these stages' steps anew, taking nothing from the cache "
                     "(repeatable or comma separated), as buildx does."),
        click.option("--add-host", "add_hosts", multiple=True, metavar="HOST:IP",
                     callback=_add_hosts,
                     help="Add a line to the /etc/hosts of RUN steps (repeatable), as buildx "
                     "does; HOST=IP is taken too."),
        click.option("--provenance", "provenance", metavar="true|false|mode=min|max,...",
                     help="SLSA provenance of each platform's image, as buildx attaches it "
                     "(same as --attest type=provenance,...): mode=min|max, version=v1|v0.2, "
                     "builder-id=ID. A push gets mode=min unless this says otherwise (false: "
                     "none). true is BuildKit's default, mode=max."),
        click.option("--sbom", "sbom", metavar="true|false",
                     help="An SPDX SBOM of each platform's image (packages of dpkg, apk, "
                     "rpm, Python, npm, Go binaries), as buildx attaches it (same as "
                     "--attest type=sbom)."),
        click.option("--attest", "attest", multiple=True,
                     metavar="type=provenance|sbom[,disabled=true][,ATTR=VALUE...]",
                     help="An attestation to attach (repeatable), as buildx takes it."),
        click.option("--build-context", "build_contexts", multiple=True, metavar="NAME=VALUE",
                     help="A named context for FROM, COPY --from and --mount from= "
                     "(repeatable): a directory, docker-image://REF, oci-layout://DIR[:TAG], "
                     "or a git URL."),
        root_option,
    ]  # fmt: skip


def _stdin_dockerfile(ctx: click.Context) -> Path:
    """`-f -`: the Dockerfile read from stdin, as a file of its own for the build's length."""
    data = sys.stdin.buffer.read(16 * 1024 * 1024 + 1)
    if len(data) > 16 * 1024 * 1024:
        raise UsageError("-f -: the Dockerfile on stdin is over 16 MiB")
    where = Path(tempfile.mkdtemp(prefix="polyarch-stdin-"))
    ctx.call_on_close(lambda: shutil.rmtree(where, ignore_errors=True))
    path = where / "Dockerfile"
    path.write_bytes(data)
    return path


_ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
            "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")  # fmt: skip


def _ulimits(_ctx: click.Context, _param: click.Parameter, values: Sequence[str]
             ) -> tuple[str, ...]:  # fmt: skip
    """`NAME=SOFT[:HARD]` with docker's names; -1 for unlimited; soft at most hard."""
    out = []
    for value in values:
        name, sep, limits = value.partition("=")
        soft, _, hard = limits.partition(":")
        numbers = [soft, *([hard] if hard else [])]
        if not sep or name not in _ULIMITS or not all(re.fullmatch(r"-1|\d+", n) for n in numbers):
            raise click.BadParameter(f"{value!r}: want NAME=SOFT[:HARD], NAME one of "
                                     f"{', '.join(_ULIMITS)}")  # fmt: skip
        if hard and -1 not in (int(soft), int(hard)) and int(soft) > int(hard):
            raise click.BadParameter(f"{value!r}: the soft limit is above the hard one")
        out.append(f"{name}={soft}:{hard or soft}")
    return tuple(out)


def _shm_size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int:
    if not value:
        return 0
    try:
        size = ram_in_bytes(value)  # docker's units: 64m is 64 MiB
    except ValueError:
        raise click.BadParameter(f"{value!r}: a size, as 64m or 1g") from None
    if size <= 0:
        raise click.BadParameter(f"{value!r}: above zero")
    return size


def _add_hosts(_ctx: click.Context, _param: click.Parameter, values: Sequence[str]
               ) -> tuple[str, ...]:  # fmt: skip
    """`HOST:IP` (or `HOST=IP`, as newer docker takes it) to `HOST=IP`, the IP checked."""
    out = []
    for value in values:
        host, sep, address = value.partition("=")
        if not sep:
            host, sep, address = value.partition(":")
        address = address.strip("[]")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{value!r}: want HOST:IP (an IP address, not "
                                     f"{address!r})") from None  # fmt: skip
        if not sep or not host or any(c.isspace() for c in host):
            raise click.BadParameter(f"{value!r}: want HOST:IP")
        out.append(f"{host}={address}")
    return tuple(out)


if TYPE_CHECKING:
    _ParamType = click.ParamType[Path | str, Any]  # generic in newer click only
else:
    _ParamType = click.ParamType


class ContextArgument(_ParamType):
    """CONTEXT: a directory, or a git URL (`https://host/repo.git#ref:subdir`, `git@...`)."""

    name = "context"

    def convert(self, value: Any, param: Any, ctx: click.Context | None) -> Path | str:
        if isinstance(value, Path):
            return value
        text = str(value)
        try:
            if parse_git_ref(text) is not None:
                return text
        except GitRefError as exc:
            self.fail(str(exc), param, ctx)
        if text.startswith(("http://", "https://")):
            self.fail(f"{text}: a URL context must be a git repository (ending in .git); "
                      "tarball contexts are not supported", param, ctx)  # fmt: skip
        path = Path(text)
        if not path.is_dir():
            self.fail(f"{text}: no such directory", param, ctx)
        return path


_ENTITLEMENTS = ("security.insecure", "network.host")


def _entitlements(_ctx: click.Context, _param: click.Parameter, values: Sequence[str]
                  ) -> tuple[str, ...]:  # fmt: skip
    for value in values:
        kind, sep, path = value.partition("=")
        if value in _ENTITLEMENTS or (sep and path and kind in ("fs", "fs.read", "fs.write")):
            continue
        raise click.BadParameter(f"{value!r}: one of {', '.join(_ENTITLEMENTS)}, fs.read=PATH, "
                                 "fs.write=PATH, fs=PATH")  # fmt: skip
    return tuple(values)


class ProjectFiles:
    """The host paths a project file names, as buildx bake's entitlements treat a bake file's:
    relative to the file's directory, and inside it (symlinks resolved) unless the command line
    allows them (`--allow fs.read=PATH`, `fs.write=PATH`, `fs=PATH`, `*` for any path). A
    cloned project cannot make a build read `~/.ssh/id_rsa` and put it where a RUN step sees
    it; paths given on the command line are the user's own choice and are not checked."""

    def __init__(self, base: Path, config: str, allow: Sequence[str]) -> None:
        self.base = base.resolve()
        self.config = config
        self.reads: list[Path | None] = []  # None: any path
        self.writes: list[Path | None] = []
        for value in allow:
            kind, _, path = value.partition("=")
            granted = None if path == "*" else Path(path).expanduser().resolve()
            if kind in ("fs", "fs.read"):
                self.reads.append(granted)
            if kind in ("fs", "fs.write"):
                self.writes.append(granted)

    def read(self, value: str, key: str) -> str:
        return self._checked(value, key, self.reads, "fs.read")

    def write(self, value: str, key: str) -> str:
        return self._checked(value, key, self.writes, "fs.write")

    def _checked(self, value: str, key: str, granted: list[Path | None], kind: str) -> str:
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.base / path
        resolved = path.resolve()
        inside = [self.base, *(g for g in granted if g is not None)]
        if None in granted or any(resolved == d or d in resolved.parents for d in inside):
            return str(path)
        raise UsageError(
            f"{self.config}: {key} names {resolved}, outside the project's directory "
            f"({self.base}): a project file may not make a build reach host paths. If you "
            f"trust this project, allow it: --allow {kind}={resolved}"
        )

    def spec(self, spec: str, key: str, paths: tuple[str, ...], *, write: bool = False) -> str:
        """A `k=v,...` value (a secret, a cache) with its path fields checked."""
        parts = []
        for part in spec.split(","):
            name, sep, value = part.partition("=")
            if sep and name in paths and value:
                checked = self.write(value, key) if write else self.read(value, key)
                part = f"{name}={checked}"  # noqa: PLW2901
            parts.append(part)
        return ",".join(parts)

    def ssh(self, spec: str) -> str:
        agent_id, sep, path = spec.partition("=")
        return f"{agent_id}={self.read(path, 'build.ssh')}" if sep and path else spec

    def context(self, value: str, key: str) -> str:
        if value.startswith("docker-image://") or parse_git_ref(value) is not None:
            return value
        prefix = "oci-layout://" if value.startswith("oci-layout://") else ""
        return prefix + self.read(value.removeprefix(prefix), key)


def _mirrors(configured: Mapping[str, Sequence[str]], flags: Sequence[str]
             ) -> dict[str, tuple[str, ...]]:  # fmt: skip
    """[registries.mirrors] then --registry-mirror REGISTRY=MIRROR, in order, per registry
    (Docker Hub's names, `docker.io` and `registry-1.docker.io`, are one)."""
    out: dict[str, list[str]] = {}

    def add(registry: str, mirror: str) -> None:
        key = "docker.io" if registry in ("index.docker.io", "registry-1.docker.io") else registry
        if not key or not mirror or "://" in mirror:
            raise UsageError(f"a registry mirror is REGISTRY=HOST[:PORT][/PREFIX], got "
                             f"{registry}={mirror}")  # fmt: skip
        if mirror not in out.setdefault(key, []):
            out[key].append(mirror)

    for registry, mirrors in configured.items():
        for mirror in mirrors:
            add(registry, mirror)
    for flag in flags:
        registry, _, mirror = flag.partition("=")
        add(registry.strip(), mirror.strip())
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class Releasing:
    """A build that is a release: pushed by digest, verified (`run`: the probes run in each
    platform's image; None: none but the architecture check), then tagged."""

    run: RunSpec | None
    signing: SigningKey | None = None  # --sign-key, its password and the signature's form


@dataclass(frozen=True, kw_only=True)
class BuildFlags:
    """The flags of `build` and `release` (and the project config's defaults for them, read
    by `_build`)."""

    context: Path | str | None
    tags: Sequence[str]
    push: bool
    outputs: Sequence[str]
    load: bool = False
    dockerfile: Path | None
    platforms: Sequence[str]
    build_args: Sequence[str]
    target: str | None
    labels: Sequence[str]
    no_cache: bool
    jobs: int
    progress: str
    build_once: str | None
    ca_certs: str | None
    root: Path | None
    secrets: Sequence[str] = ()
    ssh: Sequence[str] = ()
    build_contexts: Sequence[str] = ()
    cache_from: Sequence[str] = ()
    cache_to: str | None = None
    registry_mirrors: Sequence[str] = ()
    trace: Path | None = None
    step_timeout: str | None = None
    annotations: Sequence[str] = ()
    builder: str | None = None
    no_fallback: bool = False
    push_from_nodes: bool = False
    allow: Sequence[str] = ()
    add_hosts: Sequence[str] = ()
    network: str = "default"
    ulimits: Sequence[str] = ()
    shm_size: int = 0
    no_cache_filter: Sequence[str] = ()
    no_emulator_install: bool = False
    explain: bool = False
    provenance: str | None = None
    sbom: str | None = None
    attest: Sequence[str] = ()


def _build(
    ctx: click.Context,
    flags: BuildFlags,
    *,
    named: bool = False,
    releasing: Releasing | None = None,
    arch_check: bool = True,
    call: CallFunction | None = None,
) -> BuildReport | ReleaseResult | CheckResult:
    """Build as the flags and the project config say (and, given `releasing`, release:
    push by digest, verify with it, move the tags). The image is named by the tags, else by
    the project (required when pushing, or when `named`)."""
    g = globals_of(ctx)
    given: dict[str, Any] = {
        "build.platforms": [str(p) for p in parse_platforms(flags.platforms)],
        "build.target": flags.target,
        "build.build_once": flags.build_once,
        "build.ca_certs": flags.ca_certs,
        "build.step_timeout": flags.step_timeout,
        "build.builder": flags.builder,
    }
    settings = _settings(g, given)
    files = ProjectFiles(g.project_path("."), g.project().path, flags.allow)
    options = _options(ctx, flags, settings, files, given, named)
    session = open_session(ctx)
    renderer, mode = _renderer(ctx, flags.progress)
    trace_path = flags.trace or (Path(files.write(settings["build.trace"], "build.trace"))
                                 if settings["build.trace"] else None)  # fmt: skip
    sink = TraceRecorder(renderer) if trace_path is not None else renderer
    explained = _Explained(sink)
    if flags.explain:
        sink = explained
    outcome = "FAILED"
    try:
        if call is not None:  # build --check: nothing is built
            checked = check_build(session, options, progress=sink)
            outcome = "FINISHED"
            return checked
        if releasing is None:
            report: BuildReport | ReleaseResult = build_image(session, options, progress=sink)
        else:
            report = release(session, options, releasing.run, progress=sink,
                             note=lambda line: click.echo(f"note: {line}", err=True),
                             arch_check=arch_check, signing=releasing.signing)  # fmt: skip
        outcome = "FINISHED"
        return report
    except KeyboardInterrupt:
        outcome = "CANCELED"
        raise
    finally:
        if mode == "tty":
            renderer.close(outcome)  # the live view ends before anything else is printed
        if trace_path is not None:
            assert isinstance(explained.inner, TraceRecorder)
            explained.inner.write(trace_path)  # a failed build's trace too: where did it stop
        if flags.explain and outcome != "CANCELED":
            click.echo("\n".join(explained.lines()), err=True)


def _options(
    ctx: click.Context,
    flags: BuildFlags,
    settings: dict[str, Any],
    files: ProjectFiles,
    given: dict[str, Any],
    named: bool,
) -> BuildOptions:
    """The build's options: the flags over the project config (its paths read through
    `files`, within the project unless --allow grants more)."""
    g = globals_of(ctx)
    project = g.project()
    dockerfile, context = flags.dockerfile, flags.context
    if dockerfile is not None and str(dockerfile) == "-":
        dockerfile = _stdin_dockerfile(ctx)
    from_file = set(project.values) - {k for k, v in given.items() if v not in (None, [], ())}
    # A CONTEXT given on the command line brings its own Dockerfile, as with docker build;
    # without one, both come from the config (relative to its file).
    if dockerfile is None and context is None and "build.dockerfile" in project.values:
        dockerfile = Path(files.read(project.values["build.dockerfile"], "build.dockerfile"))
    if context is None:
        configured = settings["build.context"]
        context = configured if parse_git_ref(configured) else Path(
            files.read(configured, "build.context"))  # fmt: skip
    named_contexts = {k: files.context(v, f"build.contexts.{k}")
                      for k, v in settings["build.contexts"].items()}  # fmt: skip
    named_contexts.update(parse_pairs(flags.build_contexts, "--build-context"))
    ca_setting = settings["build.ca_certs"]
    if "build.ca_certs" in from_file and ca_setting not in ("host", "none"):
        ca_setting = files.read(ca_setting, "build.ca_certs")
    cached = settings["build.cache"]
    args = dict(settings["build.args"])
    args.update(parse_build_args(flags.build_args))
    names = list(flags.tags) or (
        [_project_image(g)] if project.image or flags.push or named else [])  # fmt: skip
    once = settings["build.build_once"]
    return BuildOptions(
        context=context,
        dockerfile=dockerfile,
        tags=tuple(names),
        platforms=Platform.parse_list(settings["build.platforms"]),
        build_args=args,
        target=settings["build.target"] or None,
        labels=parse_pairs(flags.labels, "--label"),
        no_cache=flags.no_cache,
        outputs=parse_outputs(flags.outputs, push=flags.push, load=flags.load),
        root=flags.root,
        jobs=flags.jobs,
        build_once=parse_build_once(",".join(once) if isinstance(once, list) else once),
        ca_certs=ca_bundle(ca_setting),
        allow=frozenset(a for a in flags.allow if a in _ENTITLEMENTS),
        secrets=(*(files.spec(v, "build.secrets", ("src", "source"))
                   for v in settings["build.secrets"]), *flags.secrets),
        ssh=(*(files.ssh(v) for v in settings["build.ssh"]), *flags.ssh),
        contexts=named_contexts,
        mirrors=_mirrors(settings["registries.mirrors"], flags.registry_mirrors),
        annotations=tuple(flags.annotations),
        builder=settings["build.builder"] or None,
        fallback=not flags.no_fallback,
        push_from_nodes=flags.push_from_nodes,
        add_hosts=tuple(flags.add_hosts),
        network=flags.network,
        ulimits=tuple(flags.ulimits),
        shm_size=flags.shm_size,
        no_cache_filter=tuple(s.strip() for v in flags.no_cache_filter for s in v.split(",")
                              if s),
        emulator_install=not flags.no_emulator_install,
        step_timeout=parse_duration(settings["build.step_timeout"])
        if settings["build.step_timeout"] else None,
        cache_from=(
            *(files.spec(c, "build.cache.from", ("src",)) for c in cached.get("from", [])),
            *flags.cache_from,
        ),
        cache_to=flags.cache_to
        or files.spec(cached.get("to", ""), "build.cache.to", ("dest",), write=True)
        or None,
        attest=_attest(settings, flags),
    )  # fmt: skip


def _attest(settings: dict[str, Any], flags: BuildFlags) -> AttestSpec:
    """The attestations asked for: polyarch.toml's (build.provenance, build.sbom,
    build.attest), then the flags' (the last of a type wins, as in buildx)."""
    configured = {"attest": settings["build.attest"]}
    for kind in ("provenance", "sbom"):
        if settings[f"build.{kind}"] != "":
            configured[kind] = settings[f"build.{kind}"]
    return parse_attests(
        [*from_config(configured), *attest_entries(flags.attest, flags.provenance, flags.sbom)]
    )


class _Explained:
    """Passes events on, and keeps why each step that ran did not come from the cache."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ran: dict[str, Event] = {}
        self.cached = 0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.step and event.kind == "start" and event.cause:
            with self._lock:
                self.ran.setdefault(event.step, event)
        elif event.step and event.kind == "cached":
            with self._lock:
                self.cached += 1
        self.inner(event)

    def lines(self) -> list[str]:
        if not self.ran:
            return [f"why steps ran: none ran ({self.cached} came from the cache)"]
        out = [f"why steps ran ({len(self.ran)} ran, {self.cached} came from the cache):"]
        for event in self.ran.values():
            where = " ".join(p for p in (event.stage, event.platform, event.position) if p)
            node = f"@{event.node}" if event.node else ""
            out.append(f"  [{where}{node}] {event.description}")
            out.append(f"      {event.cause}")
        return out


def _build_lines(report: BuildReport) -> list[str]:
    result = report.result
    kept = f"kept as {', '.join(report.names)}" if report.names else "pushed from its nodes"
    lines = [
        f"built {report.digest} ({result.steps_run} steps run, {result.steps_cached} cached), "
        + kept
    ]
    if len(result.images) > 1:  # a summary per platform
        width = max(len(str(image.platform)) for image in result.images)
        for image in result.images:
            lines.append(f"  {image.platform!s:<{width}}  {image.descriptor.digest}  "
                         f"{human(image.size)}")  # fmt: skip
    if result.steps_imported:
        lines.append(f"{result.steps_imported} of the cached steps came from an imported cache")
    if result.cache_export is not None:
        export = result.cache_export
        lines.append(
            f"exported the build cache to {export.where} ({export.entries} entries under "
            f"{export.tag}, {export.total} in all; {export.uploaded} layers)"
        )
    said = {"registry": "pushed {} ({})", "oci": "exported {}", "docker": "wrote docker archive {}",
            "load": "loaded into the local engine: {}", "local": "wrote the files to {}",
            "tar": "wrote the files as a tar to {}"}  # fmt: skip
    for output in report.outputs:
        if output.name != "-":
            lines.append(said[output.kind].format(output.name, output.digest))
    return lines


@click.command("build")
@click.option("-t", "--tag", "tags", multiple=True, help="Name the image (repeatable). "
              "Default: REGISTRY/IMAGE:VERSION from polyarch.toml and git.")  # fmt: skip
@click.option("--push", is_flag=True, help="Push every tag (same as --output type=registry).")
@click.option("--load", is_flag=True, help="Load the image into the local Docker engine "
              "(DOCKER_HOST; podman's store when there is no Docker), as buildx does; same as "
              "--output type=docker.")  # fmt: skip
@click.option("-o", "--output", "outputs", multiple=True,
              metavar="type=registry|image|oci|docker|local|tar,...",
              help="Where the image goes besides the local store (repeatable), as buildx "
              "takes it: type=registry[,name=REF][,push-by-digest=true] (= type=image,"
              "push=true), type=oci,dest=FILE|-[,tar=false], type=docker[,dest=FILE|-] "
              "(no dest: --load), type=local,dest=DIR and type=tar,dest=FILE|- (the final "
              "stage's files; a directory per platform), -o DIR (local), -o - (tar). "
              "compression=gzip|zstd|uncompressed, compression-level=N, "
              "force-compression=true for image outputs.")  # fmt: skip
@result_file_option("--metadata-file", "Write the build's result as JSON (buildx's keys: "
                    "containerimage.digest, containerimage.descriptor, image.name; and per "
                    "platform).")  # fmt: skip
@result_file_option("--iidfile", "Write the image's digest (the index, or the manifest of one "
                    "platform).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress; print only the image digest.")
@click.option("--push-from-nodes", "push_from_nodes", is_flag=True,
              help="With --push and a builder's nodes: each node pushes the platforms it "
              "built itself, by digest, with its own registry credentials (when this "
              "machine's uplink is the bottleneck); only the index is pushed from here. The "
              "image is then not kept whole in the local store.")  # fmt: skip
@click.option("--check", "check", is_flag=True,
              help="Run BuildKit's build checks on the Dockerfile and build nothing (as "
              "--call=check); exits 1 when a check warns.")  # fmt: skip
@click.option("--call", "call", metavar="build|check[,format=json][,ignorestatus=true]",
              help="What to do with the Dockerfile, as buildx's --call: build it (the "
              "default), or check it (BuildKit's build checks, nothing built).")  # fmt: skip
@_build_options
@_buildx_flags
@click.argument("context", type=ContextArgument(), required=False)
@click.pass_context
def build_command(
    ctx: click.Context, /, metadata_file: Path | None, iidfile: Path | None, quiet: bool,
    check: bool, call: str | None, **kwargs: Any,
) -> None:  # fmt: skip
    """Build CONTEXT's Dockerfile into an image, kept in the local store (and pushed or
    exported when asked). CONTEXT defaults to build.context in polyarch.toml.

    \b
    Example:
      polyarch build -t registry.lan/app:1.0 --platform linux/amd64,linux/arm64 --push
      polyarch build --check .
    """
    if quiet:
        kwargs["progress"] = "quiet"
    function = parse_call("check" if check and not call else call or "build")
    if function is not None:
        checked = _build(ctx, BuildFlags(**kwargs), call=function)
        assert isinstance(checked, CheckResult)
        ctx.exit(print_check(checked, function))
    report = _build(ctx, BuildFlags(**kwargs))
    assert isinstance(report, BuildReport)
    # An output on stdout (dest=-) has it to itself: what is said goes to stderr.
    to_stderr = any(o.name == "-" for o in report.outputs)
    if metadata_file is not None:
        text = json.dumps(build_metadata(report), indent=2)
        write_result(metadata_file, text + "\n", "--metadata-file")
    if iidfile is not None:
        write_result(iidfile, report.digest, "--iidfile")
    if failure.state.json_progress:  # the stream ends with the result, as JSON
        result = {"event": "result", "version": failure.PROGRESS_SCHEMA_VERSION,
                  "time": time.time(), "status": 0, **build_metadata(report)}  # fmt: skip
        click.echo(json.dumps(result), err=True)
        click.echo("\n".join(_build_lines(report)), err=to_stderr)  # the same lines as ever
        return
    if quiet:
        click.echo(report.digest, err=to_stderr)
        return
    click.echo("\n".join(_build_lines(report)), err=to_stderr)
    for warning in report.result.warnings:  # told during the build too; repeated to be seen
        click.echo(f"warning: {warning}", err=True)
    pushed = any(o.kind == "registry" for o in report.outputs)
    remote = [n for n in report.names if not n.startswith("sha256:")]
    if remote and not pushed:
        click.echo(f"note: kept in the local store only; push it with `polyarch push "
                   f"{remote[0]}` (or build with --push)", err=True)  # fmt: skip


def build_metadata(report: BuildReport) -> dict[str, Any]:
    """What `--metadata-file` holds: buildx's keys, then polyarch's per platform."""
    result = report.result
    pushed = [o.name for o in report.outputs if o.kind == "registry"]
    return {
        "containerimage.descriptor": result.descriptor.to_json(),
        "containerimage.digest": report.digest,
        "image.name": ",".join(pushed or report.names),
        "polyarch.platforms": {
            str(image.platform): {"digest": str(image.descriptor.digest), "size": image.size}
            for image in result.images
        },
        "polyarch.steps": {
            "run": result.steps_run,
            "cached": result.steps_cached,
            "imported": result.steps_imported,
        },
        "polyarch.seconds": round(result.seconds, 3),
        "polyarch.warnings": [str(w) for w in result.warnings],
    }


# verify and release --------------------------------------------------------------------------


def _verify_options(fn: Any) -> Any:
    options = [
        click.option("--http", "probes", multiple=True, metavar="PORT/PATH[=STATUS][~TEXT]",
                     help="Probe this HTTP endpoint inside each running image: want STATUS "
                     "(default 200) and TEXT in the body (repeatable). Default: verify.http "
                     "in polyarch.toml."),
        click.option("--run", "run_command", metavar="CMD", help="Run CMD (with /bin/sh -c) "
                     "instead of the image's entrypoint; it must exit 0."),
        click.option("--no-run", is_flag=True, help="Check the registry side only."),
        click.option("--timeout", type=click.FloatRange(1, 3600), help="Seconds per platform "
                     "for the probes to answer (default: verify.timeout, 120)."),
        click.option("--no-arch-check", is_flag=True, help="Do not check that every executable "
                     "and shared library is for the image's machine (on by default)."),
        click.option("--show-output", is_flag=True, help="Show what each platform's process "
                     "printed (its last lines) when it passes too, not only when it fails."),
    ]  # fmt: skip
    return _stacked(fn, options)


def _run_spec(
    ctx: click.Context,
    probes: Sequence[str],
    run_command: str | None,
    no_run: bool,
    timeout: float | None,
) -> RunSpec | None:
    from polyarch.verify import Probe, RunSpec  # noqa: PLC0415 (the engine only when needed)

    g = globals_of(ctx)
    settings = _settings(g, {"verify.http": list(probes), "verify.run": run_command,
                             "verify.timeout": timeout})  # fmt: skip
    if no_run:
        return None
    return RunSpec(
        settings["verify.run"] or None,
        tuple(Probe.parse(p) for p in settings["verify.http"]),
        float(settings["verify.timeout"]),
    )


def _show_verify(report: VerifyReport, ran: bool, show_output: bool) -> None:
    click.echo(f"{report.reference} ({report.digest[:19]})")
    if report.attestations:
        click.echo(f"{report.attestations} attestation entries (not platforms)")
    rows = []
    for r in report.results:
        checks = ", ".join(r.checks) if r.checks else "-"
        probed = (f"{sum(not v.startswith('FAIL') for v in r.probes.values())}/{len(r.probes)}"
                  if r.probes else "-")  # fmt: skip
        rows.append([
            r.platform, r.digest[7:19] if r.digest else "-", human(r.size) if r.size else "-",
            checks, r.run or ("skipped" if not ran or r.failures else "-"), probed,
            f"{r.seconds:.1f}s", "ok" if r.ok else "FAIL",
        ])  # fmt: skip
    click.echo(table(["PLATFORM", "DIGEST", "SIZE", "CHECKS", "RUN", "PROBES", "TIME",
                      "RESULT"], rows))  # fmt: skip
    labels = list(dict.fromkeys(label for r in report.results for label in r.probes))
    if labels:
        probed_results = [r for r in report.results if r.probes]
        click.echo()
        click.echo(table(["PROBE", *(r.platform for r in probed_results)],
                         [[label, *(r.probes.get(label, "-") for r in probed_results)]
                          for label in labels]))  # fmt: skip
    if show_output:
        for r in report.results:
            if r.ok and r.output:
                click.echo(f"\n{r.platform} printed:\n{r.output}")
    for problem in report.problems:
        click.echo(f"FAIL index: {problem}", err=True)
    for r in report.results:
        for problem_text in r.failures:
            click.echo(f"FAIL {r.platform}: {problem_text}", err=True)


@click.command("verify")
@click.argument("ref", required=False)
@click.option("--platform", "platforms", multiple=True, help="Platforms that must be present "
              "(default: build.platforms in polyarch.toml, else every entry).")  # fmt: skip
@_verify_options
@click.option(
    "--attest",
    "attest",
    is_flag=True,
    help="Attach each platform's result to its "
    "image as a SLSA verification summary (an OCI referrer: the image's digest does "
    "not change); `inspect --verification` shows them.",
)
@click.option(
    "--require-attested",
    "require_attested",
    is_flag=True,
    help="Run nothing: pass each platform whose image already carries a passing "
    "verification summary (from verify --attest or release), fail the others.",
)
@click.option("--key", "key", type=click.Path(dir_okay=False, path_type=Path),
              help="Also require a signature by this public key (cosign.pub), in cosign's "
              "format (polyarch sign, cosign sign).")  # fmt: skip
@root_option
@format_option
@click.pass_context
def verify_command(  # noqa: PLR0913 (a click command: one parameter per flag)
    ctx: click.Context,
    fmt: str,
    ref: str | None,
    platforms: tuple[str, ...],
    probes: tuple[str, ...],
    run_command: str | None,
    no_run: bool,
    timeout: float | None,
    no_arch_check: bool,
    show_output: bool,
    attest: bool,
    require_attested: bool,
    key: Path | None,
    root: Path | None,
) -> None:
    """Check that REF (default: the project's image) has every platform, whole, that every
    executable and shared library is for its platform's machine, and that each platform's
    image runs (emulated where needed) and answers the HTTP probes."""
    from polyarch.api import attesting  # noqa: PLC0415 (the engine only when needed)

    g = globals_of(ctx)
    wanted = parse_platforms(platforms) or g.project().platforms
    run = _run_spec(ctx, probes, run_command, no_run, timeout)
    session = open_session(ctx)
    location = ref or _project_image(g, give="REF (e.g. registry.lan/app:1.0)")
    if require_attested and attest:
        raise UsageError("--require-attested runs nothing, so there is no result to --attest")
    public = _read_key(key) if key else None
    if require_attested:
        report = attesting.require_attested(session, location, wanted)
    else:
        report = verify_image(
            session, location, platforms=wanted, run=run, root=root,
            note=lambda line: click.echo(f"note: {line}", err=True),
            arch_check=not no_arch_check,
        )  # fmt: skip
    policy = attesting.verify_policy(run, not no_arch_check)
    signatures = _signatures(session, location, public) if public is not None else None
    if fmt == "json":
        attached = attesting.attach_verification(session, location, report, policy) if (
            attest) else []  # fmt: skip
        results = [{**dataclasses.asdict(r), "ok": r.ok} for r in report.results]
        extra: dict[str, Any] = {"attached": [{"platform": p, "digest": d} for p, d in attached]}
        if signatures is not None:
            extra["signatures"] = {"signed": signatures.signed, "unsigned": signatures.unsigned}
        echo_json({**dataclasses.asdict(report), "ok": report.ok, "results": results, **extra})
    else:
        _show_verify(report, run is not None and not require_attested, show_output)
        if signatures is not None:
            for what, digest in signatures.signed:
                click.echo(f"signed by {key}: {what} {digest[:19]}")
        # Attached after the results are shown: a registry that refuses the push loses none.
        for platform, digest in (attesting.attach_verification(session, location, report, policy)
                                 if attest else []):  # fmt: skip
            click.echo(f"attached the verification summary of {platform}: {digest}")
    if signatures is not None and not signatures.ok:
        for what, digest in signatures.unsigned:
            click.echo(f"FAIL signature: {what} {digest} carries no valid signature by {key}",
                       err=True)  # fmt: skip
    if not report.ok or (signatures is not None and not signatures.ok):
        raise click.exceptions.Exit(1)


def _read_key(path: Path, flag: str = "--key") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror}") from None


def _signatures(session: Any, location: str, public: bytes) -> Any:
    """The image's signatures checked (the image itself must be signed; an index's platforms
    are reported, and need to be signed too when any of them is)."""
    from polyarch.api.signing import SignatureCheck, check_signatures  # noqa: PLC0415

    found = check_signatures(session, location, public, recursive=True)
    image_signed = any(what == "image" for what, _d in found.signed)
    if image_signed and len(found.signed) == 1:  # only the index: as cosign verify checks it
        return SignatureCheck(found.reference, found.signed, [])
    return found


@click.command("release")
@click.option("-t", "--tag", "tags", multiple=True, help="Push under these tags (default: "
              "REGISTRY/IMAGE:VERSION from polyarch.toml and git).")  # fmt: skip
@_build_options
@_buildx_flags
@_verify_options
@click.option("--sign-key", "sign_key", type=click.Path(dir_okay=False, path_type=Path),
              help="Sign the released image (the index and each platform) with this key "
              "(cosign.key; password from COSIGN_PASSWORD), after it passed and before the "
              "tags move.")  # fmt: skip
@click.option("--sign-new-bundle-format", "sign_bundle", is_flag=True,
              help="With --sign-key: store the signatures as cosign v3 does with "
              "--new-bundle-format (Sigstore bundles attached as referrers) instead of under "
              "the sha256-<hex>.sig tags.")  # fmt: skip
@click.argument("context", type=ContextArgument(), required=False)
@click.pass_context
def release_command(  # noqa: PLR0913 (a click command: one parameter per flag)
    ctx: click.Context,
    /,
    probes: tuple[str, ...],
    run_command: str | None,
    no_run: bool,
    timeout: float | None,
    no_arch_check: bool,
    show_output: bool,
    sign_key: Path | None,
    sign_bundle: bool,
    **kwargs: Any,
) -> None:
    """Build every configured platform, push, verify, and only then move the tag.

    The image is pushed by digest first; the tag is written only once every platform has
    passed, so a release that fails its checks leaves the tag where it was."""
    run = _run_spec(ctx, probes, run_command, no_run, timeout)
    signing = _signing_key(sign_key, sign_bundle)
    if globals_of(ctx).project().get("bake.files"):
        _release_bake(ctx, run, not no_arch_check, show_output, kwargs, signing)
        return
    result = _build(ctx, BuildFlags(push=False, outputs=(), **kwargs), named=True,
                    releasing=Releasing(run, signing), arch_check=not no_arch_check)  # fmt: skip
    assert isinstance(result, ReleaseResult)
    click.echo("\n".join(_build_lines(result.build)))
    click.echo(f"pushed {result.pinned} (no tag yet)")
    _show_verify(result.verify, run is not None, show_output)
    for platform, digest in result.attached:
        click.echo(f"attached the verification summary of {platform}: {digest}")
    for what in result.signed:
        click.echo(f"signed {what}")
    if not result.ok:
        names = ", ".join(result.build.names)
        click.echo(f"not released: {names} left as they were", err=True)
        raise click.exceptions.Exit(1)
    for name, digest in result.released:
        click.echo(f"released {name} ({digest})")


def _signing_key(path: Path | None, bundle: bool) -> SigningKey | None:
    """`--sign-key` read, and its password checked before anything is built."""
    if path is None:
        if bundle:
            raise UsageError("--sign-new-bundle-format needs --sign-key KEY")
        return None
    from polyarch.api.signing import SignatureForm, SigningKey  # noqa: PLC0415
    from polyarch.attest.sign import read_private  # noqa: PLC0415
    from polyarch.cli.signing import password  # noqa: PLC0415

    signing = SigningKey(_read_key(path, "--sign-key"), password(),
                         SignatureForm.BUNDLE if bundle else SignatureForm.TAG)  # fmt: skip
    read_private(signing.pem, signing.password)  # a wrong key or password fails here
    return signing


def _release_bake(
    ctx: click.Context,
    run: RunSpec | None,
    arch_check: bool,
    show_output: bool,
    flags: dict[str, Any],
    signing: SigningKey | None,
) -> None:
    """`release` of a project whose polyarch.toml names a bake file: every target of
    `[bake] targets` built, pushed by digest and verified; every tag moved only when all
    passed."""
    from polyarch.bake.run import release  # noqa: PLC0415
    from polyarch.cli.bake import bake_definition  # noqa: PLC0415

    given = sorted(k for k, v in flags.items() if v not in (None, False, (), "", "auto", 0)
                   and k in ("tags", "context", "dockerfile", "platforms", "build_args",
                             "target", "labels"))  # fmt: skip
    if given:
        raise UsageError(f"release of a bake project ([bake] in polyarch.toml) takes its "
                         f"targets from the bake file; not {', '.join(given)}: set them in the "
                         "file, or build with polyarch bake --set")  # fmt: skip
    definition = bake_definition(ctx, (), (), (), (), tuple(flags.get("allow") or ()))
    assert definition is not None
    resolved, settings = definition
    renderer, mode = _renderer(ctx, str(flags.get("progress") or "auto"))
    settings = dataclasses.replace(settings, root=flags.get("root"),
                                   jobs=int(flags.get("jobs") or os.cpu_count() or 1))  # fmt: skip
    outcome = "FAILED"
    try:
        result = release(open_session(ctx), resolved, settings, run, progress=renderer,
                         note=lambda line: click.echo(f"note: {line}", err=True),
                         arch_check=arch_check, signing=signing)  # fmt: skip
        outcome = "FINISHED"
    finally:
        if mode == "tty":
            renderer.close(outcome)
    for item in result.results:
        if item.report is not None and not item.linked:
            click.echo(f"target {item.name}: " + "\n  ".join(_build_lines(item.report)))
    for name, pinned in result.pinned.items():
        click.echo(f"target {name}: pushed {pinned} (no tag yet)")
        _show_verify(result.verified[name], run is not None, show_output)
    for what in result.signed:
        click.echo(f"signed {what}")
    if not result.ok:
        click.echo("not released: every target's tags left as they were", err=True)
        raise click.exceptions.Exit(1)
    for name, digest in result.released:
        click.echo(f"released {name} ({digest})")


# push, clean, config, version ----------------------------------------------------------------


@click.command("push")
@click.argument("name", required=False)
@click.argument("destination", required=False)
@root_option
@click.pass_context
def push_command(
    ctx: click.Context, name: str | None, destination: str | None, root: Path | None
) -> None:
    """Push a locally kept image NAME (default: the project's image) to its registry, or to
    DESTINATION."""
    session = open_session(ctx)
    store = (root or default_root()) / "store"
    local = str(
        Reference.parse(
            name or _project_image(globals_of(ctx), give="NAME (a local image: polyarch images)")
        )
    )  # kept in full form
    report = session.copy(LayoutLocation(str(store), local), destination or local)
    click.echo(f"pushed to {report.name} ({report.digest})")


@click.command("clean")
@click.argument("repository", required=False)
@root_option
@click.pass_context
def clean_command(ctx: click.Context, repository: str | None, root: Path | None) -> None:
    """Remove the local images REPOSITORY names (default: the project's image): every tag of
    NAME, or only NAME:TAG, NAME@DIGEST, or sha256:DIGEST (an untagged image, as `polyarch
    images` lists it); then the cache entries only they used, and the blobs and snapshots
    nothing else needs."""
    if repository is None:
        project = globals_of(ctx).project()
        if not project.image:
            raise UsageError(f"name the repository to clean, or set [image] in {project.path}")
        repository = project.image
    report = clean_images(repository, root)
    for name in report.images:
        click.echo(f"removed {name}")
    click.echo(
        f"{len(report.images)} images, {report.steps} cache entries, {report.blobs} blobs and "
        f"{report.snapshots} snapshots removed; {human(report.freed)} freed"
    )


@click.command("du")
@click.option("--verbose", "-v", is_flag=True, help="List every cache mount, even empty ones.")
@root_option
def du_command(verbose: bool, root: Path | None) -> None:
    """Show what the workspace holds: images, the step cache, unpacked layers, cache mounts
    (as `buildx du`)."""
    rows = []
    total = 0
    for entry in workspace_usage(root):
        total += entry.size
        if entry.kind == "cache mount" and not verbose and entry.size == 0:
            continue
        when = (time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
                if entry.last_used else "")  # fmt: skip
        rows.append([entry.kind, entry.name, str(entry.count), human(entry.size), when])
    rows.append(["total", "", "", human(total), ""])
    click.echo(table(["TYPE", "NAME", "COUNT", "SIZE", "LAST USED"], rows))


@click.command("prune")
@click.option("--cache-mounts", is_flag=True, help="Empty the RUN --mount=type=cache "
              "directories too.")  # fmt: skip
@click.option("--keep-storage", metavar="SIZE", help="Keep the most recently used, up to SIZE "
              "(e.g. 10GB, 512MiB) for the whole workspace.")  # fmt: skip
@click.option("--filter", "filters", multiple=True, metavar="until=DURATION",
              help="Only what was not used in DURATION (e.g. 24h, 30m, 7d).")  # fmt: skip
@click.option(
    "-a",
    "--all",
    "everything",
    is_flag=True,
    help="Everything but the tagged images: cache mounts too, as buildx prune -a.",
)
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@root_option
def prune_command(
    cache_mounts: bool, keep_storage: str | None, filters: tuple[str, ...], everything: bool,
    force: bool, root: Path | None,
) -> None:  # fmt: skip
    """Free the workspace, as `buildx prune` does: forget build steps, remove the untagged
    images of earlier builds (built without -t; `polyarch images` lists them by digest), empty
    cache mounts when asked, then delete the blobs and unpacked layers nothing reaches. Tagged
    images stay (`polyarch clean` removes those). Asks first when run at a terminal."""
    older_than = None
    for item in filters:
        key, _, value = item.partition("=")
        if key != "until" or not value:
            raise UsageError(f"--filter wants until=DURATION (e.g. until=24h), got {item!r}")
        older_than = parse_duration(value)
    if not force and sys.stdin.isatty():
        what = "all build cache" if everything else "all dangling build cache"
        if not click.confirm(f"WARNING! This will remove {what}. Are you sure you want to "
                             "continue?", default=False):  # fmt: skip
            click.echo("nothing removed", err=True)
            return
    report = prune_workspace(
        root,
        cache_mounts=cache_mounts or everything,
        older_than=older_than,
        keep_storage=parse_size(keep_storage) if keep_storage else None,
    )
    for name in report.images:
        click.echo(f"removed {name}")
    click.echo(
        f"{len(report.images)} untagged images, {report.steps} build steps, "
        f"{report.cache_mounts} cache mounts, {report.blobs} blobs and {report.snapshots} "
        f"snapshots removed; {human(report.freed)} freed"
    )  # fmt: skip


@click.command("config")
@click.option("--platform", "platforms", multiple=True, help="As build --platform.")
@click.option("--base-version", help="As version --base-version.")
@format_option
@click.pass_context
def config_command(
    ctx: click.Context, platforms: tuple[str, ...], base_version: str | None, fmt: str
) -> None:
    """Print the effective settings and where each comes from (flag, file or default)."""
    flags = {
        "build.platforms": [str(p) for p in parse_platforms(platforms)],
        "image.base_version": base_version,
    }
    g = globals_of(ctx)
    found: dict[str, dict[str, Any]] = {
        key: {"value": value, "from": source}
        for key, value, source in effective(g.project(), flags)
    }
    if g.project().image:
        derived = "image.registry/image.name:version (polyarch version)"
        try:
            found["image.tag"] = {"value": _project_image(g, base_version), "from": derived}
        except UsageError as exc:
            found["image.tag"] = {"value": None, "from": derived, "error": str(exc)}
    if fmt == "json":
        echo_json(found)
        return
    rows = [[key, json.dumps(item["value"]) if "error" not in item else
             f"(none: {item['error']})", item["from"]] for key, item in found.items()]  # fmt: skip
    click.echo(table(["KEY", "VALUE", "FROM"], rows))


@click.command("version")
@click.option("--base-version", help="Used when no tag contains HEAD: BASE_VERSION-<short "
              "sha> (default: image.base_version in polyarch.toml, else 0.0.0).")  # fmt: skip
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.pass_context
def version_command(ctx: click.Context, base_version: str | None, directory: Path | None) -> None:
    """Print the version of the git work tree: the first tag containing HEAD, else
    BASE_VERSION-<7-character sha>; `-dirty` when there are uncommitted changes."""
    g = globals_of(ctx)
    base = base_version or g.project().get("image.base_version")
    click.echo(git_version(directory or g.project_path("."), base))


COMMANDS = (build_command, push_command, release_command, verify_command, clean_command,
            du_command, prune_command, config_command, version_command)  # fmt: skip
