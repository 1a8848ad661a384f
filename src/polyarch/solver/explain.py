"""Why a step ran: what each step's cache key is made of, recorded per build, and the first
input that changed since the last build of the same target. Pure.

A step's key is its op (the instruction as the converter resolved it: command, environment,
working directory, user, mounts, copy sources and options) and its inputs' keys: the step it
builds on, the stages or images it copies from, the context files it selects (by content,
mode and owner), a base image (by digest), a download, a git commit. A `StepRecord` keeps
those parts, each input as a small JSON document; `cause` compares a step that ran with the
step at the same place in the last build (same platform, stage and position) and names the
first part that differs, in the order a reader looks for it: the instruction's text, its
resolved options, then its inputs in order.

What is kept of a context is each file's type, mode, owner and content digest (no content);
of a secret, only its id (its value is in no key, and never here); of a build argument, the
value a step sees (as image history shows it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a build: where it is (`ident`: platform, stage and position), how it is
    shown, its key, and what the key is made of."""

    ident: str
    description: str
    key: str
    op: Mapping[str, Any]
    inputs: tuple[Mapping[str, Any], ...]
    location: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"ident": self.ident, "description": self.description, "key": self.key,
                "op": dict(self.op), "inputs": [dict(i) for i in self.inputs],
                "location": self.location}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepRecord:
        return cls(str(data["ident"]), str(data["description"]), str(data["key"]),
                   dict(data["op"]), tuple(dict(i) for i in data["inputs"]),
                   str(data.get("location", "")))  # fmt: skip


Files = Mapping[str, str]  # a context selection's entries: path -> `TYPE MODE UID:GID DIGEST`


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """Every step of one build of a target, the entries of the context selections they took
    (by the selection's key: kept once however many steps take it), and the names of the
    build arguments it was given."""

    steps: Mapping[str, StepRecord]
    contexts: Mapping[str, Files] = field(default_factory=dict)
    build_args: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "build_args": sorted(self.build_args),
                "steps": [s.to_json() for s in self.steps.values()],
                "contexts": {k: dict(v) for k, v in self.contexts.items()}}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildRecord | None:
        """None for a record of another version or shape (explanations start afresh)."""
        try:
            if data.get("version") != RECORD_VERSION:
                return None
            steps = [StepRecord.from_json(s) for s in data["steps"]]
            contexts = {str(k): {str(p): str(e) for p, e in v.items()}
                        for k, v in data["contexts"].items()}  # fmt: skip
            return cls({s.ident: s for s in steps}, contexts,
                       frozenset(map(str, data["build_args"])))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def fingerprint(self) -> str:
        """Equal for two builds whose every step has the same place and key (a no-op
        rebuild): nothing new to record."""
        return "\n".join(sorted(f"{s.ident} {s.key}" for s in self.steps.values()))


class Explainer:
    """Collects the record of a build as its steps are solved (from any thread), and says
    why a step ran against the last build of the target, read (`load`) when a step first
    runs: a build that runs nothing never reads it."""

    def __init__(
        self, load: Callable[[], BuildRecord | None], build_args: Iterable[str] = ()
    ) -> None:
        self._load = load
        self._previous: BuildRecord | None = None
        self._loaded = False
        self._lock = threading.Lock()
        self.build_args = frozenset(build_args)
        self.steps: dict[str, StepRecord] = {}
        self.contexts: dict[str, Files] = {}

    def add(self, step: StepRecord, contexts: Mapping[str, Files]) -> None:
        """Record a step (cached or run) and the context selections it takes."""
        with self._lock:
            self.steps[step.ident] = step
            self.contexts.update(contexts)

    def why(self, step: StepRecord, contexts: Mapping[str, Files]) -> str:
        """Record a step that runs, and say why it runs."""
        self.add(step, contexts)
        with self._lock:
            if not self._loaded:
                self._previous = self._load()
                self._loaded = True
            previous = self._previous
        return cause(previous, step, self.build_args, contexts)

    def record(self) -> BuildRecord:
        with self._lock:
            return BuildRecord(dict(self.steps), dict(self.contexts), self.build_args)


