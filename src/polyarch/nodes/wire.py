"""The node protocol's messages as typed values (pure): each is a frozen dataclass with a
strict `to_json` and `from_json` (the pattern of `graph/ops.py`). What a peer sends that is
not the message it should be is a `NodeError` that names the field, never a KeyError or a
value taken on trust. The framing (one JSON line, then a payload) is in `protocol.py`; the
session calls that carry payloads (a secret's value, an agent's bytes) are in `session.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, cast, get_args

from polyarch.attest.provenance import PlatformFacts
from polyarch.digest import Digest
from polyarch.errors import PolyarchError
from polyarch.frontend.convert import BuildOnce, build_once_text, parse_build_once
from polyarch.nodes.protocol import NodeError
from polyarch.oci.models import Descriptor
from polyarch.platform import Platform
from polyarch.progress import Event, EventKind
from polyarch.remotecache.format import CacheFormatError, CacheRecord, ExportMode, parse_record

# Why a node's build failed, for the client to act on (never prose to match):
# missing-source: a COPY/ADD source is not in the context (or the stage, or the image);
# step: a step failed; dockerfile: the Dockerfile is wrong; protocol: the
# client sent what the node cannot read; other: anything else polyarch says.
FailureKind: TypeAlias = Literal["missing-source", "step", "dockerfile", "protocol", "other"]
FAILURE_KINDS: Final = get_args(FailureKind)
NamedKind: TypeAlias = Literal["dir", "layout", "as-is"]


class _Fields:
    """A message's fields, read strictly: each reader names the field when it is wrong."""

    def __init__(self, obj: object, what: str) -> None:
        if not isinstance(obj, dict):
            raise NodeError(f"{what} is not an object")
        self.obj: dict[str, Any] = obj
        self.what = what

    def _bad(self, name: str, wanted: str) -> NodeError:
        return NodeError(f"{self.what}: {name} must be {wanted}, got {self.obj.get(name)!r:.80}")

    def text(self, name: str, default: str | None = None) -> str:
        value = self.obj.get(name, default)
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        return value

    def opt_text(self, name: str) -> str | None:
        value = self.obj.get(name)
        if value is not None and not isinstance(value, str):
            raise self._bad(name, "a string or null")
        return value

    def integer(self, name: str, default: int | None = None) -> int:
        value = self.obj.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(name, "an integer")
        return value

    def opt_integer(self, name: str) -> int | None:
        value = self.obj.get(name)
        if value is None:
            return None
        return self.integer(name)

    def number(self, name: str, default: float | None = None) -> float:
        value = self.obj.get(name, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._bad(name, "a number")
        return float(value)

    def opt_number(self, name: str) -> float | None:
        return None if self.obj.get(name) is None else self.number(name)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.obj.get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def strs(self, name: str) -> tuple[str, ...]:
        value = self.obj.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "a list of strings")
        return tuple(value)

    def str_map(self, name: str) -> dict[str, str]:
        value = self.obj.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._bad(name, "a mapping of strings")
        return dict(value)

    def int_map(self, name: str) -> dict[str, int]:
        value = self.obj.get(name, {})
        if not isinstance(value, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()
        ):
            raise self._bad(name, "a mapping of indexes")
        return dict(value)

    def array(self, name: str) -> list[Any]:
        value = self.obj.get(name, [])
        if not isinstance(value, list):
            raise self._bad(name, "a list")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self._bad(name, " or ".join(choices))
        return value


def expect_op(message: Mapping[str, Any], op: str, what: str) -> None:
    if message.get("op") != op:
        raise NodeError(f"{what} sent {message.get('op')!r} where {op!r} was due")


# hello ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's first message."""

    version: int
    polyarch: str

    def to_json(self) -> dict[str, Any]:
        return {"op": "hello", "version": self.version, "polyarch": self.polyarch}


