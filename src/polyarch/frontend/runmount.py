"""`RUN --mount=...` values, parsed as BuildKit's `instructions/commands_runmount.go` does. Pure.

A value is a CSV record of `key=value` fields (and the bare flags `ro`, `rw`, `required`).
Every value is expanded with the step's variables first. Unknown keys, unknown types and
options a type does not take are errors, with BuildKit's messages.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from polyarch.units import parse_bool

MOUNT_TYPES: Final = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING: Final = ("shared", "private", "locked")
_KEYS: Final = ("type", "from", "source", "target", "readonly", "id", "sharing", "required",
                "size", "mode", "uid", "gid", "src", "dst", "destination", "ro", "rw",
                "readwrite", "env")  # fmt: skip
_SIZE: Final = re.compile(r"\A(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?\Z")


class MountSyntaxError(ValueError):
    """A --mount value BuildKit refuses."""


@dataclass(frozen=True, slots=True)
class MountSpec:
    type: str = "bind"
    from_: str = ""
    source: str = ""
    target: str = ""
    readonly: bool = True
    size: int = 0
    id: str = ""
    sharing: str = ""
    required: bool = False
    env: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


def _suggest(value: str, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, options, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _bool(key: str, value: str) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise MountSyntaxError(f"invalid value for {key}: {value}")
    return parsed


def ram_in_bytes(text: str) -> int:
    """docker/go-units RAMInBytes: `64m`, `1g`, `512k`, `1024` (binary multiples)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(text)
    size = float(match.group(1))
    unit = (match.group(2) or "").lower()
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}[unit]
    return int(size * factor)


def fields_of(value: str) -> list[str]:
    try:
        rows = list(csv.reader([value], strict=True))
    except csv.Error as exc:
        raise MountSyntaxError(f"failed to parse csv mounts: {exc}") from None
    return rows[0] if rows else []


def parse_mount(value: str, expand: Callable[[str], str]) -> MountSpec:
    kind = "bind"
    from_ = source = target = cache_id = sharing = ""
    readonly = True
    ro_auto = True
    size = 0
    required = False
    env: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    for field in fields_of(value):
        key, has_value, raw = field.partition("=")
        key = key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                readonly, ro_auto = True, False
            elif key in ("readwrite", "rw"):
                readonly, ro_auto = False, False
            elif key == "required":
                if kind not in ("secret", "ssh"):
                    raise MountSyntaxError(f"unexpected key '{key}' for mount type '{kind}'")
                required = True
            else:
                raise MountSyntaxError(f"invalid field '{field}' must be a key=value pair")
            continue
        text = expand(raw)
        if key == "type":
            lowered = text.lower()
            if lowered not in MOUNT_TYPES:
                raise MountSyntaxError(
                    f'unsupported mount type "{text}"{_suggest(lowered, MOUNT_TYPES)}'
                )
            kind = lowered
        elif key == "from":
            from_ = text
        elif key in ("source", "src"):
            source = text
        elif key in ("target", "dst", "destination"):
            target = text
        elif key in ("readonly", "ro"):
            readonly, ro_auto = _bool(key, text), False
        elif key in ("readwrite", "rw"):
            readonly, ro_auto = not _bool(key, text), False
        elif key == "required":
            if kind not in ("secret", "ssh"):
                raise MountSyntaxError(f"unexpected key '{key}' for mount type '{kind}'")
            required = _bool(key, text)
        elif key == "size":
            if kind != "tmpfs":
                raise MountSyntaxError(f"unexpected key '{key}' for mount type '{kind}'")
            try:
                size = ram_in_bytes(text)
            except ValueError:
                raise MountSyntaxError(f"invalid value for {key}: {text}") from None
        elif key == "id":
            cache_id = text
        elif key == "sharing":
            lowered = text.lower()
            if lowered not in SHARING:
                raise MountSyntaxError(
                    f'unsupported sharing value "{text}"{_suggest(lowered, SHARING)}'
                )
            sharing = lowered
        elif key in ("mode", "uid", "gid"):
            try:
                number = int(text, 8 if key == "mode" else 10)
            except ValueError:
                raise MountSyntaxError(f"invalid value {text} for {key}") from None
            if number < 0 or number > 0xFFFFFFFF:
                raise MountSyntaxError(f"invalid value {text} for {key}")
            if key == "mode":
                mode = number
            elif key == "uid":
                uid = number
            else:
                gid = number
        elif key == "env":
            env = text
        else:
            raise MountSyntaxError(f"unexpected key '{key}' in '{field}'{_suggest(key, _KEYS)}")
    if kind not in ("secret", "ssh", "cache"):
        for name, given in (("mode", mode), ("uid", uid), ("gid", gid)):
            if given is not None:
                raise MountSyntaxError(f'{name} not allowed for "{kind}" type mounts')
    if ro_auto:
        readonly = kind not in ("cache", "tmpfs")
    if kind == "secret":
        if from_:
            raise MountSyntaxError("secret mount should not have a from")
        if sharing:
            raise MountSyntaxError("secret mount should not define sharing")
        if not source and not target and not cache_id:
            raise MountSyntaxError("invalid secret mount. one of source, target required")
        if source and cache_id:
            raise MountSyntaxError("both source and id can't be set")
    if sharing and kind != "cache":
        raise MountSyntaxError(f"invalid cache sharing set for {kind} mount")
    return MountSpec(kind, from_, source, target, readonly, size, cache_id, sharing, required,
                     env, mode, uid, gid)  # fmt: skip
