"""`build --check` / `--call check`: BuildKit's build checks, told as buildx tells them.

The text form is buildx's: `Check complete, N warnings have been found!`, then each warning
(`WARNING: Rule - URL`, its detail, the Dockerfile lines around it with `>>>`), then the error
that would stop the build, if any. `format=json` prints BuildKit's lint result document
(`warnings`, `sources`, `buildError`). The exit status is 1 when a check warned or the build
would fail (`ignorestatus=true`: 0 unless it would fail), as with buildx.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from polyarch.errors import DockerfileError, PolyarchError
from polyarch.frontend.convert import CheckResult
from polyarch.frontend.files import read_context_file
from polyarch.graph.model import PlanWarning

# What buildx's --call takes; polyarch evaluates a build or checks it.
_OTHER_CALLS = {
    "outline": "`polyarch plan` shows the stages, their steps and the build arguments",
    "targets": "`polyarch plan --format json` lists the stages",
}


@dataclass(frozen=True, slots=True)
class CallFunction:
    name: str  # "check"
    format: str = ""  # "" (text) or "json"
    ignore_status: bool = False


def parse_call(value: str) -> CallFunction | None:
    """buildx's --call value: `build`, or `check[,format=json][,ignorestatus=true]` (`lint`
    is its old name). None: build."""
    name = ""
    fmt = ""
    ignore = False
    for field in (f.strip() for f in value.split(",")):
        key, sep, option = field.partition("=")
        if sep:
            if key == "format":
                if option not in ("json", "text", ""):
                    raise click.BadParameter(f"format {option!r}: json or text")
                fmt = "" if option == "text" else option
            elif key == "ignorestatus":
                if option.lower() not in ("1", "t", "true", "0", "f", "false"):
                    raise click.BadParameter(f"invalid ignorestatus print value: {option}")
                ignore = option.lower() in ("1", "t", "true")
            else:
                raise click.BadParameter(f"invalid print field: {field}")
        elif name:
            raise click.BadParameter(f"invalid print value: {value}")
        else:
            name = field
    if name in ("", "build"):
        return None
    if name in _OTHER_CALLS:
        raise click.BadParameter(f"{name}: not evaluated by polyarch; {_OTHER_CALLS[name]}")
    if name not in ("check", "lint"):
        raise click.BadParameter(f"{name!r}: build or check")
    return CallFunction("check", fmt, ignore)


def print_check(result: CheckResult, call: CallFunction) -> int:
    """Print the check's result on stdout; the exit status."""
    source = _source(Path(result.path)) if result.path else b""
    if call.format == "json":
        click.echo(json.dumps(_document(result, result.path, source), indent=2))
    else:
        click.echo(_text(result, source), nl=False)
    if result.error is not None:
        return 1
    return 0 if call.ignore_status or not result.warnings else 1


def _source(path: Path) -> bytes:
    try:
        return read_context_file(path)
    except OSError:
        return b""


def _ordered(warnings: tuple[PlanWarning, ...]) -> list[PlanWarning]:
    return sorted(warnings, key=lambda w: w.location.start_line if w.location else 0)


def _text(result: CheckResult, source: bytes) -> str:
    out: list[str] = []
    count = len(result.warnings)
    if count:
        said = "1 warning has been found!" if count == 1 else f"{count} warnings have been found!"
        out.append(f"Check complete, {said}\n")
    for warning in _ordered(result.warnings):
        url = f" - {warning.url}" if warning.url else ""
        out.append(f"\nWARNING: {warning.rule}{url}\n{warning.message}\n")
        if warning.location is not None:
            out.append(source_lines(warning.location.path, source, warning.location.start_line,
                                    warning.location.end_line))  # fmt: skip
    if result.error is not None:
        if count:
            out.append("\n")
        out.append(_error_text(result.error) + "\n")
        line = _error_line(result.error)
        if line is not None:
            out.append(source_lines(result.error.path if isinstance(result.error,
                                    DockerfileError) else "", source, line, line))  # fmt: skip
    elif not count:
        out.append("Check complete, no warnings found.\n")
    return "".join(out)


def _error_text(error: PolyarchError) -> str:
    return error.message if isinstance(error, DockerfileError) else str(error)


def _error_line(error: PolyarchError) -> int | None:
    return error.line if isinstance(error, DockerfileError) else None


def source_lines(path: str, source: bytes, start: int, end: int) -> str:
    """The lines around [start, end] as BuildKit's errdefs.Source prints them."""
    lines = source.decode("utf-8", "replace").split("\n")
    if start > len(lines) or start < 1:
        return ""
    end = min(max(end, start), len(lines))
    pad = 4 if end == start else 2
    first, last, p = start, end, 0
    while p < pad:
        if first > 1:
            first -= 1
            p += 1
        if last != len(lines):
            last += 1
            p += 1
        p += 1
    out = [f"{path}:{start}\n--------------------\n"]
    for n in range(first, last + 1):
        marker = ">>>" if start <= n <= end else "   "
        out.append(f" {n:3d} | {marker} {lines[n - 1]}\n")
    out.append("--------------------\n")
    return "".join(out)


def _warning_json(warning: PlanWarning, where: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ruleName": warning.rule, "description": warning.description}
    if warning.url:
        out["url"] = warning.url
    out["detail"] = warning.message
    if warning.location is not None:
        out["location"] = where(warning.location.start_line, warning.location.end_line)
    return out


def _document(result: CheckResult, path: str, source: bytes) -> dict[str, Any]:
    def where(start: int, end: int) -> dict[str, Any]:
        return {"sourceIndex": 0,
                "ranges": [{"start": {"line": start}, "end": {"line": end}}]}  # fmt: skip

    doc: dict[str, Any] = {
        "warnings": [_warning_json(w, where) for w in _ordered(result.warnings)],
        "sources": [
            {
                "filename": path,
                "language": "Dockerfile",
                "data": base64.b64encode(source).decode("ascii"),
            }
        ],
    }
    if result.error is not None:
        line = _error_line(result.error)
        doc["buildError"] = {"message": _error_text(result.error),
                             **({"location": where(line, line)} if line else {})}  # fmt: skip
    return doc