@dataclass(frozen=True, slots=True)
class HelloAnswer:
    """What the node is: its polyarch and protocol version, the platforms it runs natively
    and under emulation, its runtime and free space."""

    version: int
    polyarch: str
    native: tuple[str, ...] = ()
    emulated: tuple[str, ...] = ()
    runtime: str = ""
    free: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"op": "hello", "version": self.version, "polyarch": self.polyarch,
                "native": list(self.native), "emulated": list(self.emulated),
                "runtime": self.runtime, "free": self.free}  # fmt: skip

    @classmethod
    def version_of(cls, obj: object, what: str) -> tuple[object, object]:
        """The version and polyarch a hello answer claims (read before anything else: a
        node of another version may say nothing more)."""
        if not isinstance(obj, dict) or obj.get("op") != "hello":
            op = obj.get("op") if isinstance(obj, dict) else obj
            raise NodeError(f"{what} answered {op!r} to hello")
        return obj.get("version"), obj.get("polyarch")

    @classmethod
    def from_json(cls, obj: object, what: str) -> HelloAnswer:
        f = _Fields(obj, f"{what}'s hello")
        native, emulated = f.strs("native"), f.strs("emulated")
        if not native:
            raise NodeError(f"{what}'s hello names no native platform")
        try:
            for platform in (*native, *emulated):
                Platform.parse(platform)
        except PolyarchError as exc:
            raise NodeError(f"{what}'s hello: {exc}") from None
        return cls(f.integer("version"), f.text("polyarch"), native, emulated,
                   f.text("runtime", ""), f.integer("free", 0))  # fmt: skip


# the build request ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamedEntry:
    """A `--build-context` as a node takes it: sent as a directory or an OCI layout
    (`named/INDEX`, a layout with its `:TAG` or `@DIGEST`), or a value as it is (an image, a
    git repository: the node pulls or clones it)."""

    kind: NamedKind
    index: int = 0
    suffix: str = ""
    value: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.kind == "as-is":
            return {"kind": "as-is", "value": self.value}
        out: dict[str, Any] = {"kind": self.kind, "index": self.index}
        if self.suffix:
            out["suffix"] = self.suffix
        return out

    @classmethod
    def from_json(cls, obj: object, what: str) -> NamedEntry:
        f = _Fields(obj, what)
        kind = cast(NamedKind, f.choice("kind", get_args(NamedKind)))
        if kind == "as-is":
            return cls(kind, value=f.text("value"))
        return cls(kind, f.integer("index"), f.text("suffix", ""))


