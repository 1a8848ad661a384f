"""The walk over a Dockerfile's stages: for each target platform, the target stage and every
stage it needs (only those), each instruction handed to its step, base images and named
contexts put under the stages that use them, and the image of each target assembled."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from polyarch.errors import DockerfileError, InvalidPlatformError, InvalidReferenceError
from polyarch.frontend.convert.copying import CopyStep
from polyarch.frontend.convert.lints import Lints
from polyarch.frontend.convert.metadata import Handler, Metadata
from polyarch.frontend.convert.request import (
    ENTITLEMENTS,
    PREDEFINED_ARGS,
    PROXY_ARGS,
    ConvertRequest,
    NamedContext,
    platform_args,
)
from polyarch.frontend.convert.run import RunStep
from polyarch.frontend.convert.state import Built, StageContext, State, empty_state
from polyarch.frontend.convert.vertices import Vertices
from polyarch.frontend.convert.words import Words, error_at
from polyarch.frontend.dockerfile import checks
from polyarch.frontend.dockerfile.instructions import Dockerfile, Instruction, Stage
from polyarch.frontend.dockerfile.instructions import instruction_of as build_instruction
from polyarch.frontend.dockerfile.syntax import parse
from polyarch.frontend.gitref import parse_git_ref
from polyarch.graph.model import (
    BuildGraph,
    ImageSpec,
    OnceCheck,
    PlanStep,
    PlanWarning,
    StageInstance,
)
from polyarch.graph.ops import Copy, FileOp, ImageSource, Scratch
from polyarch.oci.config import DEFAULT_PATH, HistoryEntry, ImageConfig
from polyarch.platform import Platform
from polyarch.reference import Reference

_MAX_TRIGGERS: Final = 256


@dataclass(frozen=True, slots=True)
class _Base:
    """What a stage starts from: its state, where its steps run, the image it names."""

    state: State
    platform: Platform
    image: str | None = None
    triggers: tuple[str, ...] = ()


class Converter:
    def __init__(
        self,
        request: ConvertRequest,
        once: Callable[[Dockerfile, Stage, frozenset[str]], dict[int, str]],
    ) -> None:
        self.req = request
        self.df = request.dockerfile
        self.words = Words(self.df.escape)
        self.vertices = Vertices(request.ignore)
        self.lints = Lints(request, self.words)
        self.metadata = Metadata(request, self.words, self.lints, self.vertices)
        self.handlers: dict[str, Handler] = {
            **self.metadata.handlers(),
            "RUN": RunStep(request, self.words, self.vertices, self),
            "COPY": (copying := CopyStep(self.words, self.lints, self.vertices, self)),
            "ADD": copying,
        }
        self.built: dict[tuple[int, Platform], Built] = {}
        self.users: dict[tuple[int, Platform], list[Platform]] = {}
        self.once: dict[int, str] = {}
        self._choose_once = once
        self.target_name = "default"

    @property
    def warnings(self) -> list[PlanWarning]:
        return self.lints.warnings

    # entry -------------------------------------------------------------------------------

    def run(self) -> BuildGraph:
        if not self.req.platforms:
            raise DockerfileError("no target platform given", path=self.df.path)
        unknown = sorted(self.req.allow - set(ENTITLEMENTS))
        if unknown:
            raise DockerfileError(f"unknown entitlement {unknown[0]!r} (known: "
                                  f"{', '.join(ENTITLEMENTS)})", path=self.df.path)  # fmt: skip
        _check_syntax(self.df)
        checks.node_checks(self.df.nodes, self.df.warnings, self.lints.linter, self.df.path)
        checks.stage_checks(self.df.nodes, self.lints.linter, self.df.path)
        target = self.target_stage()
        self.target_name = self.req.target or target.name or "default"
        self.lints.linting = True  # the FROM lines are checked before any conversion
        self.lints.default_arg_checks(self.target_name)
        self.lints.from_checks(self.global_scope(self.req.platforms[0]))
        self.lints.linting = False
        if any(p != self.req.build_platform for p in self.req.platforms):
            replaced = frozenset(s.name for s in self.df.stages
                                 if s.name and self.req.context_key(s.name))  # fmt: skip
            self.once = self._choose_once(self.df, target, self.req.per_platform | replaced)
        images: dict[Platform, ImageSpec] = {}
        for number, platform in enumerate(self.req.platforms):
            self.lints.linting = number == 0
            built = self.stage(target.index, platform, ())
            images[platform] = self.image_spec(built.state, platform)
            if self.lints.linting and self.req.check_all:
                for stage in self.df.stages:
                    self.stage(stage.index, platform, ())
        self.lints.linting = False
        self.finish_warnings(target)
        return BuildGraph(
            platforms=self.req.platforms,
            build_platform=self.req.build_platform,
            target=target.display,
            vertices=dict(self.vertices.table),
            stages=self.grouped_instances(),
            images=images,
            warnings=tuple(self.lints.warnings),
            once_checks={k: tuple(v) for k, v in self.vertices.checks.items()},
        )

    def finish_warnings(self, target: Stage) -> None:
        """Stages never used, build arguments no ARG took; then a check set to fail does."""
        used = {index for index, _ in self.built}
        for stage in self.df.stages:
            if stage.index not in used:
                self.lints.warn(
                    f"stage {stage.display!r} is never used: target {target.display!r} does not "
                    "depend on it, so it is not built",
                    stage.location,
                )
        unused_args = sorted(
            name for name in set(self.req.build_args) - self.metadata.consumed - PROXY_ARGS
            - set(PREDEFINED_ARGS) - {"SOURCE_DATE_EPOCH"} if not name.startswith("BUILDKIT_")
        )  # fmt: skip
        if unused_args:
            self.lints.warn(f"build arguments not consumed by any ARG: {', '.join(unused_args)}",
                            None)  # fmt: skip
        failed = self.lints.linter.error(self.df.path)
        if failed is not None:
            raise failed

    def image_spec(self, state: State, target: Platform) -> ImageSpec:
        """The target's image: its config claims the target platform (as BuildKit's
        finalizeResultImage does), with the build's labels."""
        config = state.config
        same = config.os == target.os and config.architecture == target.architecture
        variant = target.variant if target.variant or not same else config.variant
        labels = dict(config.labels)
        labels.update(self.req.labels)
        config = config.replace(os=target.os, architecture=target.architecture,
                                variant=variant, labels=labels)  # fmt: skip
        return ImageSpec(target, state.head, config, tuple(state.steps))

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
        by_stage: dict[int, dict[tuple[PlanStep, ...], StageInstance]] = {}
        order = {p: i for i, p in enumerate(self.req.platforms)}
        for (index, key_platform), built in sorted(self.built.items(), key=lambda kv: kv[0][0]):
            group = by_stage.setdefault(index, {})
            inst = built.instance
            targets = set(self.users.get((index, key_platform), []))
            existing = group.get(inst.steps)
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
            group[inst.steps] = StageInstance(inst.stage, index, inst.platform, merged,
                                              inst.steps, inst.result, inst.base_image,
                                              mode)  # fmt: skip
        return tuple(
            inst
            for index in sorted(by_stage)
            for inst in sorted(
                by_stage[index].values(), key=lambda i: order.get(i.targets[0], len(order))
            )
        )

    def global_scope(self, platform: Platform) -> dict[str, str]:
        scope = platform_args(platform, self.req.build_platform, self.target_name)
        for name in PREDEFINED_ARGS:
            if name in self.req.build_args:
                scope[name] = self.req.build_args[name]
        for instruction in self.df.meta_args:
            for name, default in instruction.arg_declarations():
                if name in self.req.build_args:
                    self.metadata.consumed.add(name)
                    scope[name] = self.req.build_args[name]
                elif default is not None:
                    scope[name] = self.words.expand(default, scope, instruction)
        return scope

    # stages ------------------------------------------------------------------------------

    def stage(self, index: int, platform: Platform, stack: tuple[int, ...]) -> Built:
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

    def build_stage(self, stage: Stage, target: Platform, stack: tuple[int, ...]) -> Built:
        glob = self.global_scope(target)
        frm = stage.from_instruction
        base = self.words.expand(stage.base, glob, frm)
        if not base:
            raise error_at(frm, f"base name ({stage.base}) should not be blank")
        # A named context of the stage's own name replaces the stage whole: its instructions
        # are not run (BuildKit's rule); one of its base's name is the base they run on.
        replaced = self.req.context_key(stage.name or "")
        named_key = replaced or self.req.context_key(base)
        named = self.req.contexts.get(named_key) if named_key else None
        parent_stage = None if named is not None else self.stage_named(base, before=stage.index)
        requested = self._requested_platform(stage, glob, frm)
        if parent_stage is not None:
            start = self._on_stage(parent_stage, base, requested, target, stack, frm)
        elif named is not None and named.kind in ("local", "git"):
            run_platform = requested or target
            files = self.named_files(named_key, named, ("/",), run_platform, frm)
            copy = FileOp((Copy(1, ("/",), "/"),))
            head = self.vertices.add(copy, (self.vertices.scratch(run_platform), files),
                                     f"FROM {base}", run_platform, frm)  # fmt: skip
            start = _Base(empty_state(run_platform, head), run_platform)
        else:
            if named is not None:
                base = named.value if named.kind == "image" else "oci-layout://" + named.value
            start = self._on_image(base, requested or target, frm)
        state = start.state
        state.plan.append(PlanStep(f"FROM {start.image or base}", state.head, frm.location))
        ctx = StageContext(stage, target, start.platform, glob, stack)
        if not replaced:
            for instruction in (*self.triggers(start.triggers, frm), *stage.instructions):
                self.instruction(instruction, state, ctx)
        instance = StageInstance(stage.display, stage.index, start.platform, (target,),
                                 tuple(state.plan), state.head, start.image)  # fmt: skip
        return Built(instance, state)

    def _requested_platform(
        self, stage: Stage, glob: dict[str, str], frm: Instruction
    ) -> Platform | None:
        """FROM --platform, expanded and checked (None without one)."""
        if stage.platform is None:
            return None
        text = self.words.expand(stage.platform, glob, frm)
        if self.stage_named(text, before=len(self.df.stages)) is not None:
            self.lints.warn(
                f"FROM --platform={stage.platform} names a stage; --platform takes a "
                "platform (like linux/arm64 or $BUILDPLATFORM)",
                frm.location,
            )
        if not text:
            raise error_at(frm, f"empty platform value from expression {stage.platform}")
        try:
            return Platform.parse(text)
        except InvalidPlatformError as exc:
            raise error_at(frm, f"FROM --platform: {exc}") from None

    def _on_stage(
        self, parent_stage: Stage, base: str, requested: Platform | None, target: Platform,
        stack: tuple[int, ...], frm: Instruction,
    ) -> _Base:  # fmt: skip
        """FROM another stage: its state, built for the same target."""
        if requested is not None:
            self.lints.warn(
                f"FROM --platform is ignored when FROM names another stage ({base!r}): "
                "the stage is built for its own platform",
                frm.location,
            )
        parent = self.stage(parent_stage.index, target, stack)
        state = parent.state.fork()
        state.config = state.config.replace(onbuild=())  # triggers do not carry over
        return _Base(state, parent.instance.platform)

    def _on_image(self, base: str, run_platform: Platform, frm: Instruction) -> _Base:
        """FROM scratch or an image (an OCI layout's included), with the config it resolved
        to; its ONBUILD triggers are run at the FROM line."""
        if base == "scratch":
            head = self.vertices.add(Scratch(), (), f"FROM {base}", run_platform, frm,
                                     internal=False)  # fmt: skip
            return _Base(_normal_workdir(empty_state(run_platform, head)), run_platform)
        base_image = self.image_name(base, frm)
        resolved = self.req.images.get((base_image, str(run_platform)))
        config = resolved.config if resolved else ImageConfig.empty(run_platform)
        if resolved is not None:
            self.lints.base_platform_check(base, run_platform, config, frm)
        triggers = config.onbuild
        config = _history_for_layers(config).replace(onbuild=())
        if "PATH" not in config.env_map() and run_platform.os != "windows":
            config = config.replace(env=(*config.env, f"PATH={DEFAULT_PATH}"))
        source = ImageSource(base_image, run_platform, resolved.digest if resolved else "")
        head = self.vertices.add(source, (), f"FROM {base_image}", run_platform, frm)
        state = State(config, dict(config.env_map()), head)
        state.base_known = resolved is not None
        return _Base(_normal_workdir(state), run_platform, base_image, triggers)

    def triggers(self, expressions: Sequence[str], frm: Instruction) -> list[Instruction]:
        """ONBUILD triggers of a base image, as instructions located at the FROM line."""
        out: list[Instruction] = []
        if len(expressions) > _MAX_TRIGGERS:
            raise error_at(frm, f"the base image has {len(expressions)} ONBUILD triggers (at "
                                f"most {_MAX_TRIGGERS} are run)")  # fmt: skip
        for expression in expressions:
            try:
                nodes = parse(expression + "\n", frm.location.path).nodes
                if len(nodes) != 1:
                    raise DockerfileError("onbuild trigger should be a single expression")
                ins = build_instruction(nodes[0], frm.location.path)
                if ins.kind in ("ONBUILD", "FROM", "MAINTAINER"):
                    raise DockerfileError(f"{ins.kind} isn't allowed as an ONBUILD trigger")
                out.append(Instruction(ins.kind, ins.args, frm.location, f"ONBUILD {expression}",
                                       ins.flags, ins.json, ins.heredocs))  # fmt: skip
            except DockerfileError as exc:
                raise error_at(frm, f"ONBUILD trigger of the base image fails: "
                                    f"{exc.message}") from None  # fmt: skip
        return out

    def stage_named(self, name: str, before: int) -> Stage | None:
        """`FROM name`: the latest stage of that name before this one (BuildKit's rule)."""
        key = name.lower()
        for stage in reversed(self.df.stages[:before]):
            if stage.name == key:
                return stage
        return None

    def image_name(self, base: str, instruction: Instruction) -> str:
        if base.startswith("oci-layout://"):
            return base
        try:
            return str(Reference.parse(base))
        except InvalidReferenceError as exc:
            raise error_at(instruction, str(exc)) from None

    # instructions ------------------------------------------------------------------------

    def instruction(self, ins: Instruction, st: State, ctx: StageContext) -> None:
        kind = ins.kind
        if kind != "ARG":
            if self.lints.linting:
                self.lints.undefined_vars(ins, st)
            if kind == "RUN" and not ins.json:
                self.lints.check_platform_args(ins, st, ctx)
        handler = self.handlers.get(kind)
        if handler is None:
            raise error_at(ins, f"cannot convert {ins.kind}")
        handler(ins, st, ctx)

    def from_input(
        self, value: str, ctx: StageContext, ins: Instruction, paths: tuple[str, ...],
        consumer: int,
    ) -> tuple[str, str, OnceCheck | None]:  # fmt: skip
        """`--from=` / `from=`: a stage (by name or index) or an image: (vertex, shown name,
        the build-once check of what the consumer takes, if the stage is build-once)."""
        named_key = self.req.context_key(value)
        named = self.req.contexts.get(named_key) if named_key else None
        if named is not None and named.kind in ("local", "git"):
            return self.named_files(named_key, named, paths, ctx.platform, ins), value, None
        written = value  # shown as written: a named context's name, not what it stands for
        if named is not None:
            value = named.value if named.kind == "image" else "oci-layout://" + named.value
        dep = None if named is not None else self.df.stage(value)
        if dep is not None:
            if dep.index == ctx.stage.index:
                raise error_at(ins, f"stage {dep.display!r} cannot take files from itself")
            built = self.stage(dep.index, ctx.target, ctx.stack)
            check = None
            if self.once.get(dep.index) == "auto":
                check = OnceCheck(dep.display, built.instance.result, consumer, paths)
            return built.instance.result, dep.display, check
        name = self.image_name(value, ins)
        resolved = self.req.images.get((name, str(ctx.platform)))
        source = ImageSource(name, ctx.platform, resolved.digest if resolved else "")
        return self.vertices.add(source, (), f"image {name}", ctx.platform, ins), written, None

    def named_files(
        self, key: str, named: NamedContext, paths: tuple[str, ...], platform: Platform,
        ins: Instruction,
    ) -> str:  # fmt: skip
        """The files of a named context that is a directory or a git repository."""
        if named.kind == "git":
            git = parse_git_ref(named.value)
            if git is None:
                raise error_at(ins, f"build context {key}: {named.value} is not a git URL")
            return self.vertices.git_source(git, f"context {key}", platform, ins,
                                            keep=bool(git.keep_git_dir),
                                            checksum=git.checksum)  # fmt: skip
        return self.vertices.context_selection(paths, platform, ins, name=key)


