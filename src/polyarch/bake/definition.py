"""A bake definition as buildx holds it: targets and groups, how a target inherits and merges
(`inherits`, several files, several blocks of one name), `--set` overrides, the targets a
command asks for (groups, patterns, `target:` contexts pulling in other targets), and the JSON
`--print` writes. Pure; follows buildx's bake/bake.go.

Entries that buildx keeps as typed lists (cache-from, cache-to, output, secret, ssh, attest)
are dicts here, parsed from their CSV form (`type=registry,ref=...`) or given as objects.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyarch.errors import UsageError
from polyarch.units import parse_bool

_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

Entry = dict[str, Any]


class BakeError(UsageError):
    """A bake file, a target or an override that cannot be used; the message says which."""


# entries -------------------------------------------------------------------------------------


def csv_fields(text: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(text), skipinitialspace=False), [])
    except csv.Error as exc:
        raise BakeError(f"{text!r}: {exc}") from None


def _pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in csv_fields(text):
        key, eq, value = item.partition("=")
        if not eq:
            raise BakeError(f"invalid {what} {text!r}: {item!r} is not key=value")
        out[key.strip().lower()] = value
    return out


def cache_entries(value: str) -> list[Entry]:
    """`--cache-from`/`--cache-to` forms: `type=...,k=v` or a bare reference (each field of a
    CSV of references is one registry entry)."""
    if not value:
        return []
    if "=" not in value:
        return [{"type": "registry", "ref": ref} for ref in csv_fields(value) if ref]
    entry: Entry = dict(_pairs(value, "cache entry"))
    if not entry.get("type"):
        raise BakeError(f"type required for {value!r}")
    return [entry]


def export_entry(value: str) -> Entry:
    fields = csv_fields(value)
    if len(fields) == 1 and fields[0] == value and not value.startswith("type="):
        return {"type": "tar" if value == "-" else "local", "dest": value}
    entry: Entry = dict(_pairs(value, "output"))
    if not entry.get("type"):
        raise BakeError(f"type is required for output {value!r}")
    return entry


def secret_entry(value: str) -> Entry:
    entry: Entry = {}
    kind = ""
    for key, item in _pairs(value, "secret").items():
        if key == "type":
            if item not in ("file", "env"):
                raise BakeError(f"unsupported secret type {item!r}")
            kind = item
        elif key == "id":
            entry["id"] = item
        elif key in ("source", "src"):
            entry["src"] = item
        elif key == "env":
            entry["env"] = item
        else:
            raise BakeError(f"unexpected key {key!r} in secret {value!r}")
    if kind == "env" and not entry.get("env"):
        entry["env"] = entry.pop("src", "")
    return entry


def ssh_entry(value: str) -> Entry:
    name, eq, paths = value.partition("=")
    entry: Entry = {"id": name}
    if eq:
        entry["paths"] = paths.split(",")
    return entry


def attest_entry(value: str) -> Entry:
    entry: Entry = {}
    for key, item in _pairs(value, "attest").items():
        if key == "disabled":
            if item.lower() in ("true", "1"):
                entry["disabled"] = True
        else:
            entry[key] = item
    if not entry.get("type"):
        raise BakeError(f"attest type is required in {value!r}")
    return entry


def entries_from(values: Any, kind: str) -> list[Entry] | None:
    """A list attribute of entries as written in a file: strings (CSV forms) or objects."""
    if values is None:
        return None
    if not isinstance(values, list):
        raise BakeError(f"{kind} must be a list")
    parsers: dict[str, Callable[[str], list[Entry]]] = {
        "cache-from": cache_entries, "cache-to": cache_entries,
        "output": lambda v: [export_entry(v)], "secret": lambda v: [secret_entry(v)],
        "ssh": lambda v: [ssh_entry(v)], "attest": lambda v: [attest_entry(v)],
    }  # fmt: skip
    parse = parsers[kind]
    out: list[Entry] = []
    for value in values:
        if value is None or value == "":
            continue
        if isinstance(value, dict):
            out.append(_entry_object(value, kind))
        else:
            out.extend(parse(str(value)))
    return out


def _entry_object(value: Mapping[str, Any], kind: str) -> Entry:
    entry: Entry = {}
    for key, item in value.items():
        if item is None or item == "":
            continue
        if kind == "ssh" and key == "paths":
            entry["paths"] = [str(p) for p in item] if isinstance(item, list) else [str(item)]
        elif kind == "attest" and key == "disabled":
            if item in (True, "true"):
                entry["disabled"] = True
        elif kind == "secret" and key == "source":
            entry["src"] = str(item)
        else:
            entry[str(key)] = item if isinstance(item, bool) else str(item)
    if kind in ("cache-from", "cache-to", "output", "attest") and not entry.get("type"):
        raise BakeError(f"type required for {json.dumps(dict(value))}")
    return entry


def _remove_dupes(entries: list[Entry]) -> list[Entry]:
    """buildx's removeDupes: from the back, a duplicate is swapped with the last entry and
    dropped (the order is buildx's, whatever it makes)."""
    items = list(entries)
    for i in range(len(items) - 2, -1, -1):
        for j in range(i + 1, len(items)):
            if items[i] == items[j]:
                items[j], items[-1] = items[-1], items[j]
                items.pop()
                break
    return items


def _by_id(entries: list[Entry]) -> list[Entry]:
    """Secrets and SSH keys: one per id, the later in the place of the first."""
    out: list[Entry] = []
    where: dict[str, int] = {}
    for entry in entries:
        key = str(entry.get("id", ""))
        if key in where:
            out[where[key]] = entry
        else:
            where[key] = len(out)
            out.append(entry)
    return out


def _normalize_entries(entries: list[Entry] | None, kind: str) -> list[Entry] | None:
    if not entries:
        return None
    if kind in ("secret", "ssh"):
        return _by_id(entries)
    if kind == "attest":
        return _by_type(entries)
    return _remove_dupes(entries)


def _by_type(entries: list[Entry]) -> list[Entry]:
    out: list[Entry] = []
    where: dict[str, int] = {}
    for entry in entries:
        key = str(entry.get("type", ""))
        if key in where:
            out[where[key]] = {**out[where[key]], **entry}
        else:
            where[key] = len(out)
            out.append(entry)
    return out


def _merge_entries(a: list[Entry] | None, b: list[Entry] | None, kind: str) -> list[Entry] | None:
    if b is None:
        return _normalize_entries(a, kind)
    if a is None:
        return _normalize_entries(b, kind)
    return _normalize_entries([*a, *b], kind)


# targets and groups --------------------------------------------------------------------------


@dataclass
class Target:
    """A target; None is "not set" (what inheritance and merging look at)."""

    name: str
    description: str = ""
    inherits: list[str] = field(default_factory=list)
    annotations: list[str] | None = None
    attest: list[Entry] | None = None
    context: str | None = None
    contexts: dict[str, str] | None = None
    dockerfile: str | None = None
    dockerfile_inline: str | None = None
    args: dict[str, str | None] | None = None
    labels: dict[str, str | None] | None = None
    tags: list[str] | None = None
    cache_from: list[Entry] | None = None
    cache_to: list[Entry] | None = None
    target: str | None = None
    secret: list[Entry] | None = None
    ssh: list[Entry] | None = None
    platforms: list[str] | None = None
    output: list[Entry] | None = None
    pull: bool | None = None
    no_cache: bool | None = None
    network: str | None = None
    no_cache_filter: list[str] | None = None
    shm_size: str | None = None
    ulimits: list[str] | None = None
    call: str | None = None
    entitlements: list[str] | None = None
    extra_hosts: dict[str, str | None] | None = None
    # where it came from: the directory of its file (relative paths are relative to it)
    source: str = ""
    linked: bool = False  # built because another target takes it as a context

    def merge(self, other: Target) -> None:
        """Lay `other` over this one, as buildx's Target.Merge."""
        if other.context is not None:
            self.context = other.context
        if other.dockerfile is not None:
            self.dockerfile = other.dockerfile
        if other.dockerfile_inline is not None:
            self.dockerfile_inline = other.dockerfile_inline
        for name in ("args", "labels", "extra_hosts"):
            theirs: dict[str, str | None] | None = getattr(other, name)
            for key, value in (theirs or {}).items():
                if value is None:
                    continue
                mine = getattr(self, name)
                if mine is None:
                    mine = {}
                    setattr(self, name, mine)
                mine[key] = value
        for key, value in (other.contexts or {}).items():
            self.contexts = {**(self.contexts or {}), key: value}
        for name in ("tags", "target", "call", "platforms", "cache_to", "output", "pull",
                     "no_cache", "network", "shm_size"):  # fmt: skip
            if getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        if other.annotations is not None:
            self.annotations = [*(self.annotations or []), *other.annotations]
        for name, kind in (("attest", "attest"), ("secret", "secret"), ("ssh", "ssh"),
                           ("cache_from", "cache-from")):  # fmt: skip
            if getattr(other, name) is not None:
                setattr(self, name, _merge_entries(getattr(self, name), getattr(other, name),
                                                   kind))  # fmt: skip
        for name in ("no_cache_filter", "ulimits", "entitlements"):
            if getattr(other, name) is not None:
                setattr(self, name, [*(getattr(self, name) or []), *getattr(other, name)])
        if other.description:
            self.description = other.description
        if other.source:
            self.source = other.source
        self.inherits = [*self.inherits, *other.inherits]

    def normalize(self) -> None:
        for name in ("annotations", "tags", "platforms", "no_cache_filter", "ulimits"):
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, [v for v in dict.fromkeys(values) if v != ""])
        for name, kind in (("attest", "attest"), ("secret", "secret"), ("ssh", "ssh"),
                           ("cache_from", "cache-from"), ("cache_to", "cache-to"),
                           ("output", "output")):  # fmt: skip
            setattr(self, name, _normalize_entries(getattr(self, name), kind))
        if self.network == "host":
            self.entitlements = [*(self.entitlements or []), "network.host"]
        if self.entitlements is not None:
            self.entitlements = [v for v in dict.fromkeys(self.entitlements) if v != ""]
        if self.contexts is not None:
            self.contexts = {k: v for k, v in self.contexts.items() if v != ""} or None

    def to_json(self) -> dict[str, Any]:
        """As `buildx bake --print` writes a target: buildx's field order, unset fields
        left out, maps by key, `${` in literal values escaped as `$${`."""
        out: dict[str, Any] = {}

        def put(key: str, value: Any) -> None:
            if value not in (None, "", [], {}):
                out[key] = value

        put("description", self.description)
        put("annotations", [_escape(a) for a in self.annotations or []])
        put("attest", [_sorted(e) for e in self.attest or []])
        put("context", self.context)
        put("contexts", _sorted(self.contexts or {}))
        put("dockerfile", self.dockerfile)
        if self.dockerfile_inline is not None:
            out["dockerfile-inline"] = _escape(self.dockerfile_inline)
        put("args", _strings(self.args))
        put("labels", _strings(self.labels))
        put("tags", self.tags)
        put("cache-from", [_sorted(e) for e in self.cache_from or []])
        put("cache-to", [_sorted(e) for e in self.cache_to or []])
        put("target", self.target)
        put("secret", [_secret_json(e) for e in self.secret or []])
        put("ssh", [_ssh_json(e) for e in self.ssh or []])
        put("platforms", self.platforms)
        put("output", [_sorted(e) for e in self.output or []])
        if self.pull is not None:
            out["pull"] = self.pull
        if self.no_cache is not None:
            out["no-cache"] = self.no_cache
        put("network", self.network)
        put("no-cache-filter", self.no_cache_filter)
        put("shm-size", self.shm_size)
        put("ulimits", self.ulimits)
        put("call", self.call)
        put("entitlements", self.entitlements)
        put("extra-hosts", _strings(self.extra_hosts))
        return out


