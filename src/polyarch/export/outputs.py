"""Where a built image goes, as typed values: buildx's `--output` (`-o`) forms, parsed and
checked before anything runs. Pure.

    type=registry[,name=REF[,REF]][,push-by-digest=true]   = type=image,push=true
        [,attestations=index|referrers]   where attestations go: in the index (BuildKit's
        storage, the default) or as OCI 1.1 referrers of each platform's manifest
    type=image[,push=false]                                  kept in the local store (always)
    type=oci,dest=FILE|-[,tar=true]   type=oci,dest=DIR,tar=false
    type=docker[,dest=FILE|-]         (no dest: loaded into the local engine, as --load)
    type=local,dest=DIR               the final stage's files (per platform, several)
    type=tar,dest=FILE|-              the same as one tar stream
    -o DIR  (= type=local)            -o -  (= type=tar,dest=-)

`compression=gzip|zstd|uncompressed`, `compression-level=N` and `force-compression=true` take
the image outputs (registry, oci, docker). Any other type or key is refused with the reason,
never ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from polyarch.errors import UsageError

Compression = Literal["gzip", "zstd", "uncompressed"]
LEVELS: Final = {"gzip": (0, 9), "zstd": (1, 22), "uncompressed": (0, 0)}


@dataclass(frozen=True, slots=True)
class LayerCompression:
    """How an output's layers are compressed. Without `force`, the layers of the base images
    keep the compression they came with (BuildKit's rule); with it, every layer takes this."""

    kind: Compression = "gzip"
    level: int | None = None
    force: bool = False

    @property
    def is_default(self) -> bool:
        return self == LayerCompression()


@dataclass(frozen=True, slots=True)
class RegistryOutput:
    names: tuple[str, ...] = ()  # empty: the build's tags
    push_by_digest: bool = False
    compression: LayerCompression = LayerCompression()
    referrers: bool = False  # attestations pushed as referrers, not listed in the index


@dataclass(frozen=True, slots=True)
class OciOutput:
    dest: str  # a file, "-" (stdout), or a directory with `tar` False
    tar: bool = True
    name: str = ""  # the layout's ref name (default: the first tag's, else latest)
    compression: LayerCompression = LayerCompression()


@dataclass(frozen=True, slots=True)
class DockerOutput:
    dest: str = ""  # a file, "-" (stdout), or "" to load into the local engine
    name: str = ""  # the name it is loaded or saved under (default: the tags)
    compression: LayerCompression = LayerCompression()

    @property
    def load(self) -> bool:
        return not self.dest


@dataclass(frozen=True, slots=True)
class LocalOutput:
    """The final stage's files in a directory; with several platforms, one subdirectory each
    (`linux_amd64/`), unless `platform_split` is False (then they are merged)."""

    dest: str
    platform_split: bool | None = None  # None: split when there are several platforms


@dataclass(frozen=True, slots=True)
class TarOutput:
    dest: str  # a file or "-" (stdout)
    platform_split: bool | None = None


Output = RegistryOutput | OciOutput | DockerOutput | LocalOutput | TarOutput

_KEYS: Final = {
    "registry": {"name", "push-by-digest", "compression", "compression-level",
                 "force-compression", "oci-mediatypes", "push", "attestations"},
    "image": {"name", "push", "push-by-digest", "compression", "compression-level",
              "force-compression", "oci-mediatypes", "attestations"},
    "oci": {"dest", "name", "tar", "compression", "compression-level", "force-compression",
            "oci-mediatypes"},
    "docker": {"dest", "name", "compression", "compression-level", "force-compression"},
    "local": {"dest", "platform-split"},
    "tar": {"dest", "platform-split"},
}  # fmt: skip


def parse_output(text: str) -> Output | None:
    """One `--output` value; None for an image kept in the local store only."""
    if text == "-":
        return TarOutput("-")
    if "=" not in text and "," not in text:
        return LocalOutput(text)  # the path shorthand, as buildx takes it
    spec: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"--output wants KEY=VALUE pairs, got {part!r} in {text!r}")
        if key in spec:
            raise UsageError(f"--output: {key} given twice in {text!r}")
        spec[key] = value.strip()
    kind = spec.pop("type", "")
    if kind not in _KEYS:
        raise UsageError("--output type must be registry, image, oci, docker, local or tar, got "
                         f"{kind or 'none'!r}")  # fmt: skip
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        takes = ", ".join(sorted(_KEYS[kind]))
        raise UsageError(f"--output type={kind} takes {takes}; not {', '.join(unknown)}")
    if _flag(spec, "oci-mediatypes", True) is False:
        raise UsageError("--output oci-mediatypes=false: polyarch writes OCI media types only")
    if kind in ("registry", "image"):
        if not _flag(spec, "push", kind == "registry"):
            return None  # type=image: kept in the local store, which every build does
        names = tuple(n for n in spec.get("name", "").split(",") if n)
        storage = spec.get("attestations", "index")
        if storage not in ("index", "referrers"):
            raise UsageError(f"--output attestations={storage}: index or referrers")
        return RegistryOutput(names, bool(_flag(spec, "push-by-digest", False)),
                              _compression(spec), storage == "referrers")  # fmt: skip
    if kind == "oci":
        tar = bool(_flag(spec, "tar", True))
        dest = _dest(spec, kind, required=True)
        if dest == "-" and not tar:
            raise UsageError("--output type=oci,tar=false writes a directory: name it with dest=")
        return OciOutput(dest, tar, spec.get("name", ""), _compression(spec))
    if kind == "docker":
        return DockerOutput(_dest(spec, kind, required=False), spec.get("name", ""),
                            _compression(spec))  # fmt: skip
    split = _flag(spec, "platform-split", None)
    if kind == "local":
        dest = _dest(spec, kind, required=True)
        if dest == "-":
            raise UsageError("--output type=local writes a directory; for a stream use "
                             "type=tar,dest=-")  # fmt: skip
        return LocalOutput(dest, split)
    return TarOutput(_dest(spec, kind, required=True), split)


