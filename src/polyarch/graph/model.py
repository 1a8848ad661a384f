"""The build graph: vertices (an op and its inputs), stage instances, and per target platform
the image to assemble. What the converter produces and the solver walks. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyarch.graph.ops import (
    ContextSource,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    MergeOp,
    Op,
    Scratch,
    vertex_key,
)
from polyarch.oci.config import ImageConfig
from polyarch.platform import Platform

BUILDKIT_COMMENT = "buildkit.dockerfile.v0"


@dataclass(frozen=True, slots=True)
class Location:
    """Where in the build definition something comes from: `file:line`."""

    path: str
    start_line: int
    end_line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.start_line}"


@dataclass(frozen=True, slots=True)
class Vertex:
    """One op on the results of its inputs. The key covers the op and the inputs' keys; the
    rest says how to show it and is not part of the key."""

    op: Op
    inputs: tuple[str, ...]
    description: str
    platform: Platform
    location: Location | None = None
    emulated: bool = False  # an exec op this machine can only run through qemu-user
    internal: bool = False  # made by the converter (context selections, inline documents)
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", vertex_key(self.op, self.inputs))

    @property
    def kind(self) -> str:
        if isinstance(self.op, ExecOp):
            return "exec"
        if isinstance(self.op, FileOp):
            return "file"
        if isinstance(self.op, MergeOp):
            return "merge"
        return "source"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "op": self.op.to_json(),
            "inputs": list(self.inputs),
            "description": self.description,
            "platform": str(self.platform),
            "location": str(self.location) if self.location else None,
            "emulated": self.emulated,
        }


def is_source(op: Op) -> bool:
    return isinstance(op, Scratch | ImageSource | ContextSource | HttpSource | GitSource)


@dataclass(frozen=True, slots=True)
class HistoryStep:
    """One history entry this build adds: `layer_of` names the vertex whose layer it
    describes (empty when that step changed nothing), None for a metadata step."""

    created_by: str
    layer_of: str | None = None
    comment: str = BUILDKIT_COMMENT


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """The image a target platform gets: the filesystem of vertex `result`, and the config
    the converter resolved (the base image's history in it, this build's steps after it)."""

    platform: Platform
    result: str
    config: ImageConfig
    steps: tuple[HistoryStep, ...]


@dataclass(frozen=True, slots=True)
class PlanStep:
    """A stage's instruction as the plan shows it: its vertex, if it has one."""

    description: str
    vertex: str | None
    location: Location | None = None


@dataclass(frozen=True, slots=True)
class StageInstance:
    """A stage as built for some target platforms (one instance when they all share it)."""

    stage: str
    stage_index: int
    platform: Platform  # the platform its steps run on
    targets: tuple[Platform, ...]  # target platforms whose builds use this instance
    steps: tuple[PlanStep, ...]
    result: str  # the vertex whose filesystem is the stage's
    base_image: str | None  # the expanded image reference, None for a stage or scratch
    # "per-platform", "pinned" (FROM --platform) or "build-once" (polyarch runs a stage that
    # uses no TARGET* value once, natively, and checks what is copied out of it)
    mode: str = "per-platform"

    @property
    def vertices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.vertex for s in self.steps if s.vertex is not None))


@dataclass(frozen=True, slots=True)
class PlanWarning:
    """A warning about the Dockerfile: polyarch's own, or one of BuildKit's build checks
    (`rule` names it; `description` and `url` are the rule's)."""

    message: str
    location: Location | None = None
    rule: str = ""
    description: str = ""
    url: str = ""

    def __str__(self) -> str:
        text = f"{self.rule}: {self.message}" if self.rule else self.message
        return f"{self.location}: {text}" if self.location else text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.location.path if self.location else None,
            "line": self.location.start_line if self.location else None,
            "message": self.message,
        }
        if self.rule:
            out.update(rule=self.rule, description=self.description, url=self.url)
        return out


@dataclass(frozen=True, slots=True)
class OnceCheck:
    """A vertex that takes files from a build-once stage: what it takes must not be native
    code (else the stage is built per platform)."""

    stage: str
    source: str  # the build-once stage's result vertex
    input: int  # which input of the checking vertex that is
    paths: tuple[str, ...]  # the paths taken from it


@dataclass(frozen=True, slots=True)
class BuildGraph:
    platforms: tuple[Platform, ...]
    build_platform: Platform
    target: str  # the target stage's display name
    vertices: Mapping[str, Vertex]
    stages: tuple[StageInstance, ...]  # in Dockerfile order, reachable ones only
    images: Mapping[Platform, ImageSpec]
    warnings: tuple[PlanWarning, ...] = ()
    once_checks: Mapping[str, tuple[OnceCheck, ...]] = field(default_factory=dict)

    @property
    def results(self) -> dict[Platform, str]:
        return {p: spec.result for p, spec in self.images.items()}

    def stage_of(self, key: str) -> str:
        for inst in self.stages:
            if any(step.vertex == key for step in inst.steps):
                return inst.stage
        return ""

    def steps(self) -> list[Vertex]:
        """The vertices that are Dockerfile steps (not sources or internal ones)."""
        return [v for v in self.vertices.values() if v.kind != "source" and not v.internal]

    def downstream(self, keys: Iterable[str]) -> set[str]:
        """These vertices and every vertex that takes an input from one of them."""
        takers: dict[str, list[str]] = {}
        for key, vertex in self.vertices.items():
            for used in vertex.inputs:
                takers.setdefault(used, []).append(key)
        return _closure(keys, lambda key: takers.get(key, ()))

    def upstream(self, keys: Iterable[str]) -> set[str]:
        """These vertices and every vertex they take inputs from."""
        return _closure(keys, lambda key: self.vertices[key].inputs)

    def to_json(self) -> dict[str, Any]:
        return {
            "platforms": [str(p) for p in self.platforms],
            "build_platform": str(self.build_platform),
            "target": self.target,
            "stages": [
                {
                    "stage": s.stage,
                    "index": s.stage_index,
                    "platform": str(s.platform),
                    "targets": [str(t) for t in s.targets],
                    "once": len(s.targets) > 1,
                    "mode": s.mode,
                    "emulated": any(self.vertices[k].emulated for k in s.vertices),
                    "base": s.base_image,
                    "steps": [
                        {"description": step.description, "vertex": step.vertex} for step in s.steps
                    ],
                }
                for s in self.stages
            ],
            "vertices": {k: v.to_json() for k, v in self.vertices.items()},
            "results": {str(p): k for p, k in self.results.items()},
            "warnings": [w.to_json() for w in self.warnings],
        }


def _closure(keys: Iterable[str], edges: Callable[[str], Sequence[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(keys)
    while todo:
        key = todo.pop()
        if key not in seen:
            seen.add(key)
            todo.extend(edges(key))
    return seen
