"""Syntax nodes to typed instructions and build stages, with BuildKit's checks.

What `frontend/dockerfile/instructions` refuses is refused here, with the file and line:
unknown instructions (with a suggestion), flags an instruction does not take, malformed or
repeated flags, missing arguments, bad stage names, ONBUILD chains, and any instruction other
than ARG before the first FROM. Two stages of one name are allowed, as in BuildKit (a build
check warns): `FROM name` takes the latest one before it, `--from=name` and `--target name`
the last one. Values are not expanded here: expansion needs the build
arguments and the target platform, which the planner brings. Pure.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from polyarch.errors import DockerfileError
from polyarch.frontend import gofmt
from polyarch.frontend.dockerfile.syntax import (
    INSTRUCTIONS,
    Heredoc,
    Node,
    ParseResult,
    ParseWarning,
    chomp,
    heredoc_word,
)
from polyarch.graph.model import Location

_STAGE_NAME: Final = re.compile(r"\A[a-z][a-z0-9\-_.]*\Z")

_Fail = Callable[[str], DockerfileError]

# name -> kind: "str" (once), "bool" (once, optional =true/false), "list" (repeatable)
_FLAGS: Final[dict[str, dict[str, str]]] = {
    "FROM": {"platform": "str"},
    "RUN": {"mount": "list", "network": "str", "security": "str", "device": "list"},
    "COPY": {"chown": "str", "chmod": "str", "from": "str", "link": "bool", "parents": "bool",
             "exclude": "list"},
    "ADD": {"chown": "str", "chmod": "str", "link": "bool", "keep-git-dir": "bool",
            "checksum": "str", "exclude": "list", "unpack": "bool"},
    "HEALTHCHECK": {"interval": "str", "timeout": "str", "start-period": "str",
                    "start-interval": "str", "retries": "str"},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction, typed by `kind` (the upper-case name), its arguments unexpanded.

    `args` are the instruction's words (for RUN/CMD/ENTRYPOINT/SHELL in shell form: one
    string), `flags` the parsed flags, `json` whether the exec (JSON) form was used.
    """

    kind: str
    args: tuple[str, ...]
    location: Location
    original: str
    flags: dict[str, str | bool | tuple[str, ...]] = field(default_factory=dict, hash=False)
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    written: str = ""  # the instruction's name as written (`copy`, `From`)
    comments: tuple[str, ...] = ()  # the comment lines right before it
    legacy: bool = False  # ENV/LABEL in the legacy `key value` form

    @property
    def name(self) -> str:
        """The name as written, as BuildKit's checks quote it."""
        return self.written or self.kind

    def flag(self, name: str) -> str | None:
        value = self.flags.get(name)
        return value if isinstance(value, str) else None

    def bool_flag(self, name: str) -> bool:
        return self.flags.get(name) is True

    def list_flag(self, name: str) -> tuple[str, ...]:
        value = self.flags.get(name)
        return value if isinstance(value, tuple) else ()

    # Shapes of particular instructions --------------------------------------------------

    def pairs(self) -> list[tuple[str, str]]:
        """ENV and LABEL: (name, value) pairs, unexpanded."""
        return [(self.args[i], self.args[i + 1]) for i in range(0, len(self.args) - 1, 2)]

    def arg_declarations(self) -> list[tuple[str, str | None]]:
        """ARG: (name, default or None) for each declared name."""
        out: list[tuple[str, str | None]] = []
        for word in self.args:
            name, sep, default = word.partition("=")
            out.append((name, default if sep else None))
        return out

    def sources_and_dest(self) -> tuple[tuple[str, ...], tuple[Heredoc, ...], str]:
        """COPY and ADD: source paths, heredoc sources (chomped when `<<-`), destination."""
        by_name = {h.name: h for h in self.heredocs}
        paths: list[str] = []
        inline: list[Heredoc] = []
        for src in self.args[:-1]:
            spec = _heredoc_name(src)
            if spec is not None and spec in by_name:
                doc = by_name[spec]
                content = chomp(doc.content) if doc.chomp else doc.content
                inline.append(Heredoc(doc.name, doc.file_descriptor, content, doc.expand, False))
            else:
                paths.append(src)
        return tuple(paths), tuple(inline), self.args[-1]

    def command_line(self) -> tuple[str, ...]:
        """RUN/CMD/ENTRYPOINT: argv in exec form, or the one shell string in shell form."""
        return self.args if self.json else ((" ".join(self.args),) if self.args else ())