def _escape(text: str) -> str:
    return text.replace("${", "$${").replace("%{", "%%{")


def _strings(values: Mapping[str, str | None] | None) -> dict[str, str | None]:
    return {k: (None if v is None else _escape(v)) for k, v in sorted((values or {}).items())}


def _sorted(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in sorted(entry)}


def _secret_json(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("id", "src", "env") if entry.get(k)}


def _ssh_json(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("id", "paths") if entry.get(k)}


@dataclass
class Group:
    name: str
    targets: list[str] = field(default_factory=list)
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        out["targets"] = self.targets
        return out


@dataclass
class Config:
    targets: list[Target] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)

    def add(self, other: Config) -> None:
        """Another file's definitions over these (buildx's mergeConfig then dedupeConfig)."""
        for group in other.groups:
            mine = self.group(group.name)
            if mine is None:
                self.groups.append(group)
            else:
                mine.targets = list(dict.fromkeys([*mine.targets, *group.targets]))
        for target in other.targets:
            existing = self.target(target.name)
            if existing is None:
                self.targets.append(target)
            else:
                existing.merge(target)

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)


# overrides (--set) ---------------------------------------------------------------------------

_LIST_KEYS = frozenset({"output", "cache-to", "cache-from", "tags", "platform", "secrets", "ssh",
                        "attest", "entitlements", "network", "annotations"})  # fmt: skip


