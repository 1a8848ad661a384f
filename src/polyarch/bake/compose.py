"""The `build:` sections of Compose files as bake targets, as buildx reads them (its
bake/compose.go, on compose-go): one target per service that builds, all in the `default`
group; the `x-bake` extension adds what Compose lacks (tags, platforms, outputs, ...).

Variables are interpolated as Compose does (`${VAR}`, `$VAR`, `${VAR:-default}`,
`${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`, `${VAR:?error}`, `${VAR?error}`, `$$`), from the
environment given (the process's, `.env` of the working directory under it). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from polyarch.bake.definition import (
    BakeError,
    Config,
    Entry,
    Group,
    Target,
    attest_entry,
    cache_entries,
    entries_from,
    valid_target_name,
)

_VARIABLE = re.compile(
    r"\$(?:(\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: Mapping[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op is None:
            return value or ""
        unset_or_empty = value is None or (op.startswith(":") and value == "")
        kind = op[-1]
        if kind == "-":
            return interpolate(arg, env, where) if unset_or_empty else (value or "")
        if kind == "+":
            return "" if unset_or_empty else interpolate(arg, env, where)
        if unset_or_empty:  # "?"
            raise BakeError(f"{where}: required variable {name} is missing a value: {arg}")
        return value or ""

    return _VARIABLE.sub(one, text)


def _interpolated(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, env, where)
    if isinstance(value, list):
        return [_interpolated(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: _interpolated(v, env, where) for k, v in value.items()}
    return value


def is_compose(name: str, data: Any) -> bool:
    lowered = name.lower()
    if lowered.endswith((".yml", ".yaml")):
        return True
    if lowered.endswith((".json", ".hcl")):
        return False
    return isinstance(data, dict) and ("services" in data or "secrets" in data)


def compose_config(files: list[tuple[str, Any]], env: Mapping[str, str]) -> Config:
    """Targets from the Compose documents (already read as YAML), merged in order."""
    services: dict[str, dict[str, Any]] = {}
    secrets: dict[str, Any] = {}
    for name, data in files:
        if data is None:
            raise BakeError(f"{name}: empty compose file")
        if not isinstance(data, dict):
            raise BakeError(f"{name}: a compose file is a mapping")
        document = _interpolated(data, env, name)
        for key, service in (document.get("services") or {}).items():
            merged = services.setdefault(str(key), {})
            _merge_service(merged, service if isinstance(service, dict) else {})
        secrets.update(document.get("secrets") or {})
    config = Config()
    default = Group("default")
    for service_name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        if not isinstance(build, dict):
            raise BakeError(f"service {service_name!r}: build must be a path or a mapping")
        name = service_name.replace(".", "_")
        if not valid_target_name(name):
            raise BakeError(f'invalid service name "{name}": only "[a-zA-Z0-9_-]+" are allowed')
        target = _target(name, build, service, secrets, env)
        default.targets.append(name)
        config.targets.append(target)
    config.groups.append(default)
    return config


def _merge_service(into: dict[str, Any], service: Mapping[str, Any]) -> None:
    for key, value in service.items():
        if key == "build" and isinstance(value, dict) and isinstance(into.get("build"), dict):
            into["build"] = {**into["build"], **value}
        else:
            into[key] = value


def _mapping(value: Any, what: str) -> dict[str, str | None]:
    """A Compose mapping, as a map or as a list of `KEY=VALUE` (a `KEY` alone: no value)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): (None if v is None else _scalar(v)) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, str | None] = {}
        for item in value:
            key, eq, text = str(item).partition("=")
            out[key] = text if eq else None
        return out
    raise BakeError(f"{what} must be a mapping or a list")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value).split()


def _size(value: Any) -> str | None:
    """A Compose size (`2gb`, `512m`, bytes) as docker's MemBytes writes it."""
    if value is None or value in ("", 0):
        return None
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", text)
    if match is None:
        raise BakeError(f"invalid shm_size {value!r}")
    number = float(match.group(1)) * 1024 ** "bkmgt".index(match.group(2) or "b")
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if number >= scale:
            amount = number / scale
            return f"{amount:.4g}{unit}"
    return f"{int(number)}B"