@dataclass(frozen=True, slots=True)
class Stage:
    index: int
    name: str | None
    base: str  # unexpanded image reference or stage name
    platform: str | None  # the unexpanded --platform value
    location: Location
    instructions: tuple[Instruction, ...]
    from_instruction: Instruction

    @property
    def display(self) -> str:
        return self.name if self.name else f"stage-{self.index}"


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """A parsed Dockerfile: the ARGs before the first FROM, and the stages."""

    path: str
    meta_args: tuple[Instruction, ...]
    stages: tuple[Stage, ...]
    escape: str
    directives: dict[str, str]
    warnings: tuple[ParseWarning, ...] = ()
    nodes: tuple[Node, ...] = ()  # the syntax tree it was made from

    def stage(self, name_or_index: str) -> Stage | None:
        """A stage by name (the last of that name, as BuildKit resolves `--from` and
        `--target`) or by index."""
        key = name_or_index.lower()
        for stage in reversed(self.stages):
            if stage.name == key:
                return stage
        if name_or_index.isdigit():
            index = int(name_or_index)
            if index < len(self.stages):
                return self.stages[index]
        return None


def build(result: ParseResult, path: str = "Dockerfile") -> Dockerfile:
    """Typed stages from parsed nodes; raises `DockerfileError` for what BuildKit refuses."""
    meta: list[Instruction] = []
    stages: list[Stage] = []
    current: list[Instruction] = []
    for node in result.nodes:
        instruction = _instruction(node, path)
        if instruction.kind == "FROM":
            _close(stages, current)
            current = []
            stages.append(_stage(instruction, len(stages), path))
            continue
        if not stages:
            if instruction.kind == "ARG":
                meta.append(instruction)
                continue
            raise DockerfileError(
                f"{instruction.kind} before the first FROM: only ARG may come before FROM "
                "(a Dockerfile must start its first stage with FROM)",
                path=path,
                line=node.start_line,
            )
        current.append(instruction)
    _close(stages, current)
    if not stages:
        raise DockerfileError("no FROM instruction: a Dockerfile needs at least one stage",
                              path=path, line=result.nodes[-1].end_line)  # fmt: skip
    return Dockerfile(
        path, tuple(meta), tuple(stages), result.escape, result.directives, result.warnings,
        result.nodes,
    )  # fmt: skip


def _close(stages: list[Stage], current: list[Instruction]) -> None:
    if stages and current:
        last = stages[-1]
        stages[-1] = Stage(
            last.index, last.name, last.base, last.platform, last.location,
            tuple(current), last.from_instruction,
        )  # fmt: skip


def _stage(instruction: Instruction, index: int, path: str) -> Stage:
    args = instruction.args
    line = instruction.location.start_line
    name = None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise DockerfileError(
                f"invalid name for build stage: {args[2]!r}, name can't start with a number "
                "or contain symbols",
                path=path,
                line=line,
            )
    elif len(args) != 1:
        raise DockerfileError("FROM requires either one or three arguments (FROM image [AS name])",
                              path=path, line=line)  # fmt: skip
    return Stage(index, name, args[0], instruction.flag("platform"), instruction.location, (),
                 instruction)  # fmt: skip


def instruction_of(node: Node, path: str) -> Instruction:
    """One checked instruction from one syntax node."""
    return _instruction(node, path)


def _instruction(node: Node, path: str) -> Instruction:
    location = Location(path, node.start_line, node.end_line)

    def fail(message: str) -> DockerfileError:
        return DockerfileError(message, path=path, line=node.start_line)

    kind = node.cmd
    if kind not in INSTRUCTIONS:
        hint = difflib.get_close_matches(kind, sorted(INSTRUCTIONS), n=1)
        suffix = f" (did you mean {hint[0]}?)" if hint else ""
        raise fail(f"unknown instruction: {node.written_cmd or kind}{suffix}")
    if kind == "ONBUILD":
        return dataclasses.replace(
            _onbuild(node, location, fail), written=node.written_cmd, comments=node.comments
        )
    flags = _parse_flags(node.flags, _FLAGS.get(kind, {}), fail)
    args = node.value
    n = len(args)
    if kind in ("ADD", "COPY"):
        if n < 2:
            raise fail(f"{kind} requires at least two arguments, but only one was provided. "
                       "Destination could not be determined")  # fmt: skip
        if _heredoc_name(args[-1]) is not None:
            raise fail(f"{kind} cannot accept a heredoc as a destination")
    elif kind in ("ENV", "LABEL"):
        if n == 0:
            raise fail(f"{kind} requires at least one argument")
        if any(args[i] == "" for i in range(0, n, 2)):
            raise fail(f"{kind} names can not be blank")
    elif kind == "ARG":
        if n == 0:
            raise fail("ARG requires at least one argument")
        for word in args:
            name = word.partition("=")[0]
            if not name:
                raise fail(f"ARG names can not be blank: {word!r}")
    elif kind in ("MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"):
        if n != 1:
            raise fail(f"{kind} requires exactly one argument")
    elif kind == "EXPOSE":
        if n == 0:
            raise fail("EXPOSE requires at least one argument")
    elif kind == "VOLUME":
        if n == 0:
            raise fail("VOLUME requires at least one argument")
        if any(not a.strip() for a in args):
            raise fail("VOLUME specified can not be an empty string")
    elif kind == "SHELL":
        if not node.json:
            raise fail(
                'SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/sh", "-c"]'
            )
        if n == 0:
            raise fail("SHELL requires at least one argument")
    elif kind == "RUN":
        if n == 0 or (not node.json and not args[0].strip()):
            raise fail("RUN requires at least one argument")
    elif kind == "HEALTHCHECK":
        _check_healthcheck(node, flags, fail)
    elif kind == "FROM" and n == 0:
        raise fail("FROM requires either one or three arguments (FROM image [AS name])")
    return Instruction(kind, args, location, node.original, flags, node.json, node.heredocs,
                       node.written_cmd, node.comments, node.legacy)  # fmt: skip