@dataclass
class Override:
    value: str = ""
    values: list[str] = field(default_factory=list)
    append: bool = False
    given: bool = False


def parse_overrides(
    config: Config, items: Sequence[str], env: Mapping[str, str]
) -> dict[str, dict[str, Override]]:
    """`--set TARGETPATTERN.KEY[.SUBKEY][+]=VALUE` by target, then key."""
    out: dict[str, dict[str, Override]] = {}
    for item in items:
        head, eq, value = item.partition("=")
        append = head.endswith("+")
        keys = head.removesuffix("+").split(".", 2)
        if len(keys) < 2:
            raise BakeError(f"invalid override key {head.removesuffix('+')}, expected "
                            "target.name")  # fmt: skip
        if not eq and keys[1] != "args":
            raise BakeError(f"invalid override {item}, expected target.name=value")
        names = _expand_targets(config, keys[0])
        key = ".".join(keys[1:])
        for name in names:
            override = out.setdefault(name, {}).setdefault(key, Override())
            if keys[1] in _LIST_KEYS:
                if eq:
                    override.append = append
                    override.values.append(value)
                    override.given = True
                continue
            if keys[1] in ("secret",):
                if len(keys) != 3:
                    raise BakeError(f"invalid key {head}, secret requires name")
                if append:
                    raise BakeError(f"invalid key {head}, secret does not support append")
            if keys[1] in ("args", "contexts", "labels", "extra-hosts") and len(keys) != 3:
                raise BakeError(f"invalid key {head}, {keys[1]} requires name")
            if keys[1] == "args" and not eq:
                if keys[2] not in env:
                    continue
                override.value, override.given = env[keys[2]], True
                continue
            if eq:
                override.value, override.given = value, True
    return out


