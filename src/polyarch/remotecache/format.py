"""The exported build cache's format (pure: no I/O).

An export is an OCI artifact: an image manifest whose `artifactType` and config media type are
polyarch's, whose layers are the step results (the same blobs as the images', so a registry
stores each once), and whose config lists every entry: the step's cache key, the layer it made
(or none), when the step first ran, what it was, and when the entry was exported.

Several writers may share one reference (a CI matrix: one job per platform). Each writes the
entries of its own builds under a tag of its own, `TAG--W` where W names the writer (its
platforms and target), and the merge of every writer's entries under `TAG`. An import reads
`TAG` and every `TAG--*`: a writer never replaces another's entries, whatever the order or
overlap of their exports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, cast

from polyarch.digest import Digest
from polyarch.errors import InvalidDigestError, PolyarchError, UsageError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Manifest
from polyarch.units import parse_duration, parse_size

ARTIFACT_TYPE: Final = "application/vnd.polyarch.buildcache.v1"
CONFIG_TYPE: Final = "application/vnd.polyarch.buildcache.config.v1+json"
FORMAT_VERSION: Final = 1
WRITER_SEPARATOR: Final = "--"
# What an export holds: the steps whose layers the images hold (min), or every step (max).
ExportMode: TypeAlias = Literal["min", "max"]
MAX_ENTRIES: Final = 100_000
LAYER_TYPES: Final = frozenset({mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD, mt.OCI_LAYER,
                                mt.DOCKER_LAYER_GZIP})  # fmt: skip


class CacheFormatError(PolyarchError):
    """An exported cache that polyarch cannot read (not its format, or damaged)."""


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """One step of an exported cache."""

    key: str
    layer: Descriptor | None  # None: the step changed no file
    diff_id: Digest | None
    created: str  # when the step first ran (a cached step keeps it)
    description: str
    exported: float  # seconds since the epoch, when this entry was last exported

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "layer": self.layer.to_json() if self.layer else None,
            "diffID": str(self.diff_id) if self.diff_id else None,
            "created": self.created,
            "description": self.description,
            "exported": self.exported,
        }

    @property
    def size(self) -> int:
        return self.layer.size if self.layer else 0


def encode_config(records: Iterable[CacheRecord]) -> bytes:
    """The config blob: the entries sorted by key, compact JSON (the same records always give
    the same bytes)."""
    entries = [r.to_json() for r in sorted(records, key=lambda r: r.key)]
    doc = {"version": FORMAT_VERSION, "entries": entries}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_config(raw: bytes, where: str) -> list[CacheRecord]:
    """The entries of a config blob; anything malformed is a `CacheFormatError`."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheFormatError(f"{where}: the cache's config is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise CacheFormatError(f"{where}: not a polyarch build cache of version {FORMAT_VERSION}")
    entries = doc.get("entries")
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        raise CacheFormatError(f"{where}: the cache's entries are not a list (or too many)")
    return [parse_record(e, f"{where}: entry {i}") for i, e in enumerate(entries)]


def parse_record(obj: Any, where: str) -> CacheRecord:
    """One entry as `CacheRecord.to_json` writes it (anything else: `CacheFormatError`)."""
    if not isinstance(obj, dict):
        raise CacheFormatError(f"{where}: not an object")
    key, created, description = obj.get("key"), obj.get("created", ""), obj.get("description", "")
    exported = obj.get("exported", 0)
    if not isinstance(key, str) or not key or not isinstance(created, str):
        raise CacheFormatError(f"{where}: key and created must be strings")
    if not isinstance(description, str) or isinstance(exported, bool):
        raise CacheFormatError(f"{where}: description must be a string")
    if not isinstance(exported, int | float):
        raise CacheFormatError(f"{where}: exported must be a number")
    layer = diff_id = None
    if obj.get("layer") is not None:
        try:
            layer = Descriptor.from_json(obj["layer"], where)
            diff_id = Digest.parse(str(obj.get("diffID")))
        except (PolyarchError, InvalidDigestError) as exc:
            raise CacheFormatError(f"{where}: {exc}") from None
        if layer.media_type not in LAYER_TYPES:
            raise CacheFormatError(f"{where}: {layer.media_type} is not a layer type")
    return CacheRecord(key, layer, diff_id, created, description, float(exported))


def merge(*sources: Iterable[CacheRecord]) -> list[CacheRecord]:
    """The union of several exports' entries; for a key in more than one, the latest export's."""
    best: dict[str, CacheRecord] = {}
    for records in sources:
        for record in records:
            kept = best.get(record.key)
            if kept is None or record.exported > kept.exported:
                best[record.key] = record
    return sorted(best.values(), key=lambda r: r.key)


