"""A Dockerfile, target platforms and resolved base images -> a build graph (BuildKit's
dockerfile2llb). Pure.

For each target platform the converter walks the target stage and, through `FROM <stage>`,
`COPY --from` and `RUN --mount=...,from=`, every stage it needs (only those), as BuildKit
dispatches them:

- Values are expanded where BuildKit expands them, against the stage's environment: the base
  image's Env, then every ENV and every ARG with a value, in order (the later wins). ARGs
  before the first FROM are the global scope: usable in FROM lines, visible in a stage only
  when redeclared there. `--build-arg` beats an ARG's default. Predefined: TARGETPLATFORM,
  TARGETOS, TARGETARCH, TARGETVARIANT, TARGETSTAGE, BUILDPLATFORM, BUILDOS, BUILDARCH,
  BUILDVARIANT, and the proxy ARGs, which reach RUN steps without a declaration and stay out
  of keys and history.
- Metadata (ENV, USER, WORKDIR, CMD, ENTRYPOINT, LABEL, ...) is resolved here, into the image
  config of each target and its history, as BuildKit writes them; the engine never reads the
  Dockerfile.
- Filesystem steps become typed vertices (sources, exec, file ops): RUN heredocs as BuildKit
  runs them (the body through the shell; a shebang body as a file run from /dev/pipes; other
  forms handed to the shell whole), COPY heredocs expanded with ARG and ENV values, context
  files as selections of the context.

Identical vertices have identical keys, so a stage whose steps are the same for several
targets (pinned to $BUILDPLATFORM, using no TARGET* value) appears once. Build-once stages
(`--build-once`) are planned once, for the build machine; what other stages take from them is
listed for the check that they are free of native code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from polyarch.errors import DockerfileError, InvalidPlatformError, InvalidReferenceError
from polyarch.frontend import gofmt
from polyarch.frontend.dockerfile import checks
from polyarch.frontend.dockerfile.checks import Linter
from polyarch.frontend.dockerfile.instructions import Dockerfile, Instruction, Stage
from polyarch.frontend.dockerfile.instructions import build as build_instructions
from polyarch.frontend.dockerfile.instructions import instruction_of as build_instruction
from polyarch.frontend.dockerfile.shell import ExpansionError, ShellLexer
from polyarch.frontend.dockerfile.syntax import Heredoc, ParseResult, chomp, parse
from polyarch.frontend.gitref import GitRef, GitRefError, parse_git_ref
from polyarch.frontend.runmount import MountSpec, MountSyntaxError, parse_mount
from polyarch.graph.model import (
    BuildGraph,
    HistoryStep,
    ImageSpec,
    Location,
    OnceCheck,
    PlanStep,
    PlanWarning,
    StageInstance,
    Vertex,
)
from polyarch.graph.ops import (
    BindMount,
    CacheMount,
    ContextSource,
    Copy,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    MergeOp,
    Mkdir,
    Mkfile,
    Mount,
    Op,
    Scratch,
    SecretMount,
    SshMount,
    TmpfsMount,
)
from polyarch.oci.config import DEFAULT_PATH, Healthcheck, HistoryEntry, ImageConfig
from polyarch.patterns import IgnoreMatcher
from polyarch.platform import Platform, runs_natively
from polyarch.reference import Reference

PLATFORM_ARGS: Final = (
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
)  # fmt: skip
PREDEFINED_ARGS: Final = (*PLATFORM_ARGS, "TARGETSTAGE")
PROXY_ARGS: Final = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
DEFAULT_SHELL: Final = ("/bin/sh", "-c")
ENTITLEMENTS: Final = ("security.insecure", "network.host")
INLINE_DIR: Final = "/dev/pipes"
_MAX_TRIGGERS: Final = 256
_MIN_DURATION: Final = 1_000_000  # 1 ms, BuildKit's minimum for HEALTHCHECK durations
# BuildKit's SBOM switches: build arguments that never become variables
_NON_ENV_ARGS: Final = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


def platform_args(target: Platform, build: Platform, stage: str = "default") -> dict[str, str]:
    return {
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant or "",
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant or "",
        "TARGETSTAGE": stage,
    }


@dataclass(frozen=True, slots=True)
class BaseImage:
    """A base image as resolved from its registry: manifest digest and config."""

    digest: str
    config: ImageConfig


# --build-once: auto (the rule decides), off (BuildKit's behaviour), or the stages forced to run
# once (names, lower case).
BuildOnce: TypeAlias = Literal["auto", "off"] | frozenset[str]
# A --build-context's kind (see NamedContext).
ContextKind: TypeAlias = Literal["local", "image", "layout", "git"]


def parse_build_once(value: str) -> BuildOnce:
    """`auto`, `off`, or `STAGE[,STAGE]`."""
    if value == "auto":
        return "auto"
    if value == "off":
        return "off"
    return frozenset(v.strip().lower() for v in value.split(",") if v.strip())


def build_once_text(value: BuildOnce) -> str:
    """The flag's form of a value (`parse_build_once` reads it back)."""
    return value if isinstance(value, str) else ",".join(sorted(value))


@dataclass(frozen=True, slots=True)
class NamedContext:
    """`--build-context NAME=VALUE`: a directory (`local`), an image (`image`: VALUE is its
    reference; `layout`: VALUE is `DIR[:TAG|@DIGEST]` of an OCI layout), or a git repository
    (`git`: VALUE is its URL with `#ref:subdir`)."""

    kind: ContextKind
    value: str


@dataclass(frozen=True, slots=True)
class ConvertRequest:
    dockerfile: Dockerfile
    platforms: tuple[Platform, ...]
    build_platform: Platform
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    # (image reference, platform) -> what it resolved to. Without them the graph expands as if
    # base images had an empty config: fine for showing a plan, wrong for building one.
    images: Mapping[tuple[str, str], BaseImage] = field(default_factory=dict)
    # "auto": stages that use no TARGET* value and are only copied from run once, natively;
    # "off": BuildKit's behaviour; or a set of stage names to run once regardless.
    build_once: BuildOnce = "auto"
    # Stages found to produce native code (after running once): planned per platform.
    per_platform: frozenset[str] = frozenset()
    ignore: tuple[str, ...] = ()  # the build context's .dockerignore patterns
    allow: frozenset[str] = frozenset()  # entitlements granted (`--allow security.insecure`)
    labels: Mapping[str, str] = field(default_factory=dict)  # `--label`: on the target image
    contexts: Mapping[str, NamedContext] = field(default_factory=dict)  # --build-context
    # `build --check`: every stage is looked at (not only the target's), as BuildKit's lint
    check_all: bool = False
    extra_hosts: tuple[str, ...] = ()  # `--add-host`: HOST=IP, in RUN steps' /etc/hosts
    network: str = "default"  # `--network`: RUN steps' network unless one names its own
    ulimits: tuple[str, ...] = ()  # `--ulimit NAME=SOFT[:HARD]`, checked
    shm_size: int = 0  # `--shm-size`, bytes


def convert(request: ConvertRequest) -> BuildGraph:
    return _Converter(request).run()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """`build --check`: what BuildKit's build checks found, and the error that would stop the
    build, if any (found after the warnings, which are still told)."""

    warnings: tuple[PlanWarning, ...]
    error: DockerfileError | None = None
    path: str = ""  # the Dockerfile


