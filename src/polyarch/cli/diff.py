"""`polyarch diff A [B]`: what differs between two images, or two platforms of one."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from polyarch.api import diff_images
from polyarch.cli.common import (
    echo_json,
    format_option,
    human,
    open_session,
    parse_platforms,
    root_option,
)

if TYPE_CHECKING:  # the comparison's modules load when `diff` runs, not with every command
    from polyarch.layers.compare import FileChange, ImageDiff

SHOWN_FILES = 200  # in text; --format json lists every one


@click.command("diff")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--platform", "platforms", multiple=True, help="The platform to compare of "
              "indexes (repeatable; default: each either has); with one image, two platforms "
              "of it to compare with each other.")  # fmt: skip
@root_option
@format_option
@click.pass_context
def diff_command(
    ctx: click.Context,
    a: str,
    b: str | None,
    platforms: tuple[str, ...],
    root: Path | None,
    fmt: str,
) -> None:
    """Show what differs between images A and B (or two --platform of A): config fields,
    layers, and files added, removed and changed, with their type, mode, owner, size,
    content and time. A and B are names of the local store (`polyarch images`), OCI layouts
    (oci:DIR[:NAME]) or registry references. Exits 1 when they differ.

    \b
    Example:
      polyarch diff registry.lan/app:1.2.0 registry.lan/app:1.2.1
      polyarch diff --platform linux/amd64 --platform linux/arm64 registry.lan/app:1.2.0
    """
    names = [a] if b is None else [a, b]
    reports = diff_images(open_session(ctx), names, parse_platforms(platforms), root)
    if fmt == "json":
        echo_json({"same": all(r.same for r in reports), "images": [r.to_json() for r in reports]})
    else:
        click.echo("\n\n".join("\n".join(_text(r)) for r in reports))
    if not all(r.same for r in reports):
        raise click.exceptions.Exit(1)


def _text(report: ImageDiff) -> list[str]:
    lines = [f"{report.platform}: {report.a} → {report.b}"]
    lines += [f"  problem: {p}" for p in report.problems]
    if report.same:
        return [*lines, "  the same: no difference"]
    if report.config:
        lines.append(f"  config: {len(report.config)} field(s) differ")
        lines += [f"    {c.field}: {_value(c.a)} → {_value(c.b)}" for c in report.config]
    if report.layers:
        total = max(report.layers_total)
        lines.append(f"  layers: {len(report.layers)} of {total} differ")
        for layer in report.layers:
            lines.append(f"    {layer.index + 1}: {_layer(layer.a)} → {_layer(layer.b)}")
    if report.files or report.layers:
        counts = {k: sum(1 for f in report.files if f.change == k)
                  for k in ("added", "removed", "changed")}  # fmt: skip
        lines.append(f"  files: {counts['added']} added, {counts['removed']} removed, "
                     f"{counts['changed']} changed (of {report.files_total[0]} and "
                     f"{report.files_total[1]})")  # fmt: skip
        lines += [f"    {_file(f)}" for f in report.files[:SHOWN_FILES]]
        if len(report.files) > SHOWN_FILES:
            lines.append(f"    ... and {len(report.files) - SHOWN_FILES} more (--format json "
                         "lists every one)")  # fmt: skip
    return lines


def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, str):
        return repr(value) if len(value) <= 100 else repr(value[:97] + "...")
    text = str(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _layer(value: tuple[str, int, str] | None) -> str:
    if value is None:
        return "(none)"
    return f"{value[0][:19]} {human(value[1])}"


def _file(change: FileChange) -> str:
    path = "/" + change.path
    if change.change != "changed":
        info = change.a or change.b
        assert info is not None
        return f"{change.change} {path} ({info.shown()})"
    assert change.a is not None and change.b is not None
    parts = []
    for name in change.fields:
        if name == "mtime":
            parts.append(f"mtime {_time(change.a.mtime)} → {_time(change.b.mtime)}")
        elif name == "content":
            parts.append(f"content {change.a.digest[:19]} → {change.b.digest[:19]}")
        elif name == "owner":
            parts.append(f"owner {change.a.uid}:{change.a.gid} → {change.b.uid}:{change.b.gid}")
        elif name == "mode":
            parts.append(f"mode {change.a.mode:04o} → {change.b.mode:04o}")
        elif name == "xattrs":
            parts.append(f"xattrs {dict(change.a.xattrs)} → {dict(change.b.xattrs)}")
        else:
            parts.append(f"{name} {getattr(change.a, name)} → {getattr(change.b, name)}")
    return f"changed {path}: " + "; ".join(parts)


def _time(seconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