def _onbuild(node: Node, location: Location, fail: _Fail) -> Instruction:
    sub = node.sub
    if sub is None:
        raise fail("ONBUILD requires at least one argument")
    _parse_flags(node.flags, {}, fail)
    if sub.cmd == "ONBUILD":
        raise fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if sub.cmd in ("MAINTAINER", "FROM"):
        raise fail(f"{sub.cmd} isn't allowed as an ONBUILD trigger")
    # The trigger must itself be a valid instruction: check it now, not when it fires.
    _instruction(sub, location.path)
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
    for doc in sub.heredocs:
        expression += "\n" + doc.content + doc.name
    return Instruction("ONBUILD", (expression,), location, node.original)


def _parse_flags(
    raw: Sequence[str], allowed: dict[str, str], fail: _Fail
) -> dict[str, str | bool | tuple[str, ...]]:
    out: dict[str, str | bool | tuple[str, ...]] = {}
    for item in raw:
        if not item.startswith("--"):
            raise fail(f"flag {item!r} must start with --")
        name, has_value, value = item[2:].partition("=")
        kind = allowed.get(name)
        if kind is None:
            known = ", ".join(f"--{k}" for k in sorted(allowed)) or "none"
            raise fail(f"unknown flag: --{name} (this instruction takes: {known})")
        if kind == "list":
            if not has_value:
                raise fail(f"missing a value on flag: --{name}")
            previous = out.get(name, ())
            assert isinstance(previous, tuple)
            out[name] = (*previous, value)
            continue
        if name in out:
            raise fail(f"duplicate flag specified: --{name}")
        if kind == "bool":
            if not has_value or value.lower() == "true":
                out[name] = True
            elif value.lower() == "false":
                out[name] = False
            else:
                raise fail(f"expecting boolean value for flag --{name}, not: {value}")
            continue
        if not has_value:
            raise fail(f"missing a value on flag: --{name}")
        out[name] = value
    return out


def _check_healthcheck(
    node: Node, flags: dict[str, str | bool | tuple[str, ...]], fail: _Fail
) -> None:
    if not node.value:
        raise fail("HEALTHCHECK requires at least one argument")
    kind = node.value[0].upper()
    if kind == "NONE":
        if len(node.value) != 1:
            raise fail("HEALTHCHECK NONE takes no arguments")
        return
    if kind != "CMD":
        raise fail(f"Unknown type {node.value[0]!r} in HEALTHCHECK (try CMD)")
    if len(node.value) < 2:
        raise fail("Missing command after HEALTHCHECK CMD")
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = flags.get(name)
        if not isinstance(value, str) or not value:
            continue
        try:
            duration = gofmt.parse_duration(value)
        except ValueError:
            raise fail(f"time: invalid duration {value!r} for --{name} (e.g. 30s, 1m30s)") from None
        if duration != 0 and duration < 1_000_000:
            raise fail(f'Interval "{name}" cannot be less than 1ms')
    retries = flags.get("retries")
    if isinstance(retries, str) and retries:
        if not re.fullmatch(r"-?\d+", retries):
            raise fail(f"--retries must be a number, not {retries!r}")
        if int(retries) < 0:
            raise fail(f"--retries cannot be negative ({retries})")


def _heredoc_name(word: str) -> str | None:
    spec = heredoc_word(word)
    return spec.name if spec is not None else None