def _expand_targets(config: Config, pattern: str) -> list[str]:
    if any(t.name == pattern for t in config.targets):
        return [pattern]
    names = [t.name for t in config.targets if fnmatch.fnmatchcase(t.name, pattern)]
    if not names:
        raise BakeError(f"could not find any target matching '{pattern}'")
    return names


def _bool(value: str, key: str) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise BakeError(f"invalid value {value} for boolean key {key}")
    return parsed


def apply_overrides(target: Target, overrides: Mapping[str, Override]) -> None:
    """buildx's Target.AddOverrides."""
    secret_overrides: dict[str, str] = {}
    last = ("push", "load")  # they look at the outputs the other keys make
    ordered = sorted(overrides.items(), key=lambda item: item[0] in last)
    for key, override in ordered:
        if not override.given:
            continue
        value = override.value
        head, _, sub = key.partition(".")
        if head == "context":
            target.context = value
        elif head == "dockerfile":
            target.dockerfile = value
        elif head in ("args", "labels", "extra-hosts"):
            name = {"args": "args", "labels": "labels", "extra-hosts": "extra_hosts"}[head]
            mapping = getattr(target, name) or {}
            mapping[sub] = value
            setattr(target, name, mapping)
        elif head == "contexts":
            target.contexts = {**(target.contexts or {}), sub: value}
        elif head == "tags":
            target.tags = [*(target.tags or []), *override.values] if override.append else (
                list(override.values))  # fmt: skip
        elif head in ("cache-from", "cache-to"):
            entries = [e for v in override.values for e in cache_entries(v)]
            name = head.replace("-", "_")
            setattr(target, name, _merge_entries(getattr(target, name), entries, head)
                    if override.append else _normalize_entries(entries, head))  # fmt: skip
        elif head == "target":
            target.target = value
        elif head == "call":
            target.call = value
        elif head == "secret":
            secret_overrides[sub] = value
        elif head == "secrets":
            entries = [secret_entry(v) for v in override.values if v]
            target.secret = _merge_entries(target.secret, entries, "secret") if (
                override.append) else _normalize_entries(entries, "secret")  # fmt: skip
        elif head == "ssh":
            entries = [ssh_entry(v) for v in override.values if v]
            target.ssh = _merge_entries(target.ssh, entries, "ssh") if override.append else (
                _normalize_entries(entries, "ssh"))  # fmt: skip
        elif head == "platform":
            target.platforms = [*(target.platforms or []), *override.values] if (
                override.append) else list(override.values)  # fmt: skip
        elif head == "output":
            entries = [export_entry(v) for v in override.values if v]
            target.output = _merge_entries(target.output, entries, "output") if (
                override.append) else _normalize_entries(entries, "output")  # fmt: skip
        elif head == "entitlements":
            target.entitlements = [*(target.entitlements or []), *override.values]
        elif head == "annotations":
            target.annotations = [*(target.annotations or []), *override.values]
        elif head == "attest":
            entries = [attest_entry(v) for v in override.values if v]
            target.attest = _merge_entries(target.attest, entries, "attest")
        elif head == "no-cache":
            target.no_cache = _bool(value, "no-cache")
        elif head == "no-cache-filter":
            values = override.values or [value]
            target.no_cache_filter = [*(target.no_cache_filter or []), *values] if (
                override.append) else values  # fmt: skip
        elif head == "shm-size":
            target.shm_size = value
        elif head == "ulimits":
            values = override.values or [value]
            target.ulimits = [*(target.ulimits or []), *values] if override.append else values
        elif head == "network":
            target.network = override.values[-1] if override.values else value
        elif head == "pull":
            target.pull = _bool(value, "pull")
        elif head == "push":
            target.output = _push_override(target.output, _bool(value, "push"))
        elif head == "load":
            target.output = _load_override(target.output, _bool(value, "load"))
        else:
            raise BakeError(f"unknown key: {head}")
    for secret_id, value in secret_overrides.items():
        _update_secret(target, secret_id, value)