def limit(
    records: Sequence[CacheRecord],
    *,
    now: float,
    max_age: float | None = None,
    max_size: int | None = None,
) -> list[CacheRecord]:
    """Drop entries exported longer ago than `max_age` seconds, then the oldest until the
    layers they name fit in `max_size` bytes (a layer named by several entries counts once)."""
    kept = [r for r in records if max_age is None or now - r.exported <= max_age]
    if max_size is not None:
        kept.sort(key=lambda r: (-r.exported, r.key))  # newest first
        sizes: dict[Digest, int] = {}
        fitting = []
        for record in kept:
            extra = {record.layer.digest: record.size} if record.layer else {}
            total = sum({**sizes, **extra}.values())
            if total > max_size:
                continue
            sizes.update(extra)
            fitting.append(record)
        kept = fitting
    return sorted(kept, key=lambda r: r.key)


def artifact(config: Descriptor, records: Sequence[CacheRecord]) -> Manifest:
    """The artifact manifest: its config (the entries) and each distinct layer once."""
    seen: dict[Digest, Descriptor] = {}
    for record in records:
        if record.layer is not None and record.layer.digest not in seen:
            seen[record.layer.digest] = Descriptor(record.layer.media_type, record.layer.digest,
                                                   record.layer.size)  # fmt: skip
    layers = sorted(seen.values(), key=lambda d: str(d.digest))
    return Manifest.create(config, layers, artifact_type=ARTIFACT_TYPE)


def check_artifact(manifest: Manifest, where: str) -> None:
    if manifest.config.media_type != CONFIG_TYPE:
        raise CacheFormatError(f"{where} is not a polyarch build cache (its config is "
                               f"{manifest.config.media_type})")  # fmt: skip


def writer_tag(tag: str, platforms: Sequence[str], target: str) -> str:
    """The tag one writer's own entries go under: `TAG--` and a name for what it builds."""
    label = "_".join(p.replace("/", "-") for p in sorted(platforms))
    digest = hashlib.sha256(json.dumps([sorted(platforms), target]).encode()).hexdigest()[:8]
    room = 128 - len(tag) - len(WRITER_SEPARATOR) - 9
    if room < 8:
        raise CacheFormatError(f"cache tag {tag!r} is too long to add a writer's name to")
    return f"{tag}{WRITER_SEPARATOR}{label[:room]}-{digest}"


def is_writer_tag(candidate: str, tag: str) -> bool:
    return candidate.startswith(tag + WRITER_SEPARATOR)


_EXPORT_KEYS: Final = {"registry": {"type", "ref", "mode", "max-age", "max-size", "ignore-error"},
                       "local": {"type", "dest", "tag", "mode", "max-age", "max-size",
                                 "ignore-error"}}  # fmt: skip
_IMPORT_KEYS: Final = {"registry": {"type", "ref"}, "local": {"type", "src", "tag"}}


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """A parsed `--cache-to` / `--cache-from`."""

    kind: str  # registry | local
    where: str  # a reference, or a directory
    tag: str = "cache"  # local: the layout's ref name
    mode: ExportMode = "min"  # export
    max_age: float | None = None  # export: seconds
    max_size: int | None = None  # export: bytes
    ignore_error: bool = False  # export: a failure is a warning

    def __str__(self) -> str:
        return self.where if self.kind == "registry" else f"{self.where}:{self.tag}"


def parse_cache_spec(text: str, *, export: bool) -> CacheSpec:
    """`type=registry,ref=REF[,mode=min|max][,max-age=D][,max-size=S][,ignore-error=true]`,
    `type=local,dest=DIR` (export) or `type=local,src=DIR` (import), or a bare reference (as
    buildx takes it). Keys that do not apply are refused, never ignored."""
    flag = "--cache-to" if export else "--cache-from"
    if "=" not in text:
        text = f"type=registry,ref={text}"
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key or key in fields:
            raise UsageError(f"{flag}: {part!r} is not KEY=VALUE (or is repeated) in {text!r}")
        fields[key.strip()] = value.strip()
    kind = fields.get("type", "")
    allowed = (_EXPORT_KEYS if export else _IMPORT_KEYS).get(kind)
    if allowed is None:
        raise UsageError(f"{flag}: type must be registry or local, got {kind or 'none'!r}"
                         + ("" if kind not in ("inline", "gha", "s3", "azblob") else
                            f" ({kind} caches are not supported)"))  # fmt: skip
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise UsageError(f"{flag} type={kind} takes {', '.join(sorted(allowed - {'type'}))}; "
                         f"not {', '.join(unknown)}")  # fmt: skip
    place = fields.get("ref") if kind == "registry" else fields.get("dest" if export else "src")
    if not place:
        need = "ref=REF" if kind == "registry" else ("dest=DIR" if export else "src=DIR")
        raise UsageError(f"{flag} type={kind} needs {need}")
    mode = fields.get("mode", "min")
    if mode not in ("min", "max"):
        raise UsageError(f"{flag}: mode must be min or max, got {mode!r}")
    ignore = fields.get("ignore-error", "false").lower()
    if ignore not in ("true", "false"):
        raise UsageError(f"{flag}: ignore-error must be true or false, got {ignore!r}")
    return CacheSpec(
        kind, place, fields.get("tag", "cache"), cast(ExportMode, mode),
        parse_duration(fields["max-age"]) if "max-age" in fields else None,
        parse_size(fields["max-size"]) if "max-size" in fields else None,
        ignore == "true",
    )  # fmt: skip