@dataclass(frozen=True, slots=True)
class CacheSource:
    """A `--cache-from` as a node takes it: a local cache sent to it (`caches/INDEX`, with
    the spec's other fields), or a registry cache as it is (the node imports it)."""

    spec: str = ""  # as-is
    index: int | None = None  # local: sent
    rest: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.index is None:
            return {"kind": "as-is", "spec": self.spec}
        return {"kind": "local", "index": self.index, "rest": list(self.rest)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> CacheSource:
        f = _Fields(obj, what)
        if f.choice("kind", ("as-is", "local")) == "as-is":
            return cls(spec=f.text("spec"))
        return cls(index=f.integer("index"), rest=f.strs("rest"))


@dataclass(frozen=True, slots=True)
class BuildAsk:
    """One platform's build (or, with `pending`, its warm-up) on a node: the build's options
    that travel, and what this node was sent for it (layouts by index)."""

    platform: str = ""
    dockerfile: str | None = None  # its path in the context, or
    dockerfile_text: str | None = None  # the text of one from outside the context
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    jobs: int = 1
    build_once: BuildOnce = "auto"
    ca_certs: bool = False  # the node's own CA bundle, for `--ca-certs host`
    allow: tuple[str, ...] = ()
    annotations: tuple[str, ...] = ()  # the manifest's (index-level ones are applied here)
    step_timeout: float | None = None
    add_hosts: tuple[str, ...] = ()
    network: str = "default"
    ulimits: tuple[str, ...] = ()
    shm_size: int = 0
    no_cache_filter: tuple[str, ...] = ()
    emulator_install: bool = True
    explain_as: str = ""
    named_contexts: Mapping[str, NamedEntry] = field(default_factory=dict)
    cache_from: tuple[CacheSource, ...] = ()
    secrets: tuple[str, ...] = ()  # ids: asked of the client when a step mounts one
    ssh: tuple[str, ...] = ()  # agent ids: channels to the client's agents
    push: tuple[str, ...] = ()  # --push-from-nodes: repositories to push to by digest
    cache_export: ExportMode | None = None  # --cache-to: send back this mode's entries
    base_layouts: Mapping[str, int] = field(default_factory=dict)  # ref -> layouts/INDEX
    stage_layouts: Mapping[str, int] = field(default_factory=dict)  # stage -> stages/INDEX
    pending: tuple[str, ...] = ()  # a warm-up: stages still being built by the client

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "build", "platform": self.platform, "dockerfile": self.dockerfile,
            "dockerfile_text": self.dockerfile_text, "build_args": dict(self.build_args),
            "target": self.target, "labels": dict(self.labels), "no_cache": self.no_cache,
            "jobs": self.jobs, "build_once": build_once_text(self.build_once),
            "ca_certs": self.ca_certs,
            "allow": list(self.allow), "annotations": list(self.annotations),
            "step_timeout": self.step_timeout, "add_hosts": list(self.add_hosts),
            "network": self.network, "ulimits": list(self.ulimits), "shm_size": self.shm_size,
            "no_cache_filter": list(self.no_cache_filter),
            "emulator_install": self.emulator_install, "explain_as": self.explain_as,
            "named_contexts": {k: v.to_json() for k, v in self.named_contexts.items()},
            "cache_from": [c.to_json() for c in self.cache_from],
            "secrets": list(self.secrets), "ssh": list(self.ssh), "push": list(self.push),
            "cache_export": self.cache_export, "base_layouts": dict(self.base_layouts),
            "stage_layouts": dict(self.stage_layouts), "pending": list(self.pending),
        }  # fmt: skip

    @classmethod
    def from_json(cls, obj: object, what: str = "the client's build request") -> BuildAsk:
        f = _Fields(obj, what)
        dockerfile, text = f.opt_text("dockerfile"), f.opt_text("dockerfile_text")
        if (dockerfile is None) == (text is None):
            raise NodeError(f"{what}: name the Dockerfile or send its text (one of them)")
        named = f.obj.get("named_contexts", {})
        if not isinstance(named, dict) or not all(isinstance(k, str) and k for k in named):
            raise NodeError(f"{what}: named_contexts must be a mapping of names")
        export = f.obj.get("cache_export")
        if export not in (None, "min", "max"):
            raise NodeError(f"{what}: cache_export must be min, max or null, got {export!r:.40}")
        return cls(
            f.text("platform"), dockerfile, text, f.str_map("build_args"), f.opt_text("target"),
            f.str_map("labels"), f.flag("no_cache"), f.integer("jobs", 1),
            parse_build_once(f.text("build_once", "auto")), f.flag("ca_certs"), f.strs("allow"),
            f.strs("annotations"), f.opt_number("step_timeout"), f.strs("add_hosts"),
            f.text("network", "default"), f.strs("ulimits"), f.integer("shm_size", 0),
            f.strs("no_cache_filter"), f.flag("emulator_install", True),
            f.text("explain_as", ""),
            {k: NamedEntry.from_json(v, f"{what}: named context {k!r}") for k, v in named.items()},
            tuple(CacheSource.from_json(c, f"{what}: cache {i}")
                  for i, c in enumerate(f.array("cache_from"))),
            f.strs("secrets"), f.strs("ssh"), f.strs("push"), cast(ExportMode | None, export),
            f.int_map("base_layouts"), f.int_map("stage_layouts"), f.strs("pending"),
        )  # fmt: skip


# a build's answers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """A node's build failed: what polyarch said there, where, and its kind."""

    message: str
    kind: FailureKind = "other"
    stage: str = ""
    platform: str = ""
    line: int | None = None  # in the Dockerfile

    def to_json(self) -> dict[str, Any]:
        return {"op": "error", "message": self.message, "kind": self.kind, "stage": self.stage,
                "platform": self.platform, "line": self.line}  # fmt: skip

    @classmethod
    def from_json(cls, obj: object, what: str) -> Failure:
        f = _Fields(obj, f"{what}'s error")
        kind = cast(FailureKind, f.choice("kind", FAILURE_KINDS, "other"))
        return cls(f.text("message"), kind, f.text("stage", ""), f.text("platform", ""),
                   f.opt_integer("line"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """A cache entry a node sends back for the client's export, and whether the node holds
    its layer (one taken lazily from an imported cache is not there)."""

    record: CacheRecord
    held: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.record.to_json(), "held": self.held}

    @classmethod
    def from_json(cls, obj: object, what: str) -> HeldRecord:
        try:
            record = parse_record(obj, what)
        except CacheFormatError as exc:
            raise NodeError(str(exc)) from None
        return cls(record, _Fields(obj, what).flag("held"))


@dataclass(frozen=True, slots=True)
class BuildDone:
    """A node built the platform: the manifest in its store, steps run and cached, and (with
    `cache_export`) its entries for the export."""

    descriptor: Descriptor
    steps_run: int = 0
    steps_cached: int = 0
    seconds: float = 0.0
    cache_records: tuple[HeldRecord, ...] = ()
    facts: PlatformFacts | None = None  # what the platform's provenance takes from the build

    def to_json(self) -> dict[str, Any]:
        out = {"op": "result", "descriptor": self.descriptor.to_json(),
               "steps_run": self.steps_run, "steps_cached": self.steps_cached,
               "seconds": self.seconds,
               "cache_records": [r.to_json() for r in self.cache_records]}  # fmt: skip
        if self.facts is not None:
            out["facts"] = self.facts.to_json()
        return out

    @classmethod
    def from_json(cls, obj: object, what: str) -> BuildDone:
        f = _Fields(obj, f"{what}'s result")
        try:
            descriptor = Descriptor.from_json(f.obj.get("descriptor"), f"{what}'s result")
        except PolyarchError as exc:
            raise NodeError(str(exc)) from None
        records = tuple(HeldRecord.from_json(r, f"{what}: cache entry {i}")
                        for i, r in enumerate(f.array("cache_records")))  # fmt: skip
        facts = None
        if f.obj.get("facts") is not None:
            try:
                facts = PlatformFacts.from_json(f.obj["facts"])
            except ValueError as exc:
                raise NodeError(f"{what}'s result: {exc}") from None
        return cls(descriptor, f.integer("steps_run", 0), f.integer("steps_cached", 0),
                   f.number("seconds", 0.0), records, facts)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Warmed:
    """A node's warm-up ended: how many steps ran."""

    steps_run: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"op": "warmed", "steps_run": self.steps_run}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Warmed:
        return cls(_Fields(obj, f"{what}'s warm-up").integer("steps_run", 0))


