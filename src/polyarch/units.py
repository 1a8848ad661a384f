"""Sizes, durations and booleans as people write them on command lines (pure)."""

from __future__ import annotations

import re

from polyarch.errors import UsageError

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}  # fmt: skip
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """`10GB`, `512MiB`, `1.5g`, `100`: bytes (decimal and binary units, as buildx takes)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise UsageError(f"not a size: {text!r} (e.g. 10GB, 512MiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """`24h`, `30m`, `7d`, `1h30m`: seconds."""
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhdw])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise UsageError(f"not a duration: {text!r} (e.g. 24h, 30m, 7d)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


__all__ = ["parse_duration", "parse_size"]


def parse_bool(text: str) -> bool | None:
    """`1`/`t`/`true` and `0`/`f`/`false`, any case (as BuildKit's and buildx's flags take
    them); None for anything else, which the caller refuses in its own words."""
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    return None