def cause(
    previous: BuildRecord | None,
    step: StepRecord,
    build_args: Iterable[str] = (),
    contexts: Mapping[str, Files] | None = None,
) -> str:
    """Why `step` ran instead of coming from the cache, compared with `previous` (the last
    build of the same target; None when there is none). `contexts`: the entries of the
    context selections `step` takes, by key."""
    if previous is None:
        return "no earlier build of this target to compare with"
    before = previous.steps.get(step.ident)
    if before is None:
        return "a new step: the last build of this target had none at this place"
    if before.key == step.key:
        return "its cache entry is gone (pruned, or its layer removed); the key is the same"
    if before.description != step.description:
        return f"the instruction changed: `{before.description}` → `{step.description}`"
    args = set(build_args) | set(previous.build_args)
    why = _op_cause(before.op, step.op, args)
    if why:
        return why
    for index, (old, new) in enumerate(zip(before.inputs, step.inputs, strict=False)):
        if old.get("key") != new.get("key"):
            if new.get("kind") == "context" and old.get("kind") == "context":
                return _context_cause(old, new, previous.contexts.get(str(old.get("key"))),
                                      (contexts or {}).get(str(new.get("key"))))  # fmt: skip
            return _input_cause(index, old, new)
    if len(before.inputs) != len(step.inputs):
        return f"it takes {len(step.inputs)} inputs, it took {len(before.inputs)}"
    return "its cache key changed"


# the op -------------------------------------------------------------------------------------


def _op_cause(old: Mapping[str, Any], new: Mapping[str, Any], args: set[str]) -> str:
    if old == new:
        return ""
    if old.get("type") != new.get("type"):
        return "the instruction changed"
    if new.get("type") == "exec":
        return _exec_cause(old, new, args)
    if new.get("type") == "file":
        return _file_cause(old.get("actions", []), new.get("actions", []))
    return _first_field(old, new, "the step's")


_EXEC_FIELDS = {
    "cwd": "WORKDIR",
    "user": "USER",
    "network": "the network (--network)",
    "security": "RUN --security",
    "platform": "the platform",
    "extra_hosts": "--add-host",
    "ulimits": "--ulimit",
    "shm_size": "--shm-size",
}


def _exec_cause(old: Mapping[str, Any], new: Mapping[str, Any], args: set[str]) -> str:
    if old.get("argv") != new.get("argv"):
        return "the command changed"
    if old.get("env") != new.get("env"):
        return _env_cause(old.get("env", []), new.get("env", []), args)
    for name, shown in _EXEC_FIELDS.items():
        if old.get(name) != new.get(name):
            return f"{shown} changed: {_show(old.get(name))} → {_show(new.get(name))}"
    if old.get("mounts") != new.get("mounts"):
        return _mounts_cause(old.get("mounts", []), new.get("mounts", []))
    return _first_field(old, new, "RUN's")


def _env_cause(old: Sequence[str], new: Sequence[str], args: set[str]) -> str:
    before = dict(_pair(e) for e in old)
    after = dict(_pair(e) for e in new)
    for name in [*after, *(n for n in before if n not in after)]:
        if before.get(name) == after.get(name):
            continue
        what = f"build argument {name}" if name in args else f"variable {name} (ENV or ARG)"
        if name not in before:
            return f"{what} was set"
        if name not in after:
            return f"{what} was unset"
        return f"{what} changed"
    return "the environment's order changed"


def _pair(entry: str) -> tuple[str, str]:
    name, _, value = entry.partition("=")
    return name, value