Answer: TypeAlias = BuildDone | Warmed | Failure


def event_from_json(obj: object, node: str, what: str) -> Event:
    """A node's progress event, labelled with the node (its step keys prefixed with it)."""
    f = _Fields(obj, f"{what}'s progress")
    step = f.text("step", "")
    kind = f.text("event", "note")
    if kind not in get_args(EventKind):
        raise NodeError(f"{what} sent a progress event of kind {kind!r:.40}")
    return Event(cast(Any, kind), f"{node}:{step}" if step else "", f.text("description", ""),
                 f.text("stage", ""), f.text("platform", ""), text=f.text("text", ""),
                 seconds=f.opt_number("seconds"), cache=f.text("cache", ""),
                 emulated=f.flag("emulated"), position=f.text("position", ""), node=node,
                 current=f.opt_integer("current"), total=f.opt_integer("total"),
                 cause=f.text("cause", ""))  # fmt: skip


# the other requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reach:
    """Which of these registries the node cannot reach (asked before its bases are sent)."""

    registries: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"op": "reach", "registries": list(self.registries)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Reach:
        return cls(_Fields(obj, what).strs("registries"))


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The node's answer to `Reach`: registry -> why it cannot reach it."""

    unreachable: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"op": "reach", "unreachable": dict(self.unreachable)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Unreachable:
        return cls(_Fields(obj, f"{what}'s reach answer").str_map("unreachable"))


# a build's session calls (nodes/session.py) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretAsk:
    """Node -> client: the value of secret `id` (a step mounts it)."""

    id: str

    def to_json(self) -> dict[str, Any]:
        return {"op": "secret", "id": self.id}

    @classmethod
    def from_json(cls, obj: object, what: str) -> SecretAsk:
        return cls(_Fields(obj, f"{what}'s secret request").text("id"))


@dataclass(frozen=True, slots=True)
class SecretAnswer:
    """Client -> node: the value follows as the payload, or `error` says why it cannot."""

    id: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"op": "secret", "id": self.id, **({"error": self.error} if self.error else {})}

    @classmethod
    def from_json(cls, obj: object, what: str) -> SecretAnswer:
        f = _Fields(obj, f"{what}'s secret")
        return cls(f.text("id"), f.opt_text("error"))


@dataclass(frozen=True, slots=True)
class AuthAsk:
    """Node -> client: a pull token for these scopes of registry `host`."""

    host: str
    scopes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"op": "auth", "host": self.host, "scopes": list(self.scopes)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> AuthAsk:
        f = _Fields(obj, f"{what}'s token request")
        return cls(f.text("host"), f.strs("scopes"))