def _target(name: str, build: Mapping[str, Any], service: Mapping[str, Any],
            secrets: Mapping[str, Any], env: Mapping[str, str]) -> Target:  # fmt: skip
    target = Target(name)
    if build.get("context"):
        target.context = str(build["context"])
    if build.get("dockerfile"):
        target.dockerfile = str(build["dockerfile"])
    if build.get("dockerfile_inline"):
        target.dockerfile_inline = str(build["dockerfile_inline"])
    contexts = _mapping(build.get("additional_contexts"), "additional_contexts")
    if contexts:
        target.contexts = _named_contexts({k: v or "" for k, v in contexts.items()})
    if build.get("shm_size"):
        target.shm_size = _size(build["shm_size"])
    if build.get("network"):
        target.network = str(build["network"])
    ulimits = build.get("ulimits") or {}
    if ulimits:
        target.ulimits = [_ulimit(k, v) for k, v in ulimits.items()]
    hosts = build.get("extra_hosts")
    if hosts:
        pairs: dict[str, str | None] = {}
        items = hosts.items() if isinstance(hosts, dict) else (
            re.split(r"[=:]", str(h), maxsplit=1) for h in hosts)  # fmt: skip
        for host, ip in items:
            pairs.setdefault(str(host), None)
            joined = ",".join(filter(None, [pairs[str(host)], _scalar(ip)]))
            pairs[str(host)] = joined
        target.extra_hosts = pairs
    ssh = [_ssh(item) for item in (build.get("ssh") or [])]
    if ssh:
        target.ssh = sorted(ssh, key=lambda e: (e["id"], e.get("paths", [])))
    secret_entries: list[Entry] = []
    for item in build.get("secrets") or []:
        source = str(item.get("source")) if isinstance(item, dict) else str(item)
        spec = secrets.get(source) or {}
        if spec.get("external"):
            raise BakeError(f"unsupported external secret {source}")
        entry: Entry = {"id": source}
        if spec.get("file"):
            entry["src"] = str(spec["file"])
        if spec.get("environment"):
            entry["env"] = str(spec["environment"])
        secret_entries.append(entry)
    if secret_entries:
        target.secret = secret_entries
    labels = _mapping(build.get("labels"), "labels")
    if labels:
        target.labels = {k: v or "" for k, v in labels.items()}
    target.tags = _list(build.get("tags")) or None
    environment = _mapping(service.get("environment"), "environment")
    args = _mapping(build.get("args"), "args")
    resolved: dict[str, str | None] = {}
    for key, given in args.items():
        # `- KEY`: from the service's environment, else the project's
        value = given if given is not None else environment.get(key) or env.get(key)
        if value is not None:
            resolved[key] = value
    if resolved:
        target.args = resolved
    cache_from = [e for item in _list(build.get("cache_from")) for e in cache_entries(item)]
    target.cache_from = cache_from or None
    cache_to = [e for item in _list(build.get("cache_to")) for e in cache_entries(item)]
    target.cache_to = cache_to or None
    target.platforms = _list(build.get("platforms")) or None
    attests = []
    if build.get("sbom"):
        attests.append(attest_entry(_canonical_attest("sbom", str(build["sbom"]))))
    if build.get("provenance"):
        attests.append(attest_entry(_canonical_attest("provenance", str(build["provenance"]))))
    target.attest = attests or None
    if build.get("no_cache"):
        target.no_cache = True
    if build.get("pull"):
        target.pull = True
    if build.get("target"):
        target.target = str(build["target"])
    _x_bake(target, build.get("x-bake"))
    if not target.tags and service.get("image"):
        target.tags = [str(service["image"])]
    return target


def _canonical_attest(kind: str, value: str) -> str:
    if value.lower() in ("true", "1"):
        return f"type={kind}"
    if value.lower() in ("false", "0"):
        return f"type={kind},disabled=true"
    return f"type={kind},{value}" if "=" in value else f"type={kind},mode={value}"


def _ssh(item: Any) -> Entry:
    if isinstance(item, dict):
        ((key, path),) = item.items() if len(item) == 1 else ((None, None),)
        if key is None:
            raise BakeError(f"invalid ssh entry {item!r}")
        return {"id": str(key), "paths": [str(path)]} if path else {"id": str(key)}
    key, eq, path = str(item).partition("=")
    return {"id": key, "paths": [path]} if eq and path else {"id": key}


def _ulimit(name: str, value: Any) -> str:
    if isinstance(value, dict):
        soft, hard = value.get("soft"), value.get("hard")
    else:
        soft = hard = value
    return f"{name}={soft}:{hard}"


def _named_contexts(contexts: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in contexts.items():
        linked = value.startswith(("service:", "target:"))
        out[key] = "target:" + value.split(":", 1)[1].replace(".", "_") if linked else value
    return out


def _x_bake(target: Target, extension: Any) -> None:
    if not extension:
        return
    if not isinstance(extension, dict):
        raise BakeError(f"x-bake of {target.name} must be a mapping")

    def strings(key: str) -> list[str]:
        return _list(extension.get(key))

    if strings("tags"):
        target.tags = list(dict.fromkeys([*(target.tags or []), *strings("tags")]))
    for key, attr in (("cache-from", "cache_from"), ("cache-to", "cache_to")):
        if strings(key):
            entries = [e for item in strings(key) for e in cache_entries(item)]
            setattr(target, attr, [*(getattr(target, attr) or []), *entries])
    if strings("secret"):
        target.secret = [*(target.secret or []), *(entries_from(strings("secret"), "secret") or [])]
    if strings("ssh"):
        added = entries_from(strings("ssh"), "ssh") or []
        target.ssh = sorted([*(target.ssh or []), *added],
                            key=lambda e: (e["id"], e.get("paths", [])))  # fmt: skip
    if strings("platforms"):
        target.platforms = list(dict.fromkeys([*(target.platforms or []), *strings("platforms")]))
    if strings("output"):
        target.output = [*(target.output or []), *(entries_from(strings("output"), "output") or [])]
    if "pull" in extension:
        target.pull = bool(extension["pull"])
    if "no-cache" in extension:
        target.no_cache = bool(extension["no-cache"])
    if strings("no-cache-filter"):
        target.no_cache_filter = list(dict.fromkeys([*(target.no_cache_filter or []),
                                                     *strings("no-cache-filter")]))  # fmt: skip
    contexts = extension.get("contexts")
    if isinstance(contexts, dict) and contexts:
        merged = dict(target.contexts or {})
        for key, value in _named_contexts({k: str(v) for k, v in contexts.items()}).items():
            merged.setdefault(key, value)
        target.contexts = merged
