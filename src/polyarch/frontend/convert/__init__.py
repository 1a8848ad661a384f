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

The parts: `request.py` (what a conversion is asked), `stages.py` (the walk over stages, base
images and named contexts), `metadata.py`, `run.py` and `copying.py` (the instructions' steps),
`lints.py` (build checks and warnings), `vertices.py` (the graph so far), `state.py` (what a
stage carries), `words.py` (expansion).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from polyarch.errors import DockerfileError
from polyarch.frontend.convert.request import (
    DEFAULT_SHELL,
    ENTITLEMENTS,
    INLINE_DIR,
    PLATFORM_ARGS,
    PREDEFINED_ARGS,
    PROXY_ARGS,
    BaseImage,
    BuildOnce,
    ContextKind,
    ConvertRequest,
    NamedContext,
    build_once_text,
    familiar_name,
    parse_build_once,
    platform_args,
)
from polyarch.frontend.convert.stages import Converter
from polyarch.frontend.dockerfile import checks
from polyarch.frontend.dockerfile.checks import Linter
from polyarch.frontend.dockerfile.instructions import Dockerfile, Stage
from polyarch.frontend.dockerfile.instructions import build as build_instructions
from polyarch.frontend.dockerfile.shell import ShellLexer
from polyarch.frontend.dockerfile.syntax import ParseResult
from polyarch.graph.model import BuildGraph, PlanWarning

__all__ = [
    "DEFAULT_SHELL",
    "ENTITLEMENTS",
    "INLINE_DIR",
    "PLATFORM_ARGS",
    "PREDEFINED_ARGS",
    "PROXY_ARGS",
    "BaseImage",
    "BuildOnce",
    "CheckResult",
    "ContextKind",
    "ConvertRequest",
    "NamedContext",
    "build_once_stages",
    "build_once_text",
    "check_dockerfile",
    "convert",
    "familiar_name",
    "parse_build_once",
    "platform_args",
]


def convert(request: ConvertRequest) -> BuildGraph:
    return _converter(request).run()


def _converter(request: ConvertRequest) -> Converter:
    def once(df: Dockerfile, target: Stage, excluded: frozenset[str]) -> dict[int, str]:
        return build_once_stages(df, target, request.build_once, excluded)

    return Converter(request, once)


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
    converter = _converter(dataclasses.replace(wanted, check_all=wanted.target is None))
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