@dataclass(frozen=True, slots=True)
class AuthAnswer:
    """Client -> node: the token and how many seconds it lasts; or none (no credentials
    there either); or why it could not get one."""

    host: str
    token: str | None = None
    expires_in: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": "auth", "host": self.host}
        if self.error is not None:
            out["error"] = self.error
        elif self.token is None:
            out["none"] = True
        else:
            out.update(token=self.token, expires_in=self.expires_in)
        return out

    @classmethod
    def from_json(cls, obj: object, what: str) -> AuthAnswer:
        f = _Fields(obj, f"{what}'s token")
        error = f.opt_text("error")
        if error is not None or f.flag("none"):
            return cls(f.text("host"), error=error)
        token = f.text("token")
        if not token:
            raise NodeError(f"{what}'s token is empty")
        return cls(f.text("host"), token, f.number("expires_in"))


@dataclass(frozen=True, slots=True)
class SshOpen:
    """Node -> client: a step connected to agent `id`; channel `channel` carries it."""

    channel: int
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"op": "ssh-open", "channel": self.channel, "id": self.id}

    @classmethod
    def from_json(cls, obj: object, what: str) -> SshOpen:
        f = _Fields(obj, f"{what}'s agent channel")
        return cls(f.integer("channel"), f.text("id"))


@dataclass(frozen=True, slots=True)
class SshData:
    """Either way: bytes of a channel, as the payload."""

    channel: int

    def to_json(self) -> dict[str, Any]:
        return {"op": "ssh-data", "channel": self.channel}

    @classmethod
    def from_json(cls, obj: object, what: str) -> SshData:
        return cls(_Fields(obj, f"{what}'s agent bytes").integer("channel"))


@dataclass(frozen=True, slots=True)
class SshClose:
    """Either way: this side of the channel is done."""

    channel: int

    def to_json(self) -> dict[str, Any]:
        return {"op": "ssh-close", "channel": self.channel}

    @classmethod
    def from_json(cls, obj: object, what: str) -> SshClose:
        return cls(_Fields(obj, f"{what}'s agent channel end").integer("channel"))