def parse_outputs(values: Sequence[str], *, push: bool = False,
                  load: bool = False) -> tuple[Output, ...]:  # fmt: skip
    """Every `--output`, plus `--push` (a registry output) and `--load` (the local engine)."""
    outputs = [o for o in (parse_output(v) for v in values) if o is not None]
    if push and not any(isinstance(o, RegistryOutput) for o in outputs):
        outputs.append(RegistryOutput())
    if load and not any(isinstance(o, DockerOutput) and o.load for o in outputs):
        outputs.append(DockerOutput())
    streamed = [o for o in outputs if getattr(o, "dest", "") == "-"]
    if len(streamed) > 1:
        raise UsageError("only one --output can write to stdout (dest=-)")
    return tuple(outputs)


def _flag(spec: dict[str, str], key: str, default: bool | None) -> bool | None:
    value = spec.get(key)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise UsageError(f"--output {key} must be true or false, got {value!r}")


def _dest(spec: dict[str, str], kind: str, *, required: bool) -> str:
    dest = spec.get("dest", "")
    if required and not dest:
        raise UsageError(f"--output type={kind} needs dest=PATH (or dest=- for stdout)")
    return dest


def _compression(spec: dict[str, str]) -> LayerCompression:
    kind = spec.get("compression", "gzip") or "gzip"
    if kind == "estargz":
        raise UsageError("--output compression=estargz: polyarch writes gzip, zstd or "
                         "uncompressed layers, not eStargz")  # fmt: skip
    if kind not in LEVELS:
        raise UsageError(f"--output compression must be gzip, zstd or uncompressed, got {kind!r}")
    level_text = spec.get("compression-level", "")
    level: int | None = None
    if level_text:
        low, high = LEVELS[kind]
        if not level_text.lstrip("-").isdigit() or not low <= int(level_text) <= high:
            raise UsageError(f"--output compression-level for {kind} is {low} to {high}, got "
                             f"{level_text!r}")  # fmt: skip
        level = int(level_text)
    return LayerCompression(kind, level, bool(_flag(spec, "force-compression", False)))  # type: ignore[arg-type]
