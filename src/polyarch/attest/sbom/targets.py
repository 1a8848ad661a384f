"""What an SBOM covers beside the final image, as BuildKit's Dockerfile frontend decides it
(`dockerfile2llb`): `BUILDKIT_SBOM_SCAN_STAGE` (true, or a comma-separated list of stage
names) scans the stages the target is built from, `BUILDKIT_SBOM_SCAN_CONTEXT` the build
context. Each is read per stage: a build argument or a global ARG's default, overridden by
the stage's own `ARG NAME=VALUE`. The context is scanned when the target stage says so. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from polyarch.frontend.dockerfile import Dockerfile
from polyarch.frontend.dockerfile.instructions import Stage

SCAN_CONTEXT: Final = "BUILDKIT_SBOM_SCAN_CONTEXT"
SCAN_STAGE: Final = "BUILDKIT_SBOM_SCAN_STAGE"
_TRUE: Final = ("1", "t", "true")
_FALSE: Final = ("0", "f", "false")


def _enabled(stage: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    return stage in [v.strip() for v in value.split(",")]


def _value(dockerfile: Dockerfile, stage: Stage, name: str, args: Mapping[str, str]) -> str | None:
    value: str | None = None
    for instruction in dockerfile.meta_args:
        for declared, default in instruction.arg_declarations():
            if declared == name:
                value = args.get(name, default)
    if value is None:
        value = args.get(name)
    for instruction in stage.instructions:
        if instruction.kind != "ARG":
            continue
        for declared, default in instruction.arg_declarations():
            if declared == name:
                given = args.get(name, default)
                if given is not None:
                    value = given
    return value


def scan_targets(
    dockerfile: Dockerfile, args: Mapping[str, str], target: str, reachable: set[str]
) -> tuple[bool, list[str]]:
    """(scan the build context, the stages to scan) for the target stage `target` (a name
    or `stage-N`), among the `reachable` stages it is built from."""
    context = False
    stages: list[str] = []
    for stage in dockerfile.stages:
        name = stage.name or ""
        for arg in (SCAN_CONTEXT, SCAN_STAGE):
            value = _value(dockerfile, stage, arg, args)
            if value is None or not _enabled(name, value):
                continue
            if stage.display == target and arg == SCAN_CONTEXT:
                context = True
            elif stage.display != target and stage.display in reachable and arg == SCAN_STAGE:
                stages.append(stage.display)
    return context, stages
