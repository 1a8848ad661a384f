"""What the commands share: the project config, sessions, options, tables, progress."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from polyarch.api import RegistryOptions, Session
from polyarch.cli.failure import PROGRESS_SCHEMA_VERSION
from polyarch.config import ProjectConfig, parse_config
from polyarch.errors import UsageError
from polyarch.oci.models import Descriptor
from polyarch.platform import Platform


@dataclasses.dataclass
class Globals:
    """The group's options: registry settings, and the project config (read when needed)."""

    options: RegistryOptions
    config_file: Path | None = None  # --config; else ./polyarch.toml when there is one
    _project: ProjectConfig | None = None

    def project(self) -> ProjectConfig:
        if self._project is None:
            path = self.config_file or Path("polyarch.toml")
            if self.config_file is not None and not path.is_file():
                raise UsageError(f"--config: no such file {path}")
            try:
                text = path.read_text(encoding="utf-8") if path.is_file() else ""
            except UnicodeDecodeError as exc:
                raise UsageError(f"{path}: not UTF-8 ({exc.reason})") from None
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}") from None
            self._project = parse_config(text, str(path))
        return self._project

    def project_path(self, value: str) -> Path:
        """A path from the config file, relative to the file's directory."""
        return Path(self.project().path).parent / value


class Commands(click.Group):
    """A group whose help lists each command's whole first sentence (click cuts it at the
    terminal's width). Its subgroups are made of it too."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=400)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


Commands.group_class = Commands


class GlobalOptions(Commands):
    """The top-level group: its options are also taken after the command's name, where a
    docker/buildx user writes them (`polyarch build --insecure-registry HOST ...`): they are
    moved before it, up to a `--`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._hoisted(ctx, args))

    def _hoisted(self, ctx: click.Context, args: list[str]) -> list[str]:
        valued = {opt for p in self.params if isinstance(p, click.Option) and not p.is_flag
                  for opt in p.opts if opt.startswith("--")}  # fmt: skip
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            i += 2 if args[i] in valued else 1  # a global option (and its value) or a flag
        if i >= len(args) or args[i] == "--":
            return args
        front, command, rest = args[:i], args[i], args[i + 1 :]
        moved: list[str] = []
        kept: list[str] = []
        j = 0
        while j < len(rest):
            arg = rest[j]
            if arg == "--":
                kept += rest[j:]
                break
            if arg.partition("=")[0] in valued and "=" in arg:
                moved.append(arg)
            elif arg in valued and j + 1 < len(rest):
                moved += rest[j : j + 2]
                j += 1
            else:
                kept.append(arg)
            j += 1
        return [*front, *moved, command, *kept]


def globals_of(ctx: click.Context) -> Globals:
    found = ctx.find_object(Globals)
    assert found is not None
    return found


def open_session(ctx: click.Context) -> Session:
    """A registry session; the project's insecure registries are added to the flags'."""
    g = globals_of(ctx)
    extra = tuple(g.project().get("registries.insecure"))
    session = Session(dataclasses.replace(g.options, insecure=g.options.insecure + extra))
    ctx.call_on_close(session.close)
    return session


def parse_platforms(values: Sequence[str]) -> tuple[Platform, ...]:
    """`--platform` values (repeatable, comma separated); `local` is this machine's, as in
    buildx."""
    from polyarch.api import machine_platform  # noqa: PLC0415

    texts = [t.strip() for value in values for t in value.split(",") if t.strip()]
    if "local" in texts:
        texts = [str(machine_platform()) if t == "local" else t for t in texts]
    return Platform.parse_list(texts)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in
              enumerate(headers)]  # fmt: skip
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def descriptor_json(d: Descriptor) -> dict[str, Any]:
    return d.to_json()


# inspect -------------------------------------------------------------------------------------


def dockerfile_option(fn: Any) -> Any:
    return click.option(
        "-f",
        "--file",
        "dockerfile",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The Dockerfile (default: CONTEXT/Dockerfile).",
    )(fn)


def resolve_dockerfile(dockerfile: Path | None, context: Path) -> Path:
    return dockerfile if dockerfile is not None else context / "Dockerfile"


def parse_build_args(values: Sequence[str]) -> dict[str, str]:
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