def _update_secret(target: Target, secret_id: str, value: str) -> None:
    if not secret_id:
        raise BakeError("invalid format for secret, expecting secret.<id>=<value>")
    for index, entry in enumerate(target.secret or []):
        if entry.get("id") != secret_id:
            continue
        new = secret_entry(value)
        if new.get("id") and new["id"] != secret_id:
            raise BakeError(f"secret override id {new['id']!r} does not match declared "
                            f"secret {secret_id!r}")  # fmt: skip
        updated = {k: v for k, v in entry.items() if k not in ("src", "env")}
        updated.update({k: v for k, v in new.items() if k in ("src", "env")})
        assert target.secret is not None
        target.secret = [*target.secret[:index], updated, *target.secret[index + 1 :]]
        return
    raise BakeError(f"secret {secret_id!r} must be declared before it can be overridden")


def _push_override(outputs: list[Entry] | None, push: bool) -> list[Entry]:
    items = [dict(o) for o in outputs or []]
    if not push:
        kept = [o for o in items if o.get("type") != "registry"]
        for o in kept:
            if o.get("type") == "image":
                o["push"] = "false"
        return kept
    add = all(o.get("type") == "docker" for o in items)
    for o in items:
        if o.get("type") == "image":
            o["push"] = "true"
    return [*items, {"type": "image", "push": "true"}] if add else items


def _load_override(outputs: list[Entry] | None, load: bool) -> list[Entry] | None:
    items = [dict(o) for o in outputs or []]
    if not load:
        return outputs
    for o in items:
        if o.get("type") == "docker" and not o.get("dest"):
            return items
        if o.get("type") not in ("image", "registry", "oci", "docker"):
            return items
    return [*items, {"type": "docker"}]


# resolving what a command asks for -----------------------------------------------------------


def match_names(config: Config, pattern: str) -> list[str]:
    if not any(c in pattern for c in "*?[]"):
        return [pattern]
    names = [g.name for g in config.groups if fnmatch.fnmatchcase(g.name, pattern)]
    names += [t.name for t in config.targets if fnmatch.fnmatchcase(t.name, pattern)]
    if not names:
        raise BakeError(f'could not find any target matching "{pattern}"')
    return names


def resolve_group(config: Config, name: str) -> tuple[list[str], list[str]]:
    """The targets a name stands for (itself when it is no group) and the groups crossed."""
    visited: dict[str, tuple[list[str], list[str]]] = {}

    def walk(current: str) -> tuple[list[str], list[str]]:
        if current in visited:
            return visited[current]
        group = config.group(current)
        if group is None:
            return [current], []
        visited[current] = ([], [])
        targets: list[str] = []
        groups = [current]
        for member in group.targets:
            inner_targets, inner_groups = walk(member)
            targets.extend(inner_targets or [member])
            groups.extend(inner_groups)
        visited[current] = (targets, groups)
        return targets, groups

    targets, groups = walk(name)
    return list(dict.fromkeys(targets)), list(dict.fromkeys(groups))