@dataclass(frozen=True, slots=True)
class ContextAsk:
    """Node -> client: the files that these paths select from a build context (the main one,
    `context`, or a `--build-context` directory by its name): a step's COPY or bind mount
    reads them now (BuildKit's filesync asks the same way)."""

    includes: tuple[str, ...]
    name: str = "context"

    def to_json(self) -> dict[str, Any]:
        return {"op": "context-ask", "name": self.name, "includes": list(self.includes)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> ContextAsk:
        f = _Fields(obj, f"{what}'s context request")
        includes = f.strs("includes")
        if not includes:
            raise NodeError(f"{what}'s context request selects nothing")
        return cls(includes, f.text("name", "context"))


@dataclass(frozen=True, slots=True)
class ContextListing:
    """Client -> node: the selected files by digest (after `.dockerignore`), with every
    directory and symlink of the context; or why the context cannot be read."""

    entries: tuple[Entry, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"op": "context-listing", "error": self.error}
        return {"op": "context-listing", "entries": [e.to_json() for e in self.entries]}

    @classmethod
    def from_json(cls, obj: object, what: str) -> ContextListing:
        f = _Fields(obj, f"{what}'s context listing")
        error = f.opt_text("error")
        if error is not None:
            return cls(error=error)
        return cls(tuple(Entry.from_json(e, f"{what}'s context listing: entry {i}")
                         for i, e in enumerate(f.array("entries"))))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContextNeed:
    """Node -> client: the listed files it does not hold; each comes as a `blob` with its
    bytes, then `context-ready`."""

    digests: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"op": "context-need", "digests": list(self.digests)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> ContextNeed:
        return cls(_Fields(obj, f"{what}'s context need").strs("digests"))


SESSION_END: Final = {"op": "session-end"}  # client -> node: the build's session is over


# sending trees by content, and blobs ----------------------------------------------------------

EntryType: TypeAlias = Literal["dir", "file", "symlink"]
# What a tree sent by content is, and where the node keeps it: the build's context, a base
# image it cannot pull (`layouts/INDEX`), a build-once stage (`stages/INDEX`), a named
# context (`named/INDEX`) or a local cache to import (`caches/INDEX`).
TreeKind: TypeAlias = Literal["context", "base", "stage", "named", "cache"]
TREE_PLACES: Final[Mapping[str, str]] = {"base": "layouts", "stage": "stages",
                                          "named": "named", "cache": "caches"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a tree sent by content: a directory (its mode), a symlink (its target)
    or a file (its digest, size, mode and mtime, which COPY reads)."""

    path: str
    type: EntryType
    mode: int = 0
    target: str = ""
    digest: str = ""
    size: int = 0
    mtime: int = 0

    def to_json(self) -> dict[str, Any]:
        if self.type == "symlink":
            return {"path": self.path, "type": "symlink", "target": self.target}
        if self.type == "dir":
            return {"path": self.path, "type": "dir", "mode": self.mode}
        return {"path": self.path, "type": "file", "digest": self.digest, "size": self.size,
                "mode": self.mode, "mtime": self.mtime}  # fmt: skip

    @classmethod
    def from_json(cls, obj: object, what: str) -> Entry:
        f = _Fields(obj, what)
        path = f.text("path")
        kind = cast(EntryType, f.choice("type", get_args(EntryType)))
        if kind == "symlink":
            return cls(path, kind, target=f.text("target"))
        mode = f.integer("mode")
        if not 0 <= mode <= 0o7777:
            raise NodeError(f"{what}: mode {mode:o} is not a file mode")
        if kind == "dir":
            return cls(path, kind, mode)
        digest = f.text("digest")
        try:
            Digest.parse(digest)
        except PolyarchError as exc:
            raise NodeError(f"{what}: {exc}") from None
        size = f.integer("size")
        if size < 0:
            raise NodeError(f"{what}: size {size} is negative")
        return cls(path, kind, mode, digest=digest, size=size, mtime=f.integer("mtime"))


@dataclass(frozen=True, slots=True)
class Tree:
    """A tree offered by content (`op` context, or layout with its kind and index): the node
    answers with the digests it needs."""

    kind: TreeKind
    entries: tuple[Entry, ...]
    index: int = 0

    def to_json(self) -> dict[str, Any]:
        entries = [e.to_json() for e in self.entries]
        if self.kind == "context":
            return {"op": "context", "entries": entries}
        return {"op": "layout", "kind": self.kind, "index": self.index, "entries": entries}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Tree:
        f = _Fields(obj, what)
        entries = tuple(Entry.from_json(e, f"{what}: entry {i}")
                        for i, e in enumerate(f.array("entries")))  # fmt: skip
        if f.obj.get("op") == "context":
            return cls("context", entries)
        kind = cast(TreeKind, f.choice("kind", tuple(TREE_PLACES), "base"))
        index = f.integer("index")
        if index < 0:
            raise NodeError(f"{what}: index {index} is negative")
        return cls(kind, entries, index)

    @property
    def place(self) -> str:
        """Where the node keeps it, under the build's scratch directory."""
        return "context" if self.kind == "context" else f"{TREE_PLACES[self.kind]}/{self.index}"


@dataclass(frozen=True, slots=True)
class Need:
    """The node's answer to a `Tree`: the file digests it does not hold."""

    digests: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"op": "need", "digests": list(self.digests)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Need:
        return cls(_Fields(obj, f"{what}'s answer to a tree").strs("digests"))


@dataclass(frozen=True, slots=True)
class Ready:
    """The node rebuilt the tree: how many files it was sent."""

    received: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"op": "context-ready", "received": self.received}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Ready:
        received = _Fields(obj, f"{what}'s end of a tree").integer("received", 0)
        if received < 0:
            raise NodeError(f"{what}'s end of a tree: {received} files received")
        return cls(received)


@dataclass(frozen=True, slots=True)
class BlobHead:
    """A blob follows as the payload (either way: a file of a tree, or a result's blob)."""

    digest: Digest
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"op": "blob", "digest": str(self.digest), "size": self.size}

    @classmethod
    def from_json(cls, obj: object, what: str) -> BlobHead:
        f = _Fields(obj, f"{what}'s blob")
        size = f.integer("size")
        if size < 0:
            raise NodeError(f"{what}'s blob: size {size} is negative")
        try:
            return cls(Digest.parse(f.text("digest")), size)
        except PolyarchError as exc:
            raise NodeError(f"{what}'s blob: {exc}") from None


@dataclass(frozen=True, slots=True)
class Get:
    """Client -> node: a blob of the node's store, by digest."""

    digest: Digest

    def to_json(self) -> dict[str, Any]:
        return {"op": "get", "digest": str(self.digest)}

    @classmethod
    def from_json(cls, obj: object, what: str) -> Get:
        try:
            return cls(Digest.parse(_Fields(obj, f"{what}'s get").text("digest")))
        except PolyarchError as exc:
            raise NodeError(f"{what}'s get: {exc}") from None


BYE: Final = {"op": "bye"}  # client -> node: nothing more; the worker ends
