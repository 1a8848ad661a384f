"""What attestations a build makes: buildx's `--provenance`, `--sbom` and `--attest` flags (and
their `polyarch.toml` and bake forms), parsed and checked. Pure.

buildx turns `--provenance VALUE` into `--attest type=provenance,...`: a boolean becomes
`disabled=!VALUE`, anything else is the attributes. The last entry of a type wins. BuildKit's
default mode, when provenance is asked for without one, is `max`; buildx adds `mode=min` to
every build that says nothing about provenance (here: to every push; `BUILDX_NO_DEFAULT_
ATTESTATIONS=1` turns that off)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from polyarch.errors import UsageError

ProvenanceMode: TypeAlias = Literal["min", "max"]
SlsaVersion: TypeAlias = Literal["v1", "v0.2"]
_TRUE = ("1", "t", "true", "yes", "on")
_FALSE = ("0", "f", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class ProvenanceSpec:
    mode: ProvenanceMode = "max"
    version: SlsaVersion = "v1"
    builder_id: str = ""
    reproducible: bool = False
    inline_only: bool = False  # only in image outputs (registry, OCI), not local/tar files
    filename: str = "provenance.json"


@dataclass(frozen=True, slots=True)
class SbomSpec:
    filename: str = "sbom.spdx.json"


@dataclass(frozen=True, slots=True)
class AttestSpec:
    """The attestations asked for. `provenance_said`: the build said something about
    provenance (so no default is added)."""

    provenance: ProvenanceSpec | None = None
    sbom: SbomSpec | None = None
    provenance_said: bool = False

    @property
    def any(self) -> bool:
        return self.provenance is not None or self.sbom is not None

    def with_default(self) -> AttestSpec:
        """buildx's default for a pushed image: `mode=min` provenance unless the build said
        anything about provenance."""
        if self.provenance_said:
            return self
        return AttestSpec(ProvenanceSpec(mode="min", inline_only=True), self.sbom, True)


def canonical(kind: Literal["provenance", "sbom"], value: str) -> str:
    """`--provenance VALUE` / `--sbom VALUE` as the `--attest` entry buildx makes of it."""
    if value == "":
        return ""
    lowered = value.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return f"type={kind},disabled={'false' if lowered in _TRUE else 'true'}"
    return f"type={kind},{value}"


def _fields(entry: str) -> dict[str, str]:
    try:
        row = next(csv.reader([entry]), [])
    except csv.Error as exc:
        raise UsageError(f"--attest {entry!r}: {exc}") from None
    out: dict[str, str] = {}
    for part in row:
        key, has_value, value = part.partition("=")
        if not has_value:
            raise UsageError(f"--attest {entry!r}: {part!r} is not KEY=VALUE")
        out[key.strip().lower()] = value
    return out


def _bool(value: str, what: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise UsageError(f"{what}: {value!r} is not a boolean")


def parse_attests(entries: Sequence[str]) -> AttestSpec:
    """`--attest` entries (`type=provenance|sbom[,disabled=BOOL][,ATTR=VALUE...]`), in order;
    the last of each type wins, as in buildx."""
    last: dict[str, dict[str, str]] = {}
    for entry in entries:
        if not entry:
            continue
        fields = _fields(entry)
        kind = fields.pop("type", "")
        if not kind:
            raise UsageError(f"--attest {entry!r}: type is required (type=provenance or "
                             "type=sbom)")  # fmt: skip
        if kind not in ("provenance", "sbom"):
            raise UsageError(f"--attest type={kind}: polyarch makes type=provenance and "
                             "type=sbom attestations")  # fmt: skip
        last[kind] = fields
    provenance = sbom = None
    said = "provenance" in last
    if "provenance" in last:
        provenance = _provenance(last["provenance"])
    if "sbom" in last:
        sbom = _sbom(last["sbom"])
    return AttestSpec(provenance, sbom, said)


def _disabled(fields: dict[str, str], kind: str) -> bool:
    value = fields.pop("disabled", None)
    return value is not None and _bool(value, f"--attest type={kind},disabled")


def _provenance(fields: dict[str, str]) -> ProvenanceSpec | None:
    if _disabled(fields, "provenance"):
        return None
    mode = fields.pop("mode", "max")
    if mode == "full":
        mode = "max"
    if mode not in ("min", "max"):
        raise UsageError(f"--attest type=provenance: mode={mode} (min or max)")
    version = fields.pop("version", "v1")
    if version not in ("v1", "v0.2"):
        raise UsageError(f"--attest type=provenance: version={version} (v1 or v0.2)")
    spec = ProvenanceSpec(
        mode="min" if mode == "min" else "max", version="v0.2" if version == "v0.2" else "v1",
        builder_id=fields.pop("builder-id", ""),
        reproducible=_bool(fields.pop("reproducible", "false"), "provenance reproducible"),
        inline_only=_bool(fields.pop("inline-only", "false"), "provenance inline-only"),
        filename=fields.pop("filename", "provenance.json"),
    )  # fmt: skip
    for key in ("capture-usage", "complete-materials"):
        if key in fields:
            raise UsageError(f"--attest type=provenance,{key}=...: polyarch does not record "
                             "this (it has no resource sampler or network proxy)")  # fmt: skip
    if fields:
        raise UsageError(f"--attest type=provenance: unknown attribute(s) "
                         f"{', '.join(sorted(fields))} (mode, version, builder-id, "
                         "reproducible, inline-only, filename)")  # fmt: skip
    _filename(spec.filename)
    return spec


def _sbom(fields: dict[str, str]) -> SbomSpec | None:
    if _disabled(fields, "sbom"):
        return None
    if "generator" in fields:
        raise UsageError("--attest type=sbom,generator=...: polyarch reads the image's package "
                         "databases itself; it runs no generator image")  # fmt: skip
    filename = fields.pop("filename", "sbom.spdx.json")
    if fields:
        raise UsageError(f"--attest type=sbom: unknown attribute(s) "
                         f"{', '.join(sorted(fields))} (filename)")  # fmt: skip
    _filename(filename)
    return SbomSpec(filename)


def _filename(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise UsageError(f"--attest filename={name!r}: a plain file name is needed")


def attest_entries(attest: Sequence[str], provenance: str | None, sbom: str | None) -> list[str]:
    """The `--attest` entries of a build's flags: `--attest` first, then `--sbom` and
    `--provenance` (buildx merges them so; the last of a type wins)."""
    entries = list(attest)
    if sbom is not None:
        entries.append(canonical("sbom", sbom))
    if provenance is not None:
        entries.append(canonical("provenance", provenance))
    return [e for e in entries if e]


def from_config(values: Mapping[str, object]) -> list[str]:
    """`polyarch.toml`'s `provenance = "mode=max"|true|false`, `sbom = true|false` and
    `attest = ["type=...", ...]` as `--attest` entries."""
    entries: list[str] = []
    attest = values.get("attest", [])
    if not isinstance(attest, list) or not all(isinstance(a, str) for a in attest):
        raise UsageError("polyarch.toml: attest must be a list of strings")
    entries += attest
    for kind in ("sbom", "provenance"):
        value = values.get(kind)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str):
            raise UsageError(f"polyarch.toml: {kind} must be a boolean or a string")
        entries.append(canonical("sbom" if kind == "sbom" else "provenance", value))
    return [e for e in entries if e]
