"""Stages x target platforms -> a graph of content-addressed operations (BuildKit's model). Pure.

For each target platform the planner walks the target stage and, through `FROM <stage>`,
`COPY --from` and `RUN --mount=...,from=`, every stage it needs (only those), expanding values
where BuildKit expands them, with BuildKit's ARG scoping:

- ARGs before the first FROM are the global scope: usable in FROM lines (with the predefined
  platform ARGs), and visible in a stage only when redeclared there (`ARG NAME`).
- Inside a stage, `--build-arg` beats the ARG's default, which beats the global value; ENV beats
  ARG when both name a variable. Declared ARGs are in the environment of RUN steps, so they are
  part of a RUN's key (as in BuildKit).
- Predefined ARGs: TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT, BUILDPLATFORM,
  BUILDOS, BUILDARCH, BUILDVARIANT (usable in a stage once declared), and the proxy ARGs
  (HTTP_PROXY ... in both cases), which reach RUN steps without being declared and are kept out
  of keys and history.

Every op's key is the hash of its definition, which holds its inputs' keys. Stages whose ops are
identical for several targets (a stage pinned to $BUILDPLATFORM that uses no TARGET* value)
therefore have identical keys, and appear once. A copy from the build context is keyed here by
its paths; the engine adds the digest of the files it copies.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from polyarch.dockerfile.instructions import Dockerfile, Instruction, Location, Stage
from polyarch.dockerfile.instructions import instruction_of as build_instruction
from polyarch.dockerfile.shell import ExpansionError, ShellLexer
from polyarch.dockerfile.syntax import parse
from polyarch.errors import DockerfileError, InvalidPlatformError, InvalidReferenceError
from polyarch.plan.model import Op, OpKind, Plan, PlanWarning, StageInstance, op_key
from polyarch.platform import Platform, runs_natively
from polyarch.reference import Reference

PLATFORM_ARGS: Final = (
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
)  # fmt: skip
PROXY_ARGS: Final = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
DEFAULT_SHELL: Final = ("/bin/sh", "-c")


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    return {
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant or "",
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant or "",
    }


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What a build knows of a base image once its config is resolved (BuildKit resolves it
    too, before converting a stage): its digest, and the config that values expand against."""

    digest: str
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    shell: tuple[str, ...] = ()
    onbuild: tuple[str, ...] = ()  # triggers the base image carries: run right after FROM


@dataclass(frozen=True, slots=True)
class PlanRequest:
    dockerfile: Dockerfile
    platforms: tuple[Platform, ...]
    build_platform: Platform
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    # (image reference, platform) -> facts. Without them the plan expands as if base images
    # had an empty config, which is fine for showing a plan and wrong for building one.
    images: Mapping[tuple[str, str], ImageFacts] = field(default_factory=dict)
    # "auto": stages that use no TARGET* value and are only copied from run once, natively;
    # "off": BuildKit's behaviour; or a set of stage names to run once regardless.
    build_once: str | frozenset[str] = "auto"
    # Stages found to produce native code (after running once): planned per platform.
    per_platform: frozenset[str] = frozenset()


def build_once_stages(
    dockerfile: Dockerfile, target: Stage, mode: str | frozenset[str], excluded: frozenset[str]
) -> dict[int, str]:
    """Stages to run once on the build machine, and why ("auto" or "forced").

    Auto: a stage qualifies when it has RUN steps (the work to save), no instruction of it
    declares or uses a TARGET* ARG, it is not the target, no other stage builds FROM it (its
    files would land in a per-platform image as they are), and its FROM line has no --platform
    (pinned stages run once anyway). Whether what it produces is really platform-neutral is
    checked after it runs.
    """
    if mode == "off":
        return {}
    lexer = ShellLexer(dockerfile.escape)
    target_args = {n for n in PLATFORM_ARGS if n.startswith("TARGET")}
    from_parents = {s.base.lower() for s in dockerfile.stages}
    chosen: dict[int, str] = {}
    for stage in dockerfile.stages:
        name = stage.name or str(stage.index)
        if name in excluded or stage.display in excluded:
            continue
        if isinstance(mode, frozenset):
            if name in mode or stage.display in mode:
                chosen[stage.index] = "forced"
            continue
        if stage.index == target.index or stage.platform is not None:
            continue
        if stage.name and stage.name in from_parents:
            continue
        if not any(ins.kind == "RUN" for ins in stage.instructions):
            continue  # nothing to save by running it once (an image used as a stage, say)
        uses: set[str] = set()
        for ins in stage.instructions:
            if ins.kind == "ARG":
                uses |= {n for n, _ in ins.arg_declarations()}
            for text in (*ins.args, *(v for v in ins.flags.values() if isinstance(v, str))):
                uses |= lexer.names_used(text)
        if uses & target_args:
            continue
        chosen[stage.index] = "auto"
    return chosen


