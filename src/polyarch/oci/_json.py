"""Strict JSON for OCI documents: UTF-8, no duplicate keys, a size limit. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from polyarch.errors import ManifestError

MAX_DOCUMENT_SIZE: Final = 4 * 1024 * 1024  # containerd's limit for manifests and indexes
EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


def empty_map() -> Mapping[str, str]:
    return EMPTY


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"duplicate key {key!r} in JSON document: refusing ambiguous input")
        out[key] = value
    return out


def load_json(raw: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON object strictly (UTF-8, no duplicate keys, an object at the top)."""
    if len(raw) > MAX_DOCUMENT_SIZE:
        raise ManifestError(f"{what} is {len(raw)} bytes, over the {MAX_DOCUMENT_SIZE} limit")
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{what} is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ManifestError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def str_field(obj: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ManifestError(f"{what}: missing {key!r}")
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{what}: {key!r} must be a string")
    return value


def str_map(obj: Mapping[str, Any], key: str, what: str) -> Mapping[str, str]:
    value = obj.get(key)
    if value is None:
        return EMPTY
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(f"{what}: {key!r} must map strings to strings")
    return MappingProxyType(dict(value))
