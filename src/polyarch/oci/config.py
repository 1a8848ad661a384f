"""The image config: one model for reading a base image's and writing a built one's. Pure.

Parsing is strict about types (a hostile or broken config is a `ManifestError` naming the
field, never a crash later). Writing follows BuildKit's documents: the field order of the Go
structs it serialises (`created, author, architecture, os, variant, config, rootfs,
history`; inside `config`: `User, ExposedPorts, Env, Entrypoint, Cmd, Volumes, WorkingDir,
Labels, StopSignal, ArgsEscaped, Healthcheck, OnBuild, Shell`), empty fields left out, maps
with sorted keys, compact UTF-8. Fields outside the OCI and Docker image specs are dropped,
as BuildKit drops them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from polyarch.digest import Digest
from polyarch.errors import InvalidDigestError, InvalidPlatformError, ManifestError
from polyarch.oci._json import load_json
from polyarch.platform import Platform

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _empty() -> Mapping[str, str]:
    return _EMPTY


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """Docker's HEALTHCHECK: the test and durations in nanoseconds (0: the default)."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period),
                           ("StartInterval", self.start_interval),
                           ("Retries", self.retries)):  # fmt: skip
            if value:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (("created", self.created), ("created_by", self.created_by),
                           ("author", self.author), ("comment", self.comment)):  # fmt: skip
            if value:
                out[key] = value
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An image config. `raw` keeps the exact bytes it was read from (b"" when built)."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    created: str | None = None
    author: str | None = None
    user: str | None = None
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str | None = None
    labels: Mapping[str, str] = field(default_factory=_empty, hash=False)
    stop_signal: str | None = None
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None
    onbuild: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def platform(self) -> Platform:
        try:
            return Platform.of(self.os, self.architecture, self.variant)
        except InvalidPlatformError:
            return Platform(self.os, self.architecture, self.variant)

    @property
    def history_length(self) -> int:
        return len(self.history)

    def replace(self, **changes: Any) -> ImageConfig:
        """A copy with some fields changed (and no raw bytes: it is a new document)."""
        return dataclasses.replace(self, raw=b"", **changes)

    # environment ---------------------------------------------------------------------------

    def env_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            name, _, value = item.partition("=")
            out[name] = value
        return out

    def with_env(self, name: str, value: str) -> ImageConfig:
        """BuildKit's addEnv: a variable already set is replaced where it stands."""
        items = list(self.env)
        for i, item in enumerate(items):
            if item.partition("=")[0] == name:
                items[i] = f"{name}={value}"
                break
        else:
            items.append(f"{name}={value}")
        return self.replace(env=tuple(items))

    # documents -----------------------------------------------------------------------------

    @classmethod
    def empty(cls, platform: Platform) -> ImageConfig:
        """BuildKit's image for FROM scratch: WorkingDir "/" and the default PATH."""
        env = () if platform.os == "windows" else (f"PATH={DEFAULT_PATH}",)
        return cls(platform.os, platform.architecture, platform.variant,
                   working_dir="/", env=env)  # fmt: skip

    @classmethod
    def parse(cls, raw: bytes, what: str = "image config") -> ImageConfig:
        doc = load_json(raw, what)
        os_ = _text(doc, "os", what, required=True)
        arch = _text(doc, "architecture", what, required=True)
        cfg = _obj(doc.get("config"), f"{what}: config")
        rootfs = _obj(doc.get("rootfs"), f"{what}: rootfs")
        try:
            diff_ids = tuple(Digest.parse(d) for d in _strings(rootfs, "diff_ids", what) or ())
        except InvalidDigestError as exc:
            raise ManifestError(f"{what}: rootfs.diff_ids: {exc}") from None
        history_json = doc.get("history") or []
        if not isinstance(history_json, list):
            raise ManifestError(f"{what}: history must be a list")
        return cls(
            os=os_ or "",
            architecture=arch or "",
            variant=_text(doc, "variant", what),
            os_version=_text(doc, "os.version", what),
            created=_text(doc, "created", what),
            author=_text(doc, "author", what),
            user=_text(cfg, "User", what),
            exposed_ports=tuple(sorted(_obj(cfg.get("ExposedPorts"), f"{what}: ExposedPorts"))),
            env=_strings(cfg, "Env", what) or (),
            entrypoint=_strings(cfg, "Entrypoint", what),
            cmd=_strings(cfg, "Cmd", what),
            volumes=tuple(sorted(_obj(cfg.get("Volumes"), f"{what}: Volumes"))),
            working_dir=_text(cfg, "WorkingDir", what),
            labels=_labels(cfg, what),
            stop_signal=_text(cfg, "StopSignal", what),
            args_escaped=cfg.get("ArgsEscaped") is True,
            healthcheck=_healthcheck(cfg.get("Healthcheck"), what),
            onbuild=_strings(cfg, "OnBuild", what) or (),
            shell=_strings(cfg, "Shell", what) or (),
            diff_ids=diff_ids,
            history=tuple(_history(h, f"{what}: history[{i}]") for i, h in enumerate(history_json)),
            raw=raw,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.created:
            doc["created"] = self.created
        if self.author:
            doc["author"] = self.author
        doc["architecture"] = self.architecture
        doc["os"] = self.os
        if self.os_version:
            doc["os.version"] = self.os_version
        if self.variant:
            doc["variant"] = self.variant
        doc["config"] = self.config_json()
        doc["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.history:
            doc["history"] = [h.to_json() for h in self.history]
        return doc

    def config_json(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if self.user:
            cfg["User"] = self.user
        if self.exposed_ports:
            cfg["ExposedPorts"] = {p: {} for p in sorted(self.exposed_ports)}
        if self.env:
            cfg["Env"] = list(self.env)
        if self.entrypoint:
            cfg["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            cfg["Cmd"] = list(self.cmd)
        if self.volumes:
            cfg["Volumes"] = {v: {} for v in sorted(self.volumes)}
        if self.working_dir:
            cfg["WorkingDir"] = self.working_dir
        if self.labels:
            cfg["Labels"] = dict(sorted(self.labels.items()))
        if self.stop_signal:
            cfg["StopSignal"] = self.stop_signal
        if self.args_escaped:
            cfg["ArgsEscaped"] = True
        if self.healthcheck is not None:
            cfg["Healthcheck"] = self.healthcheck.to_json()
        if self.onbuild:
            cfg["OnBuild"] = list(self.onbuild)
        if self.shell:
            cfg["Shell"] = list(self.shell)
        return cfg

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{what} must be an object")
    return value


def _text(obj: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ManifestError(f"{what}: missing {key!r}")
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{what}: {key!r} must be a string")
    return value


def _strings(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{what}: {key} must be a list of strings")
    return tuple(value)


def _labels(cfg: Mapping[str, Any], what: str) -> Mapping[str, str]:
    value = cfg.get("Labels")
    if value is None:
        return _EMPTY
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(f"{what}: Labels must map strings to strings")
    return MappingProxyType(dict(value))


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{what}: {key} must be an integer")
    return value


def _healthcheck(value: Any, what: str) -> Healthcheck | None:
    if value is None:
        return None
    where = f"{what}: Healthcheck"
    obj = _obj(value, where)
    return Healthcheck(
        _strings(obj, "Test", where) or (),
        _int(obj, "Interval", where),
        _int(obj, "Timeout", where),
        _int(obj, "StartPeriod", where),
        _int(obj, "StartInterval", where),
        _int(obj, "Retries", where),
    )


def _history(value: Any, what: str) -> HistoryEntry:
    obj = _obj(value, what)
    empty = obj.get("empty_layer", False)
    if not isinstance(empty, bool):
        raise ManifestError(f"{what}: empty_layer must be a boolean")
    return HistoryEntry(
        _text(obj, "created", what),
        _text(obj, "created_by", what),
        _text(obj, "author", what),
        _text(obj, "comment", what),
        empty,
    )