def make_plan(request: PlanRequest) -> Plan:
    return _Planner(request).run()


@dataclass
class _State:
    """What a stage carries from one instruction to the next (and to `FROM <stage>`)."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    shell: tuple[str, ...] = DEFAULT_SHELL


@dataclass
class _Built:
    instance: StageInstance
    state: _State


class _Planner:
    def __init__(self, request: PlanRequest) -> None:
        self.req = request
        self.df = request.dockerfile
        self.lexer = ShellLexer(self.df.escape)
        self.ops: dict[str, Op] = {}
        self.built: dict[tuple[int, Platform], _Built] = {}
        self.warnings: list[PlanWarning] = []
        self.warned: set[tuple[str, int | None]] = set()
        self.consumed: set[str] = set()
        self.users: dict[tuple[int, Platform], list[Platform]] = {}
        self.once: dict[int, str] = {}

    # entry -------------------------------------------------------------------------------

    def run(self) -> Plan:
        if not self.req.platforms:
            raise DockerfileError("no target platform given", path=self.df.path)
        target = self.target_stage()
        if any(p != self.req.build_platform for p in self.req.platforms):
            self.once = build_once_stages(
                self.df, target, self.req.build_once, self.req.per_platform
            )
        results: dict[Platform, str] = {}
        for platform in self.req.platforms:
            built = self.stage(target.index, platform, ())
            results[platform] = built.instance.result
        self.unused_stage_warnings(target)
        unused_args = sorted(set(self.req.build_args) - self.consumed - PROXY_ARGS)
        if unused_args:
            self.warn(f"build arguments not consumed by any ARG: {', '.join(unused_args)}", None)
        return Plan(
            platforms=self.req.platforms,
            build_platform=self.req.build_platform,
            target=target.display,
            ops=dict(self.ops),
            stages=self.grouped_instances(),
            results=results,
            warnings=tuple(self.warnings),
        )

    def target_stage(self) -> Stage:
        if self.req.target is None:
            return self.df.stages[-1]
        found = self.df.stage(self.req.target)
        if found is None:
            names = ", ".join(s.name or str(s.index) for s in self.df.stages)
            raise DockerfileError(
                f"target stage {self.req.target!r} not found (stages: {names})", path=self.df.path
            )
        return found

    def grouped_instances(self) -> tuple[StageInstance, ...]:
        by_stage: dict[int, dict[tuple[str, ...], StageInstance]] = {}
        order = {p: i for i, p in enumerate(self.req.platforms)}
        for (index, key_platform), built in sorted(self.built.items(), key=lambda kv: kv[0][0]):
            group = by_stage.setdefault(index, {})
            inst = built.instance
            targets = set(self.users.get((index, key_platform), []))
            existing = group.get(inst.ops)
            if existing is not None:
                targets |= set(existing.targets)
            merged = tuple(sorted(targets, key=lambda p: order.get(p, len(order))))
            stage = self.df.stages[index]
            if index in self.once:
                mode = "build-once"
            elif stage.platform is not None and len(merged) > 1:
                mode = "pinned"
            else:
                mode = "per-platform"
            group[inst.ops] = StageInstance(
                inst.stage, index, inst.platform, merged, inst.ops, inst.base_image, mode
            )
        return tuple(
            inst
            for index in sorted(by_stage)
            for inst in sorted(
                by_stage[index].values(), key=lambda i: order.get(i.targets[0], len(order))
            )
        )

    def unused_stage_warnings(self, target: Stage) -> None:
        used = {index for index, _ in self.built}
        for stage in self.df.stages:
            if stage.index not in used:
                self.warn(
                    f"stage {stage.display!r} is never used: target {target.display!r} does not "
                    "depend on it, so it is not built",
                    stage.location,
                )

    def warn(self, message: str, location: Location | None) -> None:
        key = (message, location.start_line if location else None)
        if key not in self.warned:
            self.warned.add(key)
            self.warnings.append(PlanWarning(message, location))

    # global scope ------------------------------------------------------------------------

    def global_scope(self, platform: Platform) -> dict[str, str]:
        scope = platform_args(platform, self.req.build_platform)
        for instruction in self.df.meta_args:
            for name, default in instruction.arg_declarations():
                if name in self.req.build_args:
                    self.consumed.add(name)
                    scope[name] = self.req.build_args[name]
                elif default is not None:
                    scope[name] = self.expand_word(default, scope, instruction)
        return scope

    # stages ------------------------------------------------------------------------------

    def stage(self, index: int, platform: Platform, stack: tuple[int, ...]) -> _Built:
        target = platform
        if index in self.once:
            # Built once, for the build machine, whatever the target: every target shares it.
            platform = self.req.build_platform
        self.users.setdefault((index, platform), []).append(target)
        memo = self.built.get((index, platform))
        if memo is not None:
            return memo
        if index in stack:
            chain = " -> ".join(self.df.stages[i].display for i in (*stack, index))
            raise DockerfileError(
                f"circular dependency between stages: {chain}",
                path=self.df.path,
                line=self.df.stages[index].location.start_line,
            )
        built = self.build_stage(self.df.stages[index], platform, (*stack, index))
        self.built[(index, platform)] = built
        return built

    def build_stage(self, stage: Stage, target: Platform, stack: tuple[int, ...]) -> _Built:
        glob = self.global_scope(target)
        frm = stage.from_instruction
        base = self.expand_word(stage.base, glob, frm)
        if not base:
            raise DockerfileError(
                f"base name ({stage.base}) should not be blank", path=frm.location.path,
                line=frm.location.start_line,
            )  # fmt: skip
        parent_stage = self.stage_named(base, before=stage.index)
        requested: Platform | None = None
        if stage.platform is not None:
            text = self.expand_word(stage.platform, glob, frm)
            if self.stage_named(text, before=len(self.df.stages)) is not None:
                self.warn(
                    f"FROM --platform={stage.platform} names a stage; --platform takes a "
                    "platform (like linux/arm64 or $BUILDPLATFORM)",
                    frm.location,
                )
            try:
                requested = Platform.parse(text)
            except InvalidPlatformError as exc:
                raise DockerfileError(
                    f"FROM --platform: {exc}", path=frm.location.path, line=frm.location.start_line
                ) from None
        state = _State()
        base_image: str | None = None
        facts: ImageFacts | None = None
        if parent_stage is not None:
            if requested is not None:
                self.warn(
                    f"FROM --platform is ignored when FROM names another stage ({base!r}): "
                    "the stage is built for its own platform",
                    frm.location,
                )
            parent = self.stage(parent_stage.index, target, stack)
            run_platform = parent.instance.platform
            head = parent.instance.result
            inherited = parent.state
            state = _State(dict(inherited.env), inherited.workdir, inherited.user, inherited.shell)
        else:
            run_platform = requested or target
            base_image = self.image_name(base, frm)
            facts = self.req.images.get((base_image, str(run_platform)))
            source: dict[str, Any] = {
                "op": "source", "image": base_image, "platform": str(run_platform),
            }  # fmt: skip
            if facts is not None:
                source["digest"] = facts.digest
                for item in facts.env:
                    name, _, value = item.partition("=")
                    state.env[name] = value
                state.workdir = facts.workdir or "/"
                state.user = facts.user
                state.shell = facts.shell or DEFAULT_SHELL
            head = self.add_op(
                "source",
                source,
                run_platform,
                f"FROM {base_image}",
                (),
                frm.location,
            )
        ops = [head]
        args: dict[str, str | None] = {}
        triggers = self.triggers(facts.onbuild if parent_stage is None and facts else (), frm)
        for instruction in (*triggers, *stage.instructions):
            head = self.instruction(instruction, head, state, args, glob, target, run_platform,
                                    stack, stage)  # fmt: skip
            if head != ops[-1]:
                ops.append(head)
        instance = StageInstance(
            stage.display, stage.index, run_platform, (target,), tuple(ops), base_image
        )
        return _Built(instance, state)

    def triggers(self, expressions: Sequence[str], frm: Instruction) -> list[Instruction]:
        """ONBUILD triggers of a base image, as instructions located at the FROM line."""
        out: list[Instruction] = []
        for expression in expressions:
            try:
                nodes = parse(expression + "\n", frm.location.path).nodes
                for node in nodes:
                    ins = build_instruction(node, frm.location.path)
                    out.append(
                        Instruction(ins.kind, ins.args, frm.location, f"ONBUILD {expression}",
                                    ins.flags, ins.json, ins.heredocs)
                    )  # fmt: skip
            except DockerfileError as exc:
                raise DockerfileError(
                    f"ONBUILD trigger of the base image fails: {exc.message}",
                    path=frm.location.path,
                    line=frm.location.start_line,
                ) from None
        return out

    def stage_named(self, name: str, before: int) -> Stage | None:
        key = name.lower()
        for stage in self.df.stages[:before]:
            if stage.name == key:
                return stage
        return None

    def stage_for_from(self, value: str) -> Stage | None:
        """COPY --from / --mount from=: a stage by name or index, else None (an image)."""
        key = value.lower()
        for stage in self.df.stages:
            if stage.name == key:
                return stage
        if value.isdigit() and int(value) < len(self.df.stages):
            return self.df.stages[int(value)]
        return None

    def image_name(self, base: str, instruction: Instruction) -> str:
        if base == "scratch":
            return "scratch"
        try:
            return str(Reference.parse(base))
        except InvalidReferenceError as exc:
            raise DockerfileError(
                str(exc), path=instruction.location.path, line=instruction.location.start_line
            ) from None

    # instructions ------------------------------------------------------------------------

    def instruction(
        self,
        ins: Instruction,
        head: str,
        state: _State,
        args: dict[str, str | None],
        glob: Mapping[str, str],
        target: Platform,
        run_platform: Platform,
        stack: tuple[int, ...],
        stage: Stage,
    ) -> str:
        kind = ins.kind
        scope = {k: v for k, v in args.items() if v is not None} | state.env
        if kind == "ARG":
            for name, default in ins.arg_declarations():
                if name in self.req.build_args:
                    self.consumed.add(name)
                    args[name] = self.req.build_args[name]
                elif default is not None:
                    args[name] = self.expand_word(default, scope, ins)
                elif name in PLATFORM_ARGS:
                    args[name] = platform_args(target, self.req.build_platform)[name]
                else:
                    args[name] = glob.get(name) if name in self.global_names() else None
                scope = {k: v for k, v in args.items() if v is not None} | state.env
            return head
        if kind in ("RUN", "COPY", "ADD", "ENV", "LABEL", "WORKDIR", "USER", "EXPOSE", "VOLUME",
                    "STOPSIGNAL"):  # fmt: skip
            self.check_platform_args(ins, args, state, stage)
        if kind == "ENV":
            pairs: list[list[str]] = []
            for name, value in ins.pairs():
                key = self.expand_word(name, scope, ins)
                state.env[key] = self.expand_word(value, scope, ins)
                pairs.append([key, state.env[key]])
                scope = {k: v for k, v in args.items() if v is not None} | state.env
            # `pairs` in the order written: the image's Env keeps declaration order.
            return self.meta(ins, head, run_platform, {"env": sorted(state.env.items()),
                                                       "pairs": pairs})  # fmt: skip
        if kind == "WORKDIR":
            path = self.expand_word(ins.args[0], scope, ins)
            state.workdir = posixpath.normpath(posixpath.join(state.workdir, path))
            return self.add_op(
                "file",
                {"op": "file", "action": "mkdir", "parent": head, "path": state.workdir},
                run_platform,
                f"WORKDIR {state.workdir}",
                (head,),
                ins.location,
            )
        if kind == "USER":
            state.user = self.expand_word(ins.args[0], scope, ins)
            return self.meta(ins, head, run_platform, {"user": state.user})
        if kind == "SHELL":
            state.shell = ins.args
            return self.meta(ins, head, run_platform, {"shell": list(ins.args)})
        if kind == "LABEL":
            labels = [
                f"{self.expand_word(k, scope, ins)}={self.expand_word(v, scope, ins)}"
                for k, v in ins.pairs()
            ]
            return self.meta(ins, head, run_platform, {"args": labels})
        if kind in ("EXPOSE", "VOLUME", "STOPSIGNAL"):
            words = [self.expand_word(w, scope, ins) for w in ins.args]
            return self.meta(ins, head, run_platform, {"args": words})
        if kind in ("CMD", "ENTRYPOINT", "HEALTHCHECK", "MAINTAINER", "ONBUILD"):
            what: dict[str, Any] = {"args": list(ins.args), "json": ins.json}
            if kind in ("CMD", "ENTRYPOINT", "HEALTHCHECK"):
                what["shell"] = list(state.shell)
                what["flags"] = {k: v for k, v in ins.flags.items() if isinstance(v, str)}
            return self.meta(ins, head, run_platform, what)
        if kind == "RUN":
            return self.run_op(ins, head, state, args, scope, target, run_platform, stack)
        if kind in ("COPY", "ADD"):
            return self.copy_op(ins, head, state, scope, target, run_platform, stack)
        raise DockerfileError(f"cannot plan {kind}", path=ins.location.path,
                              line=ins.location.start_line)  # fmt: skip

    def global_names(self) -> set[str]:
        return {name for ins in self.df.meta_args for name, _ in ins.arg_declarations()}

    def meta(self, ins: Instruction, head: str, platform: Platform, what: dict[str, Any]) -> str:
        definition = {"op": "meta", "parent": head, "instruction": ins.kind, **what}
        words = [str(a) for a in what.get("args", [])]
        text = json.dumps(words) if what.get("json") else " ".join(words)
        description = f"{ins.kind} {text}".strip() if text else ins.original.strip()
        return self.add_op("meta", definition, platform, description, (head,), ins.location)

    def run_op(
        self,
        ins: Instruction,
        head: str,
        state: _State,
        args: Mapping[str, str | None],
        scope: Mapping[str, str],
        target: Platform,
        platform: Platform,
        stack: tuple[int, ...],
    ) -> str:
        inputs = [head]
        mounts: list[str] = []
        for mount in ins.list_flag("mount"):
            expanded = self.expand_word(mount, scope, ins)
            mounts.append(expanded)
            source = _mount_from(expanded)
            if source:
                inputs.append(self.from_input(source, target, platform, stack, ins)[0])
        argv = list(ins.args) if ins.json else [*state.shell, " ".join(ins.args)]
        env = {k: v for k, v in args.items() if v is not None and k not in PROXY_ARGS}
        env |= state.env
        definition = {
            "op": "exec",
            "inputs": inputs,
            "platform": str(platform),
            "argv": argv,
            "env": sorted(env.items()),
            "workdir": state.workdir,
            "user": state.user,
            "mounts": mounts,
            "network": ins.flag("network") or "default",
            "security": ins.flag("security") or "sandbox",
            "heredocs": [[h.name, h.file_descriptor, _sha(h.content)] for h in ins.heredocs],
        }
        emulated = not runs_natively(self.req.build_platform, platform)
        description = "RUN " + (" ".join(ins.args) if not ins.json else str(list(ins.args)))
        return self.add_op("exec", definition, platform, description, tuple(inputs),
                           ins.location, emulated=emulated)  # fmt: skip

    def copy_op(
        self,
        ins: Instruction,
        head: str,
        state: _State,
        scope: Mapping[str, str],
        target: Platform,
        platform: Platform,
        stack: tuple[int, ...],
    ) -> str:
        inputs = [head]
        source_key = "context"
        origin = ins.flag("from")
        shown_from = ""
        if origin is not None:
            value = self.expand_word(origin, scope, ins)
            source_key, shown = self.from_input(value, target, platform, stack, ins)
            shown_from = f"--from={shown} "
            inputs.append(source_key)
        paths, inline, dest = ins.sources_and_dest()
        sources = [self.expand_word(p, scope, ins) for p in paths]
        destination = self.expand_word(dest, scope, ins)
        resolved = posixpath.join(state.workdir, destination)
        if destination.endswith("/") and not resolved.endswith("/"):
            resolved += "/"
        definition = {
            "op": "file",
            "action": ins.kind.lower(),
            "inputs": inputs,
            "from": source_key,
            "sources": sources,
            "inline": [[h.name, _sha(h.content), h.expand] for h in inline],
            "dest": resolved,
            "chown": self.expand_word(ins.flag("chown") or "", scope, ins),
            "chmod": self.expand_word(ins.flag("chmod") or "", scope, ins),
            "link": ins.bool_flag("link"),
            "parents": ins.bool_flag("parents"),
            "exclude": [self.expand_word(e, scope, ins) for e in ins.list_flag("exclude")],
            "checksum": ins.flag("checksum") or "",
            "keep_git_dir": ins.bool_flag("keep-git-dir"),
        }
        shown = " ".join([*sources, *(f"<<{h.name}" for h in inline), destination])
        return self.add_op("file", definition, platform, f"{ins.kind} {shown_from}{shown}",
                           tuple(inputs), ins.location)  # fmt: skip

    def from_input(
        self,
        value: str,
        target: Platform,
        platform: Platform,
        stack: tuple[int, ...],
        ins: Instruction,
    ) -> tuple[str, str]:
        """`--from=` / `from=`: a stage (by name or index) or an image. (op key, shown name)"""
        dep = self.stage_for_from(value)
        if dep is not None:
            return self.stage(dep.index, target, stack).instance.result, dep.display
        return self.source_for(value, platform, ins), value

    def source_for(self, image: str, platform: Platform, ins: Instruction) -> str:
        name = self.image_name(image, ins)
        return self.add_op(
            "source",
            {"op": "source", "image": name, "platform": str(platform)},
            platform,
            f"image {name}",
            (),
            ins.location,
        )

    def add_op(
        self,
        kind: OpKind,
        definition: dict[str, Any],
        platform: Platform,
        description: str,
        inputs: Sequence[str],
        location: Location | None,
        *,
        emulated: bool = False,
    ) -> str:
        key = op_key(definition)
        if key not in self.ops:
            self.ops[key] = Op(key, kind, platform, description, tuple(dict.fromkeys(inputs)),
                               definition, location, emulated)  # fmt: skip
        return key

    # expansion ---------------------------------------------------------------------------

    def expand_word(self, word: str, scope: Mapping[str, str], ins: Instruction) -> str:
        try:
            return self.lexer.process_word(word, scope)
        except ExpansionError as exc:
            raise DockerfileError(
                str(exc), path=ins.location.path, line=ins.location.start_line
            ) from None

    def check_platform_args(
        self, ins: Instruction, args: Mapping[str, str | None], state: _State, stage: Stage
    ) -> None:
        texts: list[str] = []
        if ins.kind == "RUN":
            if not ins.json:
                texts.append(" ".join(ins.args))
            texts.extend(ins.list_flag("mount"))
        else:
            texts.extend(ins.args)
            texts.extend(v for k, v in ins.flags.items() if isinstance(v, str) and k != "platform")
        for text in texts:
            for name in sorted(self.lexer.names_used(text) & set(PLATFORM_ARGS)):
                if name not in args and name not in state.env:
                    self.warn(
                        f"{name} is used in stage {stage.display!r} without `ARG {name}` in that "
                        "stage, so it expands to an empty string; declare it after FROM",
                        ins.location,
                    )


def _mount_from(spec: str) -> str | None:
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "from" and value:
            return value.strip()
    return None


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