def _mounts_cause(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> str:
    if [m.get("type") for m in old] == [m.get("type") for m in new]:
        for was, now in zip(old, new, strict=True):  # the same mounts, one of them changed
            if was == now:
                continue
            kind, target = now.get("type"), now.get("target") or now.get("env") or "?"
            if kind in ("cache", "secret", "ssh") and was.get("id") != now.get("id"):
                ids = f"{was.get('id')!r} → {now.get('id')!r}"
                return f"the {kind} mount at {target} changed id: {ids}"
            changed = ", ".join(k for k in now if was.get(k) != now.get(k))
            return f"the {kind} mount at {target} changed: {changed}"
    before = {(m.get("type"), m.get("target")) for m in old}
    after = {(m.get("type"), m.get("target")) for m in new}
    for kind, target in [(m.get("type"), m.get("target")) for m in new]:
        if (kind, target) not in before:
            return f"a --mount=type={kind} at {target} was added"
    for kind, target in [(m.get("type"), m.get("target")) for m in old]:
        if (kind, target) not in after:
            return f"the --mount=type={kind} at {target} was removed"
    return "its mounts changed"


def _file_cause(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> str:
    for was, now in zip(old, new, strict=False):
        if was == now:
            continue
        if was.get("action") != now.get("action"):
            return "the instruction changed"
        if now.get("action") == "mkfile" and was.get("data") != now.get("data"):
            return f"the content of {now.get('path')} (a heredoc) changed"
        names = {"sources": "its sources", "dest": "its destination", "chown": "--chown",
                 "chmod": "--chmod", "excludes": "--exclude", "parents": "--parents",
                 "link": "--link", "unpack": "ADD's unpacking", "mode": "the mode",
                 "owner": "the owner", "path": "the path"}  # fmt: skip
        for key, shown in names.items():
            if was.get(key) != now.get(key):
                return f"{shown} changed: {_show(was.get(key))} → {_show(now.get(key))}"
        return _first_field(was, now, "the copy's")
    return "the instruction changed"


def _first_field(old: Mapping[str, Any], new: Mapping[str, Any], whose: str) -> str:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{whose} {key} changed: {_show(old.get(key))} → {_show(new.get(key))}"
    return "the instruction changed"


def _show(value: Any) -> str:
    if value in (None, "", [], ()):
        return "(none)"
    if isinstance(value, list | tuple):
        return " ".join(map(str, value))
    return str(value)


# the inputs ---------------------------------------------------------------------------------


def _input_cause(index: int, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    kind = new.get("kind")
    if old.get("kind") != kind:
        return f"its input {index + 1} is another kind of thing: {old.get('kind')} → {kind}"
    if kind == "step":
        what = "the step it builds on" if index == 0 else "a step it copies or mounts from"
        where = f" ({new['where']})" if new.get("where") else ""
        return f"{what} changed: `{new.get('description')}`{where}"
    if kind == "image":
        ref, was = new.get("ref"), old.get("ref")
        if ref != was:
            return f"the base image changed: {was} → {ref}"
        return f"the image {ref} moved: {_short(old.get('digest'))} → {_short(new.get('digest'))}"
    if kind == "git":
        return f"the git source {new.get('remote')} is at another commit"
    if kind == "http":
        return f"the download {new.get('url')} changed"
    if kind == "internal":
        why = _op_cause(old.get("op", {}), new.get("op", {}), set())
        return why or "a file it is given changed"
    return f"its input {index + 1} changed"


def _context_cause(
    old: Mapping[str, Any], new: Mapping[str, Any], before: Files | None, after: Files | None
) -> str:
    name = str(new.get("name", "context"))
    whose = "context file" if name == "context" else f"file of the {name!r} context"
    if name.startswith("git:"):
        whose = "file of the git source"
    if before is None or after is None:
        return f"the files it takes from the {name!r} context changed"
    for path in sorted(set(before) | set(after)):
        was, now = before.get(path), after.get(path)
        if was == now:
            continue
        if was is None:
            return f"{whose} {path} was added"
        if now is None:
            return f"{whose} {path} was removed"
        return f"{whose} {path} {_entry_change(was, now)}"
    if old.get("selects") != new.get("selects"):
        return "the context files it selects changed (its sources or .dockerignore)"
    return f"the {name!r} context changed"


def _entry_change(old: str, new: str) -> str:
    """Entries are `TYPE MODE UID:GID DIGEST` (a link: its target for the digest)."""
    a, b = old.split(" ", 3), new.split(" ", 3)
    if len(a) < 4 or len(b) < 4:
        return "changed"
    if a[0] != b[0]:
        kinds = {"f": "a file", "d": "a directory", "l": "a symlink"}
        return f"became {kinds.get(b[0], 'another kind of file')}"
    if a[3] != b[3]:
        return "was edited" if b[0] == "f" else "changed its target"
    if a[1] != b[1]:
        return f"changed mode: {a[1]} → {b[1]}"
    if a[2] != b[2]:
        return f"changed owner: {a[2]} → {b[2]}"
    return "changed"


def _short(digest: Any) -> str:
    text = str(digest or "?")
    return text[:19] if text.startswith("sha256:") else text
