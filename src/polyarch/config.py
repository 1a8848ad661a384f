"""`polyarch.toml`: a project's settings (what the seed kept in Makefile.var, and more). Pure.

    [image]
    registry = "127.0.0.1:5000"        # the seed's HUB
    name = "dx-arch-ui"                # IMG = registry/name
    base_version = "1.1.0"             # BASE_VERSION
    [build]
    platforms = ["linux/amd64", "linux/arm64"]
    dockerfile = "Dockerfile"
    context = "."
    build_once = "auto"                # or "off", or a list of stage names
    ca_certs = "host"                  # or a path, or "none"
    secrets = ["id=npmrc,src=.npmrc"]  # --secret (paths relative to the file)
    ssh = ["default"]                  # --ssh
    trace = "build-trace.json"         # --trace: the build as a Chrome trace
    step_timeout = "30m"               # --step-timeout: stop a RUN step that runs longer
    builder = "farm"                   # --builder: build on its nodes (polyarch builder ls)
    [build.args]                       # --build-arg (proxy ARGs go here too)
    NODE_ENV = "production"
    [build.cache]                      # --cache-from (a list), --cache-to
    from = ["type=registry,ref=registry.lan:5000/app:buildcache"]
    to = "type=registry,ref=registry.lan:5000/app:buildcache,mode=max"
    [build.contexts]                   # --build-context NAME=VALUE
    shared = "../shared"
    [registries]
    insecure = ["registry.lan:5000"]
    [registries.mirrors]               # --registry-mirror REGISTRY=MIRROR: base images
    "docker.io" = ["mirror.lan:5000"]  # are pulled through these first
    [verify]                           # what `polyarch release` and `verify` check
    http = ["80/=200", "9113/metrics~nginx_up 1"]   # PORT/PATH[=STATUS][~TEXT]
    run = ""                           # a command instead of the entrypoint
    timeout = 120                      # seconds per platform

Unknown keys and wrong types are errors naming the file and the key. Command-line flags
override file values; `effective` says where each value came from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from polyarch.errors import PolyarchError
from polyarch.platform import Platform


class ConfigError(PolyarchError):
    """A polyarch.toml that cannot be used as written."""


_SCHEMA: Final[dict[str, dict[str, type | tuple[type, ...]]]] = {
    "image": {"registry": str, "name": str, "base_version": str},
    "build": {
        "platforms": list,
        "dockerfile": str,
        "context": str,
        "build_once": (str, list),
        "ca_certs": str,
        "args": dict,
        "target": str,
        "secrets": list,
        "ssh": list,
        "contexts": dict,
        "cache": dict,
        "trace": str,
        "step_timeout": str,
        "builder": str,
        "provenance": (str, bool),
        "sbom": (str, bool),
        "attest": list,
    },
    "registries": {"insecure": list, "mirrors": dict},
    "verify": {"http": list, "run": str, "timeout": int},
    "bake": {"files": list, "targets": list},
}
DEFAULTS: Final[dict[str, Any]] = {
    "image.registry": "",
    "image.name": "",
    "image.base_version": "0.0.0",
    "build.platforms": [],
    "build.dockerfile": "Dockerfile",
    "build.context": ".",
    "build.build_once": "auto",
    "build.ca_certs": "none",
    "build.args": {},
    "build.target": "",
    "build.secrets": [],
    "build.ssh": [],
    "build.contexts": {},
    "build.cache": {},
    "build.trace": "",
    "build.step_timeout": "",
    "build.builder": "",
    "build.provenance": "",
    "build.sbom": "",
    "build.attest": [],
    "registries.insecure": [],
    "registries.mirrors": {},
    "verify.http": [],
    "verify.run": "",
    "verify.timeout": 120,
    "bake.files": [],
    "bake.targets": [],
}


@dataclass(frozen=True, slots=True)
class ProjectConfig:
    path: str
    values: Mapping[str, Any] = field(default_factory=dict)  # "section.key" -> value, as set

    def get(self, key: str) -> Any:
        return self.values.get(key, DEFAULTS[key])

    @property
    def image(self) -> str:
        """`registry/name`, or "" when the file names no image."""
        registry, name = self.get("image.registry"), self.get("image.name")
        if not name:
            return ""
        return f"{registry.rstrip('/')}/{name}" if registry else name

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return Platform.parse_list(self.get("build.platforms"))


def parse_config(text: str, path: str = "polyarch.toml") -> ProjectConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    values: dict[str, Any] = {}
    for section, content in data.items():
        schema = _SCHEMA.get(section)
        if schema is None:
            known = ", ".join(f"[{s}]" for s in _SCHEMA)
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in content.items():
            expected = schema.get(key)
            if expected is None:
                known = ", ".join(sorted(schema))
                raise ConfigError(f"{path}: unknown key {section}.{key} (known: {known})")
            if not isinstance(value, expected):
                names = expected if isinstance(expected, tuple) else (expected,)
                wanted = " or ".join(_TOML_NAMES[t] for t in names)
                got = _TOML_NAMES.get(type(value), type(value).__name__)
                raise ConfigError(f"{path}: {section}.{key} must be {wanted}, not {got}")
            values[f"{section}.{key}"] = _checked(path, f"{section}.{key}", value)
    return ProjectConfig(path, values)


_TOML_NAMES: Final[dict[type, str]] = {
    str: "a string", list: "an array", dict: "a table", int: "an integer", bool: "a boolean",
    float: "a number",
}  # fmt: skip


def _checked(path: str, key: str, value: Any) -> Any:
    if key in (
        "build.platforms",
        "registries.insecure",
        "build.build_once",
        "verify.http",
        "build.secrets",
        "build.ssh",
        "build.attest",
        "bake.files",
        "bake.targets",
    ) and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {key} must be an array of strings")
        if key == "build.platforms":
            try:
                Platform.parse_list(value)
            except PolyarchError as exc:
                raise ConfigError(f"{path}: {key}: {exc}") from None
    if key == "verify.timeout" and (isinstance(value, bool) or value <= 0):
        raise ConfigError(f"{path}: {key} must be a positive number of seconds")
    if key == "registries.mirrors":
        for registry, mirrors in value.items():
            if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
                raise ConfigError(f"{path}: registries.mirrors.{registry} must be an array of "
                                  "mirror hosts")  # fmt: skip
    if key == "build.cache":
        unknown = sorted(set(value) - {"from", "to"})
        if unknown:
            raise ConfigError(f"{path}: build.cache takes from and to, not {', '.join(unknown)}")
        sources = value.get("from", [])
        if not isinstance(sources, list) or not all(isinstance(v, str) for v in sources):
            raise ConfigError(f"{path}: build.cache.from must be an array of strings")
        if not isinstance(value.get("to", ""), str):
            raise ConfigError(f"{path}: build.cache.to must be a string")
    if key in ("build.args", "build.contexts"):
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{path}: {key}.{bad[0]} must be a string")
    return value


def effective(config: ProjectConfig, flags: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(key, value, where it came from) for every setting: a flag, the file, or the default."""
    out = []
    for key in DEFAULTS:
        if key in flags and flags[key] not in (None, (), [], {}):
            out.append((key, flags[key], "command line"))
        elif key in config.values:
            out.append((key, config.values[key], config.path))
        else:
            out.append((key, DEFAULTS[key], "default"))
    return out