def _root_value(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("must name a directory (it is polyarch's workspace)")
    return Path(value)


def result_file(_ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A file a command writes its result to (--metadata-file, --iidfile): checked before
    the build, so a long build does not end with a result it cannot write."""
    if value is None:
        return None
    where = value if value.exists() else value.parent
    if not where.is_dir() and not value.exists():
        raise click.BadParameter(f"{value}: no directory {where}", param=param)
    if not os.access(where, os.W_OK | (os.X_OK if where.is_dir() else 0)):
        raise click.BadParameter(f"{value}: not writable here (permission denied)", param=param)
    return value


_F = TypeVar("_F", bound=Callable[..., Any])


def result_file_option(name: str, help_text: str) -> Callable[[_F], _F]:
    """An option naming a file a command writes its result to, checked before it runs."""
    return click.option(name, type=click.Path(dir_okay=False, path_type=Path),
                        callback=result_file, help=help_text)  # fmt: skip


def write_result(path: Path, text: str, flag: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write {path}: {exc.strerror or exc}") from None


def root_option(fn: Any) -> Any:
    return click.option(
        "--root",
        type=click.Path(file_okay=False),
        envvar="POLYARCH_ROOT",
        callback=_root_value,
        help="Where polyarch keeps images, layers and cache (default: /var/lib/polyarch as "
        "root, else the user data directory). Two roots are fully isolated.",
    )(fn)


class Renderer:
    """Progress as lines: `plain` for logs and terminals, `json` (one event per line)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.numbers: dict[str, int] = {}
        self.lock = threading.Lock()  # steps of parallel stages report from their threads

    def __call__(self, event: Any) -> None:
        with self.lock:
            self._show(event)

    def _show(self, event: Any) -> None:
        if self.mode != "json" and event.kind in ("waiting", "running", "progress"):
            return  # the plain log shows no slot changes
        if self.mode == "json":
            click.echo(json.dumps({**event.to_json(), "version": PROGRESS_SCHEMA_VERSION}),
                       err=True)  # fmt: skip
            return
        if event.step:
            n = self.numbers.setdefault(event.step, len(self.numbers) + 1)
            where = f"[{event.stage} {event.platform}] " if event.stage else f"[{event.platform}] "
        else:
            n, where = 0, ""
        tag = f"#{n}" if n else "#-"
        if event.kind == "start":
            click.echo(f"{tag} {where}{event.description}", err=True)
            if event.cause:
                click.echo(f"{tag} why: {event.cause}", err=True)
        elif event.kind == "cached":
            origin = f" ({event.text})" if event.text else ""
            click.echo(f"{tag} {where}{event.description} CACHED{origin}", err=True)
        elif event.kind == "log":
            click.echo(f"{tag} {event.text}", err=True)
        elif event.kind == "done":
            seconds = f" {event.seconds:.1f}s" if event.seconds is not None else ""
            extra = f" ({event.text})" if event.text else ""
            click.echo(f"{tag} DONE{seconds}{extra}", err=True)
        elif event.kind == "error":
            click.echo(f"{tag} ERROR {event.text.splitlines()[0]}", err=True)
        else:
            click.echo(f"{tag} {event.text}", err=True)


def parse_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


MAX_CA_BUNDLE = 16 * 1024 * 1024
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_CERTIFICATE_BLOCKS = frozenset({"CERTIFICATE", "TRUSTED CERTIFICATE", "X509 CRL"})
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/=]*")


def ca_bundle(value: str) -> Path | None:
    """The CA bundle RUN steps trust: a file of PEM certificates and nothing else (comment
    lines aside), so no other file of this machine (a key, a password file) can be handed to
    the steps under that name. What a refused file holds is never shown."""
    if value == "none":
        return None
    path = Path("/etc/ssl/certs/ca-certificates.crt") if value == "host" else Path(value)
    if not path.is_file():
        raise UsageError(f"--ca-certs: no CA bundle at {path}")
    try:
        text = path.read_bytes()[: MAX_CA_BUNDLE + 1].decode("ascii")
    except (OSError, UnicodeDecodeError):
        text = ""
    reason = _not_a_bundle(text) if len(text) <= MAX_CA_BUNDLE else "it is over 16 MiB"
    if reason:
        raise UsageError(f"--ca-certs: {path} is not a PEM certificate bundle ({reason}); give "
                         "a file of -----BEGIN CERTIFICATE----- blocks")  # fmt: skip
    return path


def _not_a_bundle(text: str) -> str:
    blocks = 0
    inside = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if inside:
            if line == f"-----END {inside}-----":
                inside = ""
            elif not _BASE64_LINE.fullmatch(line):
                return f"line {number} is not part of a certificate"
            continue
        match = _PEM_BLOCK.fullmatch(line)
        if match is not None:
            if match.group(1) not in _CERTIFICATE_BLOCKS:
                return f"line {number} starts a PEM block that is not a certificate"
            inside = match.group(1)
            blocks += 1
        elif line and not line.startswith("#"):
            return f"line {number} is neither a certificate nor a comment"
    if inside:
        return "a certificate is not closed"
    return "" if blocks else "it holds no certificate"


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts (one JSON document on stdout).",
)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