def check_dockerfile(
    parsed: ParseResult,
    path: str,
    build_args: Mapping[str, str],
    request: Callable[[Dockerfile], ConvertRequest],
) -> CheckResult:
    """BuildKit's lint of a Dockerfile: the conversion with every stage looked at (only the
    target's when one is named), its warnings and its error. When the instructions cannot be
    read, the warnings of those before the one that fails, as BuildKit gives them."""
    try:
        dockerfile = build_instructions(parsed, path)
    except DockerfileError as exc:
        try:
            config = checks.check_config(parsed.directives.get("check"), dict(build_args), path)
        except DockerfileError:
            return CheckResult((), exc, path)
        linter = Linter(config)
        before = [n for n in parsed.nodes if exc.line is None or n.start_line < exc.line]
        checks.node_checks(before, parsed.warnings, linter, path)
        return CheckResult(tuple(linter.warnings), exc, path)
    wanted = request(dockerfile)
    converter = _Converter(dataclasses.replace(wanted, check_all=wanted.target is None))
    try:
        converter.run()
    except DockerfileError as exc:
        return CheckResult(tuple(w for w in converter.warnings if w.rule), exc, path)
    return CheckResult(tuple(w for w in converter.warnings if w.rule), None, path)


def build_once_stages(
    dockerfile: Dockerfile, target: Stage, mode: BuildOnce, excluded: frozenset[str]
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
    target_args = {n for n in PREDEFINED_ARGS if n.startswith("TARGET")}
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
            for text in (*ins.args, *(v for v in ins.flags.values() if isinstance(v, str)),
                         *(m for m in ins.list_flag("mount"))):  # fmt: skip
                uses |= lexer.names_used(text)
        if uses & target_args:
            continue
        chosen[stage.index] = "auto"
    return chosen


@dataclass
class _State:
    """What a stage carries from one instruction to the next (and to `FROM <stage>`)."""

    config: ImageConfig
    env: dict[str, str]  # BuildKit's state env: base Env, ENV and ARG values, in order
    head: str  # the vertex of the filesystem so far
    steps: list[HistoryStep] = field(default_factory=list)
    build_args: list[tuple[str, str | None]] = field(default_factory=list)  # ARGs, for history
    plan: list[PlanStep] = field(default_factory=list)
    cmd_set: bool = False  # CMD was set in this stage (ENTRYPOINT then keeps it)
    declared: dict[str, str | None] = field(default_factory=dict)  # ARGs declared in the stage
    workdir_set: bool = False  # a WORKDIR of this Dockerfile ran (here or in a parent stage)
    # The base image's config is known (resolved): checks that read its variables or SHELL
    # (UndefinedVar, JSONArgsRecommended) say nothing without it.
    base_known: bool = True
    # CMD, ENTRYPOINT, HEALTHCHECK: where this stage last set them (MultipleInstructions...)
    set_at: dict[str, Location] = field(default_factory=dict)

    @property
    def workdir(self) -> str:
        return self.config.working_dir or "/"

    @property
    def user(self) -> str:
        return self.config.user or ""

    @property
    def shell(self) -> tuple[str, ...]:
        return self.config.shell or DEFAULT_SHELL

    def fork(self) -> _State:
        return _State(self.config, dict(self.env), self.head, list(self.steps),
                      list(self.build_args), workdir_set=self.workdir_set,
                      base_known=self.base_known)  # fmt: skip


def _empty_state(platform: Platform, head: str) -> _State:
    """A stage on nothing (scratch, a directory): BuildKit's empty image, whose PATH is in the
    stage's variables too (`ENV PATH=$PATH:/x` extends it)."""
    config = ImageConfig.empty(platform)
    return _State(config, dict(config.env_map()), head)


@dataclass
class _Built:
    instance: StageInstance
    state: _State


@dataclass(frozen=True)
class _Context:
    """What one stage's instructions share."""

    stage: Stage
    target: Platform  # the target platform this instance is for
    platform: Platform  # where its steps run
    glob: Mapping[str, str]
    stack: tuple[int, ...]


class _Converter:
    def __init__(self, request: ConvertRequest) -> None:
        self.req = request
        self.df = request.dockerfile
        self.lexer = ShellLexer(self.df.escape)
        self.raw_lexer = ShellLexer(self.df.escape, skip_process_quotes=True)
        self.vertices: dict[str, Vertex] = {}
        self.built: dict[tuple[int, Platform], _Built] = {}
        self.warnings: list[PlanWarning] = []
        self.warned: set[tuple[str, int | None]] = set()
        self.consumed: set[str] = set()
        self.users: dict[tuple[int, Platform], list[Platform]] = {}
        self.once: dict[int, str] = {}
        self.checks: dict[str, list[OnceCheck]] = {}
        self.target_name = "default"
        config = checks.check_config(self.df.directives.get("check"), dict(request.build_args),
                                     self.df.path)  # fmt: skip
        self.linter = Linter(config, self.warnings.append)
        # BuildKit checks what the first target platform's conversion meets, once.
        self.linting = False
        self.ignore = IgnoreMatcher(request.ignore) if request.ignore else None

    # entry -------------------------------------------------------------------------------

    def run(self) -> BuildGraph:
        if not self.req.platforms:
            raise DockerfileError("no target platform given", path=self.df.path)
        unknown = sorted(self.req.allow - set(ENTITLEMENTS))
        if unknown:
            raise DockerfileError(f"unknown entitlement {unknown[0]!r} (known: "
                                  f"{', '.join(ENTITLEMENTS)})", path=self.df.path)  # fmt: skip
        _check_syntax(self.df)
        checks.node_checks(self.df.nodes, self.df.warnings, self.linter, self.df.path)
        checks.stage_checks(self.df.nodes, self.linter, self.df.path)
        target = self.target_stage()
        self.target_name = self.req.target or target.name or "default"
        self.from_checks()
        if any(p != self.req.build_platform for p in self.req.platforms):
            replaced = frozenset(s.name for s in self.df.stages
                                 if s.name and self.context_key(s.name))  # fmt: skip
            self.once = build_once_stages(
                self.df, target, self.req.build_once, self.req.per_platform | replaced
            )
        images: dict[Platform, ImageSpec] = {}
        for number, platform in enumerate(self.req.platforms):
            self.linting = number == 0
            built = self.stage(target.index, platform, ())
            images[platform] = self.image_spec(built.state, platform)
            if self.linting and self.req.check_all:
                for stage in self.df.stages:
                    self.stage(stage.index, platform, ())
        self.linting = False
        self.unused_stage_warnings(target)
        unused_args = sorted(
            name for name in set(self.req.build_args) - self.consumed - PROXY_ARGS
            - set(PREDEFINED_ARGS) - {"SOURCE_DATE_EPOCH"} if not name.startswith("BUILDKIT_")
        )  # fmt: skip
        if unused_args:
            self.warn(f"build arguments not consumed by any ARG: {', '.join(unused_args)}", None)
        failed = self.linter.error(self.df.path)
        if failed is not None:
            raise failed
        return BuildGraph(
            platforms=self.req.platforms,
            build_platform=self.req.build_platform,
            target=target.display,
            vertices=dict(self.vertices),
            stages=self.grouped_instances(),
            images=images,
            warnings=tuple(self.warnings),
            once_checks={k: tuple(v) for k, v in self.checks.items()},
        )

    def image_spec(self, state: _State, target: Platform) -> ImageSpec:
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
        scope = platform_args(platform, self.req.build_platform, self.target_name)
        for name in PREDEFINED_ARGS:
            if name in self.req.build_args:
                scope[name] = self.req.build_args[name]
        for instruction in self.df.meta_args:
            for name, default in instruction.arg_declarations():
                if name in self.req.build_args:
                    self.consumed.add(name)
                    scope[name] = self.req.build_args[name]
                elif default is not None:
                    scope[name] = self.expand(default, scope, instruction)
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
        base = self.expand(stage.base, glob, frm)
        if not base:
            raise self.error(f"base name ({stage.base}) should not be blank", frm)
        # A named context of the stage's own name replaces the stage whole: its instructions
        # are not run (BuildKit's rule); one of its base's name is the base they run on.
        replaced = self.context_key(stage.name or "")
        named_key = replaced or self.context_key(base)
        named = self.req.contexts.get(named_key) if named_key else None
        parent_stage = None if named is not None else self.stage_named(base, before=stage.index)
        requested: Platform | None = None
        if stage.platform is not None:
            text = self.expand(stage.platform, glob, frm)
            if self.stage_named(text, before=len(self.df.stages)) is not None:
                self.warn(
                    f"FROM --platform={stage.platform} names a stage; --platform takes a "
                    "platform (like linux/arm64 or $BUILDPLATFORM)",
                    frm.location,
                )
            if not text:
                raise self.error(f"empty platform value from expression {stage.platform}", frm)
            try:
                requested = Platform.parse(text)
            except InvalidPlatformError as exc:
                raise self.error(f"FROM --platform: {exc}", frm) from None
        base_image: str | None = None
        triggers: tuple[str, ...] = ()
        if parent_stage is not None:
            if requested is not None:
                self.warn(
                    f"FROM --platform is ignored when FROM names another stage ({base!r}): "
                    "the stage is built for its own platform",
                    frm.location,
                )
            parent = self.stage(parent_stage.index, target, stack)
            run_platform = parent.instance.platform
            state = parent.state.fork()
            state.config = state.config.replace(onbuild=())  # triggers do not carry over
        elif named is not None and named.kind in ("local", "git"):
            run_platform = requested or target
            files = self.named_files(named_key, named, ("/",), run_platform, frm)
            copy = FileOp((Copy(1, ("/",), "/"),))
            head = self.add(copy, (self.scratch(run_platform), files), f"FROM {base}",
                            run_platform, frm)  # fmt: skip
            state = _empty_state(run_platform, head)
        else:
            run_platform = requested or target
            if named is not None:
                base = named.value if named.kind == "image" else "oci-layout://" + named.value
            if base == "scratch":
                head = self.add(Scratch(), (), f"FROM {base}", run_platform, frm, internal=False)
                state = _empty_state(run_platform, head)
            else:
                base_image = self.image_name(base, frm)
                resolved = self.req.images.get((base_image, str(run_platform)))
                config = resolved.config if resolved else ImageConfig.empty(run_platform)
                if resolved is not None:
                    self.base_platform_check(base, run_platform, config, frm)
                triggers = config.onbuild
                config = _history_for_layers(config).replace(onbuild=())
                if "PATH" not in config.env_map() and run_platform.os != "windows":
                    config = config.replace(env=(*config.env, f"PATH={DEFAULT_PATH}"))
                source = ImageSource(base_image, run_platform, resolved.digest if resolved else "")
                head = self.add(source, (), f"FROM {base_image}", run_platform, frm)
                state = _State(config, dict(config.env_map()), head)
                state.base_known = resolved is not None
            if state.config.working_dir:
                wd = posixpath.normpath(posixpath.join("/", state.config.working_dir))
                state.config = state.config.replace(working_dir=wd)
        state.plan.append(PlanStep(f"FROM {base_image or base}", state.head, frm.location))
        ctx = _Context(stage, target, run_platform, glob, stack)
        if not replaced:
            for instruction in (*self.triggers(triggers, frm), *stage.instructions):
                self.instruction(instruction, state, ctx)
        instance = StageInstance(stage.display, stage.index, run_platform, (target,),
                                 tuple(state.plan), state.head, base_image)  # fmt: skip
        return _Built(instance, state)

    def triggers(self, expressions: Sequence[str], frm: Instruction) -> list[Instruction]:
        """ONBUILD triggers of a base image, as instructions located at the FROM line."""
        out: list[Instruction] = []
        if len(expressions) > _MAX_TRIGGERS:
            raise self.error(f"the base image has {len(expressions)} ONBUILD triggers (at most "
                             f"{_MAX_TRIGGERS} are run)", frm)  # fmt: skip
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
                raise self.error(f"ONBUILD trigger of the base image fails: {exc.message}",
                                 frm) from None  # fmt: skip
        return out

    def stage_named(self, name: str, before: int) -> Stage | None:
        """`FROM name`: the latest stage of that name before this one (BuildKit's rule)."""
        key = name.lower()
        for stage in reversed(self.df.stages[:before]):
            if stage.name == key:
                return stage
        return None

    def stage_for_from(self, value: str) -> Stage | None:
        """COPY --from / --mount from=: a stage by name (the last of that name) or index,
        else None (an image)."""
        return self.df.stage(value)

    def context_key(self, name: str) -> str:
        """The `--build-context` a name means (as given, or its familiar image name), or ""."""
        if not name:
            return ""
        if name in self.req.contexts:
            return name
        familiar = familiar_name(name)
        return familiar if familiar in self.req.contexts else ""

    def image_name(self, base: str, instruction: Instruction) -> str:
        if base.startswith("oci-layout://"):
            return base
        try:
            return str(Reference.parse(base))
        except InvalidReferenceError as exc:
            raise self.error(str(exc), instruction) from None

    # instructions ------------------------------------------------------------------------

    def instruction(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        kind = ins.kind
        if kind == "ARG":
            self.arg(ins, st, ctx)
            return
        if self.linting:
            self.undefined_vars(ins, st)
        if kind == "RUN" and not ins.json:
            self.check_platform_args(ins, st, ctx)
        handler: Callable[[Instruction, _State, _Context], None] = getattr(
            self, "do_" + kind.lower(), self.unknown
        )
        handler(ins, st, ctx)

    def unknown(self, ins: Instruction, _st: _State, _ctx: _Context) -> None:
        raise self.error(f"cannot convert {ins.kind}", ins)

    def meta(self, st: _State, ins: Instruction, created_by: str, shown: str = "") -> None:
        st.steps.append(HistoryStep(created_by))
        st.plan.append(PlanStep(shown or created_by, None, ins.location))

    def arg(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        shown: list[str] = []
        for name, default in ins.arg_declarations():
            if checks.looks_secret(name):
                self.lint(checks.SECRETS_USED_IN_ARG_OR_ENV, ins,
                          f"Do not use ARG or ENV instructions for sensitive data (ARG "
                          f"{gofmt.quote(name)})")  # fmt: skip
            value: str | None
            if name in self.req.build_args:
                self.consumed.add(name)
                value = self.req.build_args[name]
            elif default is not None:
                if self.linting:
                    self.report_unmatched(self.unmatched((default,), (), st.env), ins, st)
                value = self.expand(default, st.env, ins)
            elif name in ctx.glob:
                value = ctx.glob[name]
            else:
                value = None
            st.declared[name] = value
            if value is not None:
                st.env[name] = value
            names = [k for k, _ in st.build_args]
            if name in names:
                st.build_args[names.index(name)] = (name, value)
            else:
                st.build_args.append((name, value))
            shown.append(name if value is None else f"{name}={value}")
        self.meta(st, ins, "ARG " + " ".join(shown))

    def do_env(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        # Every word is expanded with the variables as they were before the instruction, as
        # BuildKit expands them: `ENV a=1 b=$a` gives b the earlier value of a.
        pairs = [(self.expand(n, st.env, ins), self.expand(v, st.env, ins))
                 for n, v in ins.pairs()]  # fmt: skip
        shown: list[str] = []
        for key, text in pairs:
            if ins.legacy:
                self.lint(checks.LEGACY_KEY_VALUE_FORMAT, ins, _legacy_detail(ins))
            if checks.looks_secret(key):
                self.lint(checks.SECRETS_USED_IN_ARG_OR_ENV, ins,
                          "Do not use ARG or ENV instructions for sensitive data (ENV "
                          f"{gofmt.quote(key)})")  # fmt: skip
            st.env.pop(key, None)
            st.env[key] = text
            st.config = st.config.with_env(key, text)
            shown.append(f"{key}={text}")
        self.meta(st, ins, "ENV " + " ".join(shown))

    def do_label(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        labels = dict(st.config.labels)
        shown: list[str] = []
        for name, value in ins.pairs():
            key, text = self.expand(name, st.env, ins), self.expand(value, st.env, ins)
            if ins.legacy:
                self.lint(checks.LEGACY_KEY_VALUE_FORMAT, ins, _legacy_detail(ins))
            labels[key] = text
            shown.append(f"{key}={text}")
        st.config = st.config.replace(labels=labels)
        self.meta(st, ins, "LABEL " + " ".join(shown))

    def do_maintainer(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        st.config = st.config.replace(author=ins.args[0])
        self.meta(st, ins, f"MAINTAINER {ins.args[0]}")

    def do_user(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        user = self.expand(ins.args[0], st.env, ins)
        st.config = st.config.replace(user=user)
        self.meta(st, ins, f"USER {user}")

    def do_shell(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        st.config = st.config.replace(shell=tuple(ins.args))
        self.meta(st, ins, "SHELL " + gofmt.plain_list(ins.args), ins.original.strip())

    def do_stopsignal(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        signal = self.expand(ins.args[0], st.env, ins)
        if not _valid_signal(signal):
            raise self.error(f"Invalid signal: {signal}", ins)
        st.config = st.config.replace(stop_signal=signal)
        self.meta(st, ins, f"STOPSIGNAL {signal}")

    def do_volume(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        volumes = [self.expand(w, st.env, ins) for w in ins.args]
        if any(not v for v in volumes):
            raise self.error("VOLUME specified can not be an empty string", ins)
        st.config = st.config.replace(volumes=tuple(sorted({*st.config.volumes, *volumes})))
        self.meta(st, ins, "VOLUME " + gofmt.plain_list(volumes), "VOLUME " + " ".join(volumes))

    def do_expose(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        ports: list[str] = []
        words: list[str] = []
        for word in sorted(ins.args):
            try:
                expanded = self.lexer.process_words(word, st.env)
            except ExpansionError as exc:
                raise self.error(str(exc), ins) from None
            words.extend(expanded)
            for port in expanded:
                ports.extend(self.port_specs(port, ins))
        st.config = st.config.replace(exposed_ports=tuple(sorted({*st.config.exposed_ports,
                                                                   *ports})))  # fmt: skip
        self.meta(st, ins, "EXPOSE " + gofmt.plain_list(ports), "EXPOSE " + " ".join(words))

    def port_specs(self, raw: str, ins: Instruction) -> list[str]:
        """`[ip:][host:]port[-end][/proto]` -> `port/proto` entries, as BuildKit's parsePort
        reads them (and checks them: a protocol's case, an address or host port)."""
        parts = raw.split(":")
        if len(parts) == 1:
            ip, host, container = "", "", parts[0]
        elif len(parts) == 2:
            ip, host, container = "", parts[0], parts[1]
        else:
            ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
        number, _, proto = container.partition("/")
        if not number:
            raise self.error(f"invalid port: {gofmt.quote(raw)}: no port specified", ins)
        if proto.lower() not in ("", "tcp", "udp", "sctp"):
            raise self.error(f"invalid port: {gofmt.quote(raw)}: invalid proto: {proto}", ins)
        proto = proto or "tcp"
        if proto != proto.lower():
            self.lint(checks.EXPOSE_PROTO_CASING, ins, f"Defined protocol '{raw}' in EXPOSE "
                      "instruction should be lowercase")  # fmt: skip
        if ip or host:
            self.lint(checks.EXPOSE_INVALID_FORMAT, ins, "EXPOSE instruction should not define "
                      f"an IP address or host-port mapping, found '{raw}'")  # fmt: skip
        if ip.startswith("["):
            if not ip.endswith("]"):
                raise self.error(f"invalid IP address {ip}", ins)
            ip = ip[1:-1]
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise self.error(f"invalid IP address: {ip}", ins) from None
        ports = _port_range(number)
        if ports is None:
            raise self.error(f"invalid containerPort: {number}", ins)
        if host:
            hosts = _port_range(host)
            if hosts is None:
                raise self.error(f"invalid hostPort: {host}", ins)
            if ports[1] - ports[0] != hosts[1] - hosts[0] and ports[0] != ports[1]:
                raise self.error("invalid ranges specified for container and host Ports: "
                                 f"{number} and {host}", ins)  # fmt: skip
        return [f"{p}/{proto.lower()}" for p in range(ports[0], ports[1] + 1)]

    def command(self, ins: Instruction, st: _State) -> tuple[str, ...]:
        args = tuple(ins.args)
        if ins.json:
            return args
        return (*st.shell, " ".join(args)) if args else ()

    def shell_form_check(self, ins: Instruction, st: _State) -> None:
        """CMD, ENTRYPOINT, HEALTHCHECK: said once per stage (the last one wins), and CMD and
        ENTRYPOINT in shell form without a SHELL (signals would reach the shell)."""
        earlier = st.set_at.get(ins.kind)
        if earlier is not None:
            self.lint(checks.MULTIPLE_INSTRUCTIONS_DISALLOWED, earlier,
                      f"Multiple {ins.name} instructions should not be used in the same stage "
                      "because only the last one will be used", ins.comments)  # fmt: skip
        st.set_at[ins.kind] = ins.location
        if ins.kind != "HEALTHCHECK" and not ins.json and not st.config.shell and st.base_known:
            self.lint(checks.JSON_ARGS_RECOMMENDED, ins,
                      f"JSON arguments recommended for {ins.name} to prevent unintended "
                      "behavior related to OS signals")  # fmt: skip

    def do_cmd(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        self.shell_form_check(ins, st)
        argv = self.command(ins, st)
        st.config = st.config.replace(cmd=argv, args_escaped=True)
        st.cmd_set = True
        self.meta(st, ins, f"CMD {gofmt.quoted_list(argv)}", ins.original.strip())

    def do_entrypoint(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        self.shell_form_check(ins, st)
        argv = self.command(ins, st)
        st.config = st.config.replace(entrypoint=argv)
        if not st.cmd_set:
            st.config = st.config.replace(cmd=None)  # resets a CMD not set in this stage
        self.meta(st, ins, f"ENTRYPOINT {gofmt.quoted_list(argv)}", ins.original.strip())

    def do_healthcheck(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        self.shell_form_check(ins, st)
        args = list(ins.args)
        if args[0].upper() == "NONE":
            check = Healthcheck(("NONE",))
        else:
            test = ("CMD", *args[1:]) if ins.json else ("CMD-SHELL", " ".join(args[1:]))
            durations: list[int] = []
            for flag in ("interval", "timeout", "start-period", "start-interval"):
                text = ins.flag(flag) or ""
                try:
                    value = gofmt.parse_duration(text) if text else 0
                except ValueError:
                    raise self.error(f"invalid duration {text!r} for --{flag}", ins) from None
                if value and value < _MIN_DURATION:
                    raise self.error(f'Interval "{flag}" cannot be less than 1ms', ins)
                if value < 0:
                    raise self.error(f'Interval "{flag}" cannot be negative', ins)
                durations.append(value)
            retries = int(ins.flag("retries") or 0)
            interval, timeout, start_period, start_interval = durations
            check = Healthcheck(test, interval, timeout, start_period, start_interval, retries)
        st.config = st.config.replace(healthcheck=check)
        self.meta(st, ins, "HEALTHCHECK " + _healthcheck_text(check), ins.original.strip())

    def do_onbuild(self, ins: Instruction, st: _State, _ctx: _Context) -> None:
        # BuildKit records the trigger in the config and writes no history for it.
        st.config = st.config.replace(onbuild=(*st.config.onbuild, ins.args[0]))
        st.plan.append(PlanStep(ins.original.strip(), None, ins.location))

    def do_workdir(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        path = self.expand(ins.args[0], st.env, ins)
        if not st.workdir_set and not path.startswith("/"):
            self.lint(checks.WORKDIR_RELATIVE_PATH, ins,
                      f"Relative workdir {gofmt.quote(path)} can have unexpected results if the "
                      "base image changes")  # fmt: skip
        st.workdir_set = True
        workdir = posixpath.normpath(posixpath.join(st.workdir, path))
        if workdir.startswith("//"):
            workdir = workdir[1:]
        st.config = st.config.replace(working_dir=workdir)
        if workdir == "/":
            self.meta(st, ins, f"WORKDIR {workdir}")
            return
        # made with the stage's current USER as owner, as BuildKit's dispatchWorkdir does
        op = FileOp((Mkdir(workdir, 0o755, st.user),))
        st.head = self.add(op, (st.head,), f"WORKDIR {workdir}", ctx.platform, ins)
        st.steps.append(HistoryStep(f"WORKDIR {workdir}", st.head))
        st.plan.append(PlanStep(f"WORKDIR {workdir}", st.head, ins.location))

    # RUN ---------------------------------------------------------------------------------

    def do_run(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        for flag in ins.flags:
            if flag not in ("mount", "network", "security"):
                raise self.error(f"RUN --{flag} is not supported by polyarch", ins)
        network = ins.flag("network") or self.req.network
        security = ins.flag("security") or "sandbox"
        if network not in ("default", "none", "host"):
            raise self.error(f'invalid network mode "{network}" (use default, none or host)', ins)
        if security not in ("sandbox", "insecure"):
            raise self.error(f'security "{security}" is not valid (use sandbox or insecure)', ins)
        if security == "insecure" and "security.insecure" not in self.req.allow:
            raise self.error(
                "RUN --security=insecure needs the security.insecure entitlement: start the "
                "build with --allow security.insecure", ins,
            )  # fmt: skip
        inputs: list[str] = [st.head]
        mounts: list[Mount] = []
        checks: list[OnceCheck] = []
        argv, description, inline = self.run_command(ins, st)
        if inline is not None:
            doc = self.add(FileOp((Mkfile(inline.name, inline.content, 0o755),)),
                           (self.scratch(ctx.platform),), "preparing inline document",
                           ctx.platform, ins, internal=True)  # fmt: skip
            inputs.append(doc)
            mounts.append(BindMount(INLINE_DIR, len(inputs) - 1, "/", False))
        for text in ins.list_flag("mount"):
            mounts.append(self.run_mount(text, ins, st, ctx, inputs, checks))
        env = tuple(f"{k}={v}" for k, v in st.env.items())
        proxy = tuple(
            f"{name}={self.req.build_args[name]}"
            for name in sorted(self.req.build_args)
            if name in PROXY_ARGS and name not in st.declared
        )  # fmt: skip
        op = ExecOp(tuple(argv), env, st.workdir, ctx.platform, st.user, tuple(mounts),
                    network, security, proxy, self.req.extra_hosts, self.req.ulimits,  # type: ignore[arg-type]
                    self.req.shm_size)  # fmt: skip
        emulated = not runs_natively(self.req.build_platform, ctx.platform)
        st.head = self.add(
            op, tuple(inputs), description, ctx.platform, ins, emulated=emulated, checks=checks
        )
        st.steps.append(HistoryStep(f"RUN {self.run_history(argv, st)} # buildkit", st.head))
        st.plan.append(PlanStep(description, st.head, ins.location))

    def run_command(
        self, ins: Instruction, st: _State
    ) -> tuple[tuple[str, ...], str, Heredoc | None]:
        """(argv, description, inline document to mount) as BuildKit's dispatchRun makes them."""
        if ins.json:
            return tuple(ins.args), "RUN " + str(list(ins.args)), None
        line = " ".join(ins.args)
        description = "RUN " + line
        if not ins.heredocs:
            return (*st.shell, line), description, None
        single = _single_heredoc(line)
        if single is not None and single == ins.heredocs[0].name:
            doc = ins.heredocs[0]
            data = chomp(doc.content) if doc.chomp else doc.content
            description += f" ({_summary(doc.content)})"
            if data.startswith("#!"):
                path = posixpath.join(INLINE_DIR, doc.name)
                inline = Heredoc(doc.name, doc.file_descriptor, data, doc.expand, False)
                return (*st.shell, path), description, inline
            return (*st.shell, data), description, None
        # a command with heredocs: the shell gets it whole, bodies and terminators included
        full = line + "".join("\n" + doc.content + doc.name for doc in ins.heredocs)
        return (*st.shell, full), description, None

    def run_history(self, argv: Sequence[str], st: _State) -> str:
        """BuildKit's runCommandString: `|N K=V ...` for the stage's ARGs, then the argv."""
        shown: list[str] = []
        for name, value in st.build_args:
            current = st.env.get(name)
            shown.append(f"{name}={current if current is not None else (value or '')}")
        prefix = [f"|{len(shown)}", *shown] if shown else []
        return " ".join([*prefix, *argv])

    def run_mount(
        self,
        text: str,
        ins: Instruction,
        st: _State,
        ctx: _Context,
        inputs: list[str],
        checks: list[OnceCheck],
    ) -> Mount:
        raw_from = _raw_field(text, "from")
        if raw_from is not None and "$" in raw_from[:-1]:
            raise self.error("'from' doesn't support variable expansion, define alias stage "
                             "instead", ins)  # fmt: skip
        try:
            spec = parse_mount(text, lambda word: self.expand(word, st.env, ins))
        except MountSyntaxError as exc:
            raise self.error(str(exc), ins) from None
        if spec.type == "secret":
            return self.secret_mount(spec, ins)
        if spec.type == "ssh":
            if spec.source:
                raise self.error("ssh does not support source", ins)
            return SshMount(spec.id or "default", spec.target or "/run/buildkit/ssh_agent.0",
                            spec.required, spec.mode if spec.mode is not None else 0o600,
                            spec.uid or 0, spec.gid or 0)  # fmt: skip
        target = spec.target
        if not target:
            raise self.error("mount target must be set (target=PATH)", ins)
        target = posixpath.normpath(posixpath.join(st.workdir, target))
        if target == "/":
            raise self.error(f'invalid mount target "{target}"', ins)
        if spec.type == "tmpfs":
            return TmpfsMount(target, spec.size)
        source = posixpath.normpath(posixpath.join("/", spec.source))
        index: int | None = None
        if spec.from_:
            key, _shown, check = self.from_input(spec.from_, ctx, ins, (source,), len(inputs))
            checks.extend([check] if check else [])
            inputs.append(key)
            index = len(inputs) - 1
        elif spec.type == "bind":
            inputs.append(self.context_selection((source,), ctx.platform, ins))
            index = len(inputs) - 1
        if spec.type == "cache":
            return CacheMount(
                target, spec.id or target, spec.sharing or "shared",  # type: ignore[arg-type]
                index, source, spec.mode if spec.mode is not None else 0o755, spec.uid or 0,
                spec.gid or 0, spec.readonly,
            )  # fmt: skip
        assert index is not None
        return BindMount(target, index, source, not spec.readonly)

    def secret_mount(self, spec: MountSpec, ins: Instruction) -> SecretMount:
        secret_id = spec.source or spec.id
        if not secret_id:
            if not spec.target:
                raise self.error("one of source, target required", ins)
            secret_id = posixpath.basename(spec.target)
        target = spec.target
        if spec.env is None and not target:
            target = "/run/secrets/" + posixpath.basename(secret_id)
        return SecretMount(secret_id, target, spec.env or "", spec.required,
                           spec.mode if spec.mode is not None else 0o400, spec.uid or 0,
                           spec.gid or 0)  # fmt: skip

    # COPY and ADD ------------------------------------------------------------------------

    def do_copy(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        self.copy(ins, st, ctx)

    def do_add(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        self.copy(ins, st, ctx)

    def copy(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        is_add = ins.kind == "ADD"
        paths, inline, dest_word = ins.sources_and_dest()
        sources = [self.expand(p, st.env, ins) for p in paths]
        written_dest = self.expand(dest_word, st.env, ins)
        chown = self.expand(ins.flag("chown") or "", st.env, ins)
        chmod = self.expand(ins.flag("chmod") or "", st.env, ins)
        checksum = self.expand(ins.flag("checksum") or "", st.env, ins)
        if chmod and not _valid_chmod(chmod):
            raise self.error(f"invalid chmod parameter: '{chmod}'. it should be octal string "
                             "and between 0 and 07777", ins)  # fmt: skip
        gits: list[tuple[str, GitRef]] = []
        for source in sources:
            try:
                git = parse_git_ref(source)
            except GitRefError as exc:
                raise self.error(str(exc), ins) from None
            if git is not None:
                gits.append((source, git))
        if gits and not is_add:
            raise self.error("source can't be a git ref for COPY", ins)
        git_sources = {text for text, _ in gits}
        urls = [s for s in sources if _is_url(s) and s not in git_sources]
        local = [s for s in sources if not _is_url(s) and s not in git_sources]
        if urls and not is_add:
            raise self.error("source can't be a URL for COPY", ins)
        if checksum:
            if len(sources) != 1 or not (urls or gits):
                raise self.error("checksum requires HTTP(S) or Git sources", ins)
            if urls and (not checksum.startswith("sha256:") or len(checksum) != 71):
                raise self.error(f"invalid checksum {checksum!r}: want sha256:<64 hex>", ins)
        keep_flag = ins.flags.get("keep-git-dir")
        keep_git_dir = None if keep_flag is None else ins.bool_flag("keep-git-dir")
        dest = posixpath.join(st.workdir, written_dest) if written_dest else st.workdir
        if (written_dest.endswith("/") or written_dest in (".", "")) and not dest.endswith("/"):
            dest += "/"
        if dest.startswith("//"):
            dest = dest[1:]
        unpack_flag = ins.flags.get("unpack")
        # COPY --link: the copy is made on nothing and stacked on the stage, so it does not
        # depend on (or look at) the layers below; with --chmod, or a --chown by name (which
        # needs the stage's /etc/passwd), it is a plain copy, as BuildKit falls back too.
        link = ins.bool_flag("link") and not chmod and _numeric_owner(chown)
        base = self.scratch(ctx.platform) if link else st.head
        inputs: list[str] = [base]
        checks: list[OnceCheck] = []
        actions: list[Copy] = []
        shown_from = ""
        origin = ins.flag("from")
        if origin is not None and self.lexer.process_word(origin, {}) != origin:
            raise self.error("variable expansion is not supported for --from, define a new "
                             "stage with FROM using ARG from global scope as a workaround",
                             ins)  # fmt: skip
        if origin is None:
            for source in local:
                self.ignored_source_check(ins, source)
        if local:
            if origin is not None:
                key, shown, check = self.from_input(origin, ctx, ins, tuple(local), len(inputs))
                checks.extend([check] if check else [])
                shown_from = f"--from={shown} "
                from_context = isinstance(self.vertices[key].op, ContextSource | GitSource)
            else:
                key = self.context_selection(tuple(local), ctx.platform, ins)
                from_context = True
            inputs.append(key)
            actions.append(Copy(
                len(inputs) - 1, tuple(local), dest, chown, chmod, keep_owner=not from_context,
                parents=ins.bool_flag("parents"), excludes=tuple(ins.list_flag("exclude")),
                unpack=is_add if unpack_flag is None else unpack_flag is True, link=link,
            ))  # fmt: skip
        elif origin is not None:
            shown_from = f"--from={origin} "
        for text, git in gits:
            if (
                keep_git_dir is not None
                and git.keep_git_dir is not None
                and (keep_git_dir != git.keep_git_dir)
            ):
                raise self.error("inconsistent keep-git-dir configuration", ins)
            if checksum and git.checksum and checksum != git.checksum:
                raise self.error(f"checksum mismatch {checksum!r} != {git.checksum!r}", ins)
            if checksum and not re.fullmatch(r"[0-9a-f]{7,64}", checksum):
                raise self.error(f"invalid checksum {checksum!r}: a git source's checksum is "
                                 "its commit (hex)", ins)  # fmt: skip
            keep = keep_git_dir if keep_git_dir is not None else git.keep_git_dir
            key = self.git_source(git, f"ADD {text}", ctx.platform, ins, keep=bool(keep),
                                  checksum=checksum or git.checksum)  # fmt: skip
            inputs.append(key)
            actions.append(Copy(len(inputs) - 1, ("/",), dest, chown, chmod, link=link))
        for url in urls:
            name = _url_filename(url)
            if name is None:
                raise self.error(f"ADD {url}: the URL's path ends in '..' or names a file that "
                                 "cannot be written (a NUL byte); name the file in the URL",
                                 ins)  # fmt: skip
            key = self.add(HttpSource(url, name, checksum), (), f"ADD {url}", ctx.platform, ins,
                           internal=True)  # fmt: skip
            inputs.append(key)
            actions.append(Copy(len(inputs) - 1, (name,), dest, chown, chmod, keep_owner=True,
                                unpack=unpack_flag is True, link=link))  # fmt: skip
        if inline:
            docs: list[Mkfile] = []
            for doc in inline:
                data = self.expand_raw(doc.content, st.env, ins) if doc.expand else doc.content
                docs.append(Mkfile(doc.name, data, 0o644))
            scratch = (self.scratch(ctx.platform),)
            key = self.add(FileOp(tuple(docs)), scratch, "preparing inline document",
                           ctx.platform, ins, internal=True)  # fmt: skip
            inputs.append(key)
            for doc in inline:
                actions.append(Copy(len(inputs) - 1, (doc.name,), dest, chown, chmod, link=link))
        history = [ins.kind]
        if ins.bool_flag("parents"):
            history.append("--parents")
        if chown:
            history.append(f"--chown={chown}")
        if chmod:
            history.append(f"--chmod={chmod}")
        history += [*sources, *(f"<<{d.name}" for d in inline), written_dest]
        shown_items = " ".join([*sources, *(f"<<{h.name}" for h in inline), written_dest])
        description = f"{ins.kind} {shown_from}{shown_items}"
        copied = self.add(FileOp(tuple(actions)), tuple(inputs), description, ctx.platform, ins,
                          checks=checks)  # fmt: skip
        if link:
            copied = self.add(MergeOp(), (st.head, copied), "LINK " + description, ctx.platform,
                              ins, internal=True)  # fmt: skip
        st.head = copied
        st.steps.append(HistoryStep(" ".join(history) + " # buildkit", st.head))
        st.plan.append(PlanStep(description, st.head, ins.location))

    def context_selection(
        self, paths: tuple[str, ...], platform: Platform, ins: Instruction, *, name: str = ""
    ) -> str:
        """What a copy or mount takes from a build context (the main one, or a named one: the
        ignore rules are the main one's only, as in BuildKit)."""
        source = ContextSource(name or "context", paths, () if name else self.req.ignore)
        shown = f"context {name + ' ' if name else ''}{' '.join(paths)}"
        return self.add(source, (), shown, platform, ins, internal=True)

    def git_source(
        self, git: GitRef, shown: str, platform: Platform, ins: Instruction, *,
        keep: bool = False, checksum: str = "",
    ) -> str:  # fmt: skip
        source = GitSource(git.remote, git.ref, git.subdir, keep, checksum, git.submodules)
        return self.add(source, (), shown, platform, ins, internal=True)

    def named_files(
        self, key: str, named: NamedContext, paths: tuple[str, ...], platform: Platform,
        ins: Instruction,
    ) -> str:  # fmt: skip
        """The files of a named context that is a directory or a git repository."""
        if named.kind == "git":
            git = parse_git_ref(named.value)
            if git is None:
                raise self.error(f"build context {key}: {named.value} is not a git URL", ins)
            return self.git_source(git, f"context {key}", platform, ins,
                                   keep=bool(git.keep_git_dir), checksum=git.checksum)  # fmt: skip
        return self.context_selection(paths, platform, ins, name=key)

    def from_input(
        self, value: str, ctx: _Context, ins: Instruction, paths: tuple[str, ...], consumer: int
    ) -> tuple[str, str, OnceCheck | None]:
        """`--from=` / `from=`: a stage (by name or index) or an image: (vertex, shown name,
        the build-once check of what the consumer takes, if the stage is build-once)."""
        named_key = self.context_key(value)
        named = self.req.contexts.get(named_key) if named_key else None
        if named is not None and named.kind in ("local", "git"):
            return self.named_files(named_key, named, paths, ctx.platform, ins), value, None
        written = value  # shown as written: a named context's name, not what it stands for
        if named is not None:
            value = named.value if named.kind == "image" else "oci-layout://" + named.value
        dep = None if named is not None else self.stage_for_from(value)
        if dep is not None:
            if dep.index == ctx.stage.index:
                raise self.error(f"stage {dep.display!r} cannot take files from itself", ins)
            built = self.stage(dep.index, ctx.target, ctx.stack)
            check = None
            if self.once.get(dep.index) == "auto":
                check = OnceCheck(dep.display, built.instance.result, consumer, paths)
            return built.instance.result, dep.display, check
        name = self.image_name(value, ins)
        resolved = self.req.images.get((name, str(ctx.platform)))
        source = ImageSource(name, ctx.platform, resolved.digest if resolved else "")
        return self.add(source, (), f"image {name}", ctx.platform, ins), written, None

    def scratch(self, platform: Platform) -> str:
        return self.add(Scratch(), (), "scratch", platform, None, internal=True)

    def add(
        self,
        op: Op,
        inputs: tuple[str, ...],
        description: str,
        platform: Platform,
        ins: Instruction | None,
        *,
        emulated: bool = False,
        internal: bool = False,
        checks: Sequence[OnceCheck] = (),
    ) -> str:
        vertex = Vertex(op, inputs, description, platform, ins.location if ins else None,
                        emulated, internal)  # fmt: skip
        if vertex.key not in self.vertices:
            self.vertices[vertex.key] = vertex
        for check in checks:
            listed = self.checks.setdefault(vertex.key, [])
            if check not in listed:
                listed.append(check)
        return vertex.key

    # expansion ---------------------------------------------------------------------------

    def expand(self, word: str, scope: Mapping[str, str], ins: Instruction) -> str:
        try:
            return self.lexer.process_word(word, scope)
        except ExpansionError as exc:
            raise self.error(str(exc), ins) from None

    def expand_raw(self, text: str, scope: Mapping[str, str], ins: Instruction) -> str:
        """A heredoc body: variables and escapes, quotes kept (BuildKit's ExpandRaw)."""
        try:
            return self.raw_lexer.process_word(text, scope)
        except ExpansionError as exc:
            raise self.error(str(exc), ins) from None

    def error(self, message: str, ins: Instruction) -> DockerfileError:
        return DockerfileError(message, path=ins.location.path, line=ins.location.start_line)

    # build checks ------------------------------------------------------------------------

    def lint(
        self,
        rule: checks.Rule,
        at: Instruction | Location | None,
        detail: str,
        comments: Sequence[str] | None = None,
    ) -> None:
        """A build check, while the first target platform is converted (BuildKit checks that
        conversion only); an instruction brings its own `# check=` comments."""
        if not self.linting:
            return
        location: Location | None = at if not isinstance(at, Instruction) else at.location
        if isinstance(at, Instruction) and comments is None:
            comments = at.comments
        self.linter.run(rule, location, detail, comments or ())

    def from_checks(self) -> None:
        """Every stage's FROM line, as BuildKit checks them before converting any: the ARGs
        it uses are declared, its default values give a valid name, and its --platform is
        neither the default nor a constant."""
        self.linting = True
        self.default_arg_checks()
        platform = self.req.platforms[0]
        scope = self.global_scope(platform)
        declared = [name for ins in self.df.meta_args for name, _ in ins.arg_declarations()]
        known = sorted({*declared, *scope, "BUILDOSVERSION", "TARGETOSVERSION"})
        for stage in self.df.stages:
            frm = stage.from_instruction
            try:
                _, _, unmatched = self.lexer.process_word_matches(stage.base, scope)
            except ExpansionError:
                continue  # the conversion says what is wrong with it
            self.undeclared_from_args(unmatched, known, frm)
            if stage.platform is None:
                continue
            try:
                text, matched, unmatched = self.lexer.process_word_matches(stage.platform, scope)
            except ExpansionError:
                continue
            self.undeclared_from_args(unmatched, known, frm)
            if matched == {"TARGETPLATFORM"} and not unmatched:
                if text == scope.get("TARGETPLATFORM"):
                    self.lint(checks.REDUNDANT_TARGET_PLATFORM, frm,
                              f"Setting platform to predefined {stage.platform} in FROM is "
                              "redundant as this is the default behavior")  # fmt: skip
            elif not matched and not unmatched:
                try:
                    constant = Platform.parse(text)
                except InvalidPlatformError:
                    continue
                name = stage.name or ""
                if constant.os not in name and constant.architecture not in name:
                    self.lint(checks.FROM_PLATFORM_FLAG_CONST_DISALLOWED, frm,
                              "FROM --platform flag should not use constant value "
                              f"{gofmt.quote(text)}")  # fmt: skip
        self.linting = False

    def undeclared_from_args(
        self, unmatched: set[str], known: Sequence[str], frm: Instruction
    ) -> None:
        for name in sorted(unmatched - set(known)):
            hint = checks.suggest(name, known)
            self.lint(checks.UNDEFINED_ARG_IN_FROM, frm,
                      f"FROM argument '{name}' is not declared"
                      + (f" (did you mean {hint}?)" if hint else ""))  # fmt: skip

    def default_arg_checks(self) -> None:
        """InvalidDefaultArgInFrom: with the ARGs' defaults only (no build arguments), every
        FROM must still name an image."""
        platform = self.req.platforms[0]
        scope = platform_args(platform, self.req.build_platform, self.target_name)
        scope.update((k, v) for k, v in self.req.build_args.items() if k in scope)
        try:
            for ins in self.df.meta_args:
                for name, default in ins.arg_declarations():
                    if default is not None:
                        scope[name] = self.lexer.process_word(default, scope)
            names = [(s, self.lexer.process_word(s.base, scope)) for s in self.df.stages]
        except ExpansionError:
            return  # the conversion says what is wrong
        for stage, name in names:
            if name.startswith("oci-layout://"):
                continue
            try:
                Reference.parse(name)
            except InvalidReferenceError:
                self.lint(checks.INVALID_DEFAULT_ARG_IN_FROM, stage.from_instruction,
                          f"Default value for ARG {stage.base} results in empty or invalid base "
                          "image name")  # fmt: skip

    def base_platform_check(
        self, name: str, expected: Platform, config: ImageConfig, frm: Instruction
    ) -> None:
        if (config.os, config.architecture) == (expected.os, expected.architecture):
            return
        actual = Platform.of(config.os, config.architecture, config.variant)
        self.lint(checks.INVALID_BASE_IMAGE_PLATFORM, frm,
                  f"Base image {name} was pulled with platform {gofmt.quote(str(actual))}, "
                  f"expected {gofmt.quote(str(expected))} for current build")  # fmt: skip

    def unmatched(
        self, words: Sequence[str], raw_words: Sequence[str], scope: Mapping[str, str]
    ) -> set[str]:
        """The variables these words use that `scope` does not have (as BuildKit's
        expansion records them); words that do not expand are left to the conversion."""
        out: set[str] = set()
        for lexer, texts in ((self.lexer, words), (self.raw_lexer, raw_words)):
            for text in texts:
                with contextlib.suppress(ExpansionError):
                    out |= lexer.process_word_matches(text, scope)[2]
        return out

    def undefined_vars(self, ins: Instruction, st: _State) -> None:
        """UndefinedVar over the words BuildKit expands before an instruction runs."""
        kind = ins.kind
        words: list[str] = []
        raw: list[str] = []
        if kind in ("ENV", "LABEL"):
            words = [w for pair in ins.pairs() for w in pair]
        elif kind in ("COPY", "ADD"):
            paths, inline, dest = ins.sources_and_dest()
            flags = ("chown", "chmod", "checksum") if kind == "ADD" else ("chown", "chmod")
            words = [*(ins.flag(f) or "" for f in flags), *paths, dest]
            raw = [doc.content for doc in inline if doc.expand]
        elif kind in ("WORKDIR", "USER", "STOPSIGNAL", "VOLUME"):
            words = list(ins.args)
        elif kind == "RUN":
            found: set[str] = set()

            def record(word: str) -> str:
                found.update(self.unmatched((word,), (), st.env))
                return self.lexer.process_word(word, st.env)

            for text in ins.list_flag("mount"):
                with contextlib.suppress(MountSyntaxError, ExpansionError):
                    parse_mount(text, record)
            self.report_unmatched(found, ins, st)
            return
        else:
            return
        self.report_unmatched(self.unmatched(words, raw, st.env), ins, st)

    def report_unmatched(self, unmatched: set[str], ins: Instruction, st: _State) -> None:
        if not st.base_known:
            return  # the base image's variables are not known
        declared = {name for name, _ in st.build_args}
        for name in sorted(unmatched - declared - _NON_ENV_ARGS):
            hint = checks.suggest(name, list(st.env))
            self.lint(checks.UNDEFINED_VAR, ins, checks.undefined_var_message(name, hint))

    def ignored_source_check(self, ins: Instruction, source: str) -> None:
        """CopyIgnoredFile: a context source that .dockerignore excludes (not checked when the
        ignore file has `!` exceptions, as BuildKit does not)."""
        if self.ignore is None or self.ignore.has_exclusions:
            return
        path = posixpath.normpath(source) if source else "."
        if path in (".", "/"):
            hit = any(not p.exclusion and p.text in ("*", "**", "**/*")
                      for p in self.ignore.patterns)  # fmt: skip
        else:
            # BuildKit's matcher never matches an absolute source against the patterns.
            hit = not path.startswith("/") and self.ignore.matches(path)
        if hit:
            verb = "Add" if ins.kind == "ADD" else "Copy"
            self.lint(checks.COPY_IGNORED_FILE, ins,
                      f"Attempting to {verb} file {gofmt.quote(path)} that is excluded by "
                      ".dockerignore")  # fmt: skip

    def check_platform_args(self, ins: Instruction, st: _State, ctx: _Context) -> None:
        """A RUN command's shell text using TARGETARCH and the like without declaring them
        (the shell gets nothing; BuildKit's UndefinedVar does not look at RUN, and covers the
        other instructions and RUN's mounts)."""
        for name in sorted(self.lexer.names_used(" ".join(ins.args)) & set(PLATFORM_ARGS)):
            if name not in st.declared and name not in st.env:
                self.warn(
                    f"{name} is used in stage {ctx.stage.display!r} without `ARG {name}` in "
                    "that stage, so it expands to an empty string; declare it after FROM",
                    ins.location,
                )


# helpers --------------------------------------------------------------------------------------

_SIGNALS: Final = frozenset(
    [
        "ABRT",
        "ALRM",
        "BUS",
        "CHLD",
        "CLD",
        "CONT",
        "FPE",
        "HUP",
        "ILL",
        "INT",
        "IO",
        "IOT",
        "KILL",
        "PIPE",
        "POLL",
        "PROF",
        "PWR",
        "QUIT",
        "SEGV",
        "STKFLT",
        "STOP",
        "SYS",
        "TERM",
        "TRAP",
        "TSTP",
        "TTIN",
        "TTOU",
        "URG",
        "USR1",
        "USR2",
        "VTALRM",
        "WINCH",
        "XCPU",
        "XFSZ",
    ]
)


def _port_number(text: str) -> int | None:
    """strconv.ParseInt(text, 10) within 0-65535, else None."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if 0 <= value <= 65535 else None


def _port_range(text: str) -> tuple[int, int] | None:
    """`8000` or `8000-9000` (BuildKit's parsePortRange), else None."""
    start_text, dash, end_text = text.partition("-")
    start = _port_number(start_text)
    if start is None:
        return None
    if not dash or start_text == end_text:
        return start, start
    end = _port_number(end_text)
    if end is None or end < start:
        return None
    return start, end


def _legacy_detail(ins: Instruction) -> str:
    return (f'"{ins.name} key=value" should be used instead of legacy "{ins.name} key value" '
            "format")  # fmt: skip


def _valid_signal(text: str) -> bool:
    if text.isdigit():
        return 0 < int(text) < 65
    name = text.upper().removeprefix("SIG")
    if name in _SIGNALS:
        return True
    for base in ("RTMIN", "RTMAX"):
        if name == base:
            return True
        if name.startswith(base) and name[len(base) :][:1] in "+-":
            return name[len(base) + 1 :].isdigit()
    return False


def _numeric_owner(chown: str) -> bool:
    return all(part.isdigit() for part in chown.split(":") if part)


def familiar_name(name: str) -> str:
    """An image name as people write it: `docker.io/library/alpine:latest` is `alpine`."""
    try:
        ref = Reference.parse(name)
    except InvalidReferenceError:
        return name
    text = ref.repository if ref.registry == "docker.io" else f"{ref.registry}/{ref.repository}"
    text = text.removeprefix("library/")
    if ref.tag and ref.tag != "latest":
        text += f":{ref.tag}"
    if ref.digest:
        text += f"@{ref.digest}"
    return text


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


def _valid_chmod(text: str) -> bool:
    try:
        return 0 <= int(text, 8) <= 0o7777
    except ValueError:
        return False


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _url_filename(url: str) -> str | None:
    """The name of ADD's downloaded file, as BuildKit makes it: the last segment of the URL's
    path, %-decoded (`__unnamed__` when there is none); None for `..` or a NUL, which name no
    file (BuildKit would write to `..`)."""
    path = url.split("://", 1)[1].partition("/")[2].split("?", 1)[0].split("#", 1)[0]
    decoded = urllib.parse.unquote(path)
    base = posixpath.basename(decoded.rstrip("/")) if decoded.rstrip("/") else ""
    if base == ".." or "\0" in base:
        return None
    return base if base not in ("", ".", "/") else "__unnamed__"


def _raw_field(text: str, key: str) -> str | None:
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip().lower() == key:
            return value
    return None


def _single_heredoc(line: str) -> str | None:
    """The heredoc's name when the whole command line is one heredoc word (`<<EOF`,
    `<<-EOF`, `<< EOF`, quoted names), as BuildKit's MustParseHeredoc reads it."""
    from polyarch.frontend.dockerfile.syntax import heredoc_word  # noqa: PLC0415

    spec = heredoc_word(line.strip())
    return spec.name if spec is not None else None


def _summary(doc: str) -> str:
    lines = [line for line in doc.split("\n") if line.strip()]
    if not lines:
        return ""
    first = lines[0].strip()
    return first + ("..." if len(lines) > 1 else "")


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


def _healthcheck_text(check: Healthcheck) -> str:
    """Go's %+v of the HealthcheckConfig, as BuildKit writes it in history."""
    return (
        f"{{Test:{gofmt.plain_list(check.test)} "
        f"Interval:{gofmt.format_duration(check.interval)} "
        f"Timeout:{gofmt.format_duration(check.timeout)} "
        f"StartPeriod:{gofmt.format_duration(check.start_period)} "
        f"StartInterval:{gofmt.format_duration(check.start_interval)} "
        f"Retries:{check.retries}}}"
    )