def _normal_workdir(state: State) -> State:
    if state.config.working_dir:
        wd = posixpath.normpath(posixpath.join("/", state.config.working_dir))
        state.config = state.config.replace(working_dir=wd)
    return state


_SYNTAX: Final = re.compile(
    r"\A(?:docker\.io/)?docker/dockerfile(?:-upstream)?(?::(?:1|1\.\d+(?:\.\d+)?)"
    r"(?:-labs)?)?(?:@sha256:[0-9a-f]{64})?\Z"
)


def _check_syntax(df: Dockerfile) -> None:
    """`# syntax=docker/dockerfile:1` (or 1.x, -labs, pinned by digest): polyarch is that
    frontend. Any other syntax image would be another frontend, which polyarch never runs."""
    value = df.directives.get("syntax")
    if value is None or _SYNTAX.match(value.strip()):
        return
    raise DockerfileError(
        f"# syntax={value}: polyarch runs no external frontends; it is the "
        "docker/dockerfile:1 frontend itself (remove the directive, or use that one)",
        path=df.path, line=1,
    )  # fmt: skip


def _history_for_layers(config: ImageConfig) -> ImageConfig:
    """A base image's history with exactly one non-empty entry per layer, as BuildKit's
    exporter normalises it: entries past the last layer become empty, missing ones are added
    (dated by the image) after the base's own."""
    layers = len(config.diff_ids)
    counted = sum(1 for h in config.history if not h.empty_layer)
    if counted == layers:
        return config
    history: list[HistoryEntry] = []
    seen = 0
    for entry in config.history:
        if not entry.empty_layer and seen >= layers:
            history.append(dataclasses.replace(entry, empty_layer=True))
            continue
        seen += 0 if entry.empty_layer else 1
        history.append(entry)
    history += [HistoryEntry(config.created, "", None, "buildkit.exporter.image.v0")] * (
        layers - seen
    )
    return config.replace(history=tuple(history))