def resolve_target(
    config: Config, name: str, overrides: Mapping[str, Mapping[str, Override]]
) -> Target:
    resolved: dict[str, Target | None] = {}

    def walk(current: str, chain: tuple[str, ...]) -> Target | None:
        if current in resolved:
            return resolved[current]
        if current in chain:
            return None  # a cycle: buildx leaves the target out of its own ancestry
        own = config.target(current)
        if own is None:
            raise BakeError(f"failed to find target {current}")
        base = Target(current)
        for parent_name in own.inherits:
            parent = walk(parent_name, (*chain, current))
            if parent is not None:
                base.merge(parent)
        result = Target(current)
        result.merge(base)
        result.merge(own)
        result.name = current
        apply_overrides(result, overrides.get(current, {}))
        result.normalize()
        resolved[current] = result
        return result

    target = walk(name, ())
    assert target is not None
    target.inherits = []
    if target.context is None:
        target.context = "."
    if not target.dockerfile:
        target.dockerfile = "Dockerfile"
    return target


@dataclass(frozen=True, slots=True)
class Resolved:
    targets: dict[str, Target]
    groups: dict[str, Group]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.groups:
            out["group"] = {k: self.groups[k].to_json() for k in sorted(self.groups)}
        out["target"] = {k: self.targets[k].to_json() for k in sorted(self.targets)}
        return out

    def print_json(self) -> str:
        """`buildx bake --print`: two-space indentation, `<`, `>` and `&` escaped as Go's
        encoder does."""
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def read_targets(
    config: Config,
    names: Iterable[str],
    overrides: Mapping[str, Mapping[str, Override]],
) -> Resolved:
    """buildx's ReadTargets: the asked names (groups, patterns) to targets, overrides applied,
    targets that others take as `target:` contexts added (their output only the cache), and
    the `default` group listing what was asked."""
    asked = [n.replace(".", "_") for n in names] or ["default"]
    expanded = list(dict.fromkeys(m for n in asked for m in match_names(config, n)))
    targets: dict[str, Target] = {}
    groups: dict[str, Group] = {}
    for name in expanded:
        target_names, group_names = resolve_group(config, name)
        for target_name in target_names:
            targets[target_name] = resolve_target(config, target_name, overrides)
        for group_name in group_names:
            group = config.group(group_name)
            if group is not None:
                groups[group_name] = dataclasses.replace(group, targets=list(group.targets))
    for name in expanded:
        if name == "default" and "default" in groups:
            continue
        default = groups.setdefault("default", Group("default"))
        default.targets.append(name)
    if "default" in groups:
        groups["default"].targets = sorted(dict.fromkeys(groups["default"].targets))
    for name, target in list(targets.items()):
        _load_links(config, name, target, targets, overrides, [])
    for target in targets.values():
        target.context = _clean_context(target.context or ".")
    return Resolved(targets, groups)


def _load_links(
    config: Config,
    name: str,
    target: Target,
    targets: dict[str, Target],
    overrides: Mapping[str, Mapping[str, Override]],
    visited: list[str],
) -> None:
    visited = [*visited, name]
    for value in (target.contexts or {}).values():
        if not value.startswith("target:"):
            continue
        linked_name = value.removeprefix("target:")
        if linked_name == name:
            raise BakeError(f"target {linked_name} cannot link to itself")
        if linked_name in visited:
            raise BakeError(f"infinite loop from {name} to {linked_name}")
        linked = targets.get(linked_name)
        if linked is None:
            linked = resolve_target(config, linked_name, overrides)
            linked.output = [{"type": "cacheonly"}]
            linked.linked = True
            targets[linked_name] = linked
        _load_links(config, linked_name, linked, targets, overrides, visited)
        for entitlement in linked.entitlements or []:
            if entitlement not in (target.entitlements or []):
                target.entitlements = [*(target.entitlements or []), entitlement]
        mine, theirs = target.platforms or [], linked.platforms or []
        if len(mine) > 1 and len(theirs) > 1 and not set(mine) <= set(theirs):
            raise BakeError(f"target {linked_name} can't be used by {name} because its "
                            f"platforms {_go_list(mine)} are not a subset of "
                            f"{_go_list(theirs)}")  # fmt: skip


def _go_list(values: Sequence[str]) -> str:
    return "[" + " ".join(values) + "]"


def _clean_context(context: str) -> str:
    if context.startswith("cwd://") or re.match(r"^[a-z][a-z0-9+.-]*://", context) or (
            context.startswith("git@")):  # fmt: skip
        return context
    return posixpath.normpath(context) if context else "."


def valid_target_name(name: str) -> bool:
    return bool(_NAME.match(name))
