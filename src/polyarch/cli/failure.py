"""How a failed command is told: the error, where in the Dockerfile (the lines around the
instruction, marked), the stage and platform, every other platform that failed too; or, when
progress is JSON, one `fatal` event so that the stream stays JSON to the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from polyarch.errors import BuildError, DockerfileError, PolyarchError
from polyarch.frontend.files import read_context_file

PROGRESS_SCHEMA_VERSION = 1
CONTEXT_LINES = 2  # lines shown before and after the failing instruction


class _State:
    json_progress = False  # set when a command's progress is JSON


state = _State()


def _split_location(location: str) -> tuple[str, int | None]:
    path, colon, line = location.rpartition(":")
    if colon and line.isdigit():
        return path, int(line)
    return location, None


def where(exc: PolyarchError) -> tuple[str, int | None]:
    """The Dockerfile path and line an error comes from, if it names one."""
    if isinstance(exc, BuildError) and exc.location:
        return _split_location(exc.location)
    if isinstance(exc, DockerfileError):
        return exc.path, exc.line
    return "", None


def excerpt(path: str, line: int) -> list[str]:
    """The Dockerfile lines around `line`, as buildx shows them (`>>>` marks the line)."""
    try:  # as the Dockerfile was read: an error must not print what a symlink points at
        text = read_context_file(Path(path)).decode("utf-8", "replace")
    except OSError:
        return []
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return []
    first, last = max(1, line - CONTEXT_LINES), min(len(lines), line + CONTEXT_LINES)
    width = len(str(last))
    out = [" " + "-" * 20]
    for n in range(first, last + 1):
        marker = ">>>" if n == line else "   "
        out.append(f" {n:>{width}} | {marker} {lines[n - 1][:200]}")
    out.append(" " + "-" * 20)
    return out


def text_lines(exc: PolyarchError) -> list[str]:
    """The error as the terminal shows it."""
    lines = [f"error: {exc}"]
    if isinstance(exc, BuildError) and (exc.stage or exc.platform):
        stage = f"stage {exc.stage!r}" if exc.stage else "the build"
        lines.append(f" in {stage}" + (f" for {exc.platform}" if exc.platform else ""))
    path, line = where(exc)
    if line is not None:
        lines += excerpt(path, line)
    if isinstance(exc, BuildError):
        for other in exc.others:
            label = " ".join(x for x in (other.platform, other.stage and f"stage {other.stage!r}")
                             if x)  # fmt: skip
            first = str(other).splitlines()[0] if str(other) else ""
            lines.append(f"also failed ({label or 'another step'}): {first}")
    return lines


def fatal_event(exc: BaseException, status: int) -> dict[str, Any]:
    """The last event of a JSON progress stream when the command fails."""
    out: dict[str, Any] = {
        "event": "fatal",
        "version": PROGRESS_SCHEMA_VERSION,
        "time": time.time(),
        "status": status,
        "error": str(exc),
    }
    if isinstance(exc, PolyarchError):
        path, line = where(exc)
        if path:
            out["file"] = path
        if line is not None:
            out["line"] = line
    if isinstance(exc, BuildError):
        if exc.platform:
            out["platform"] = exc.platform
        if exc.stage:
            out["stage"] = exc.stage
        if exc.others:
            out["others"] = [
                {"error": str(o), "platform": o.platform, "stage": o.stage} for o in exc.others
            ]
    return out


def fatal_json(exc: BaseException, status: int) -> str:
    return json.dumps(fatal_event(exc, status))
