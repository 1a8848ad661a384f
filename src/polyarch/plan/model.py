"""The build plan: content-addressed operations, grouped by stage and target platform. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from polyarch.dockerfile.instructions import Location
from polyarch.platform import Platform

OpKind = Literal["source", "exec", "file", "meta"]


def op_key(definition: Mapping[str, Any]) -> str:
    """A key for a definition: sha256 of its canonical JSON (inputs are in it as keys)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Op:
    """One operation. Identical definitions (inputs included) have identical keys."""

    key: str
    kind: OpKind
    platform: Platform  # where it runs (exec) or what it produces
    description: str  # the instruction, expanded where BuildKit expands it
    inputs: tuple[str, ...]
    definition: Mapping[str, Any] = field(hash=False)
    location: Location | None = None
    emulated: bool = False  # an exec op this machine can only run through qemu-user

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "platform": str(self.platform),
            "description": self.description,
            "inputs": list(self.inputs),
            "emulated": self.emulated,
            "location": str(self.location) if self.location else None,
        }


@dataclass(frozen=True, slots=True)
class StageInstance:
    """A stage as built for some target platforms (one instance when they all share it)."""

    stage: str
    stage_index: int
    platform: Platform  # the platform its steps run on
    targets: tuple[Platform, ...]  # target platforms whose builds use this instance
    ops: tuple[str, ...]
    base_image: str | None  # the expanded image reference, None for a stage reference
    # "per-platform", "pinned" (FROM --platform) or "build-once" (polyarch runs a stage that
    # uses no TARGET* value once, natively, and checks what is copied out of it)
    mode: str = "per-platform"

    @property
    def result(self) -> str:
        return self.ops[-1]


@dataclass(frozen=True, slots=True)
class PlanWarning:
    message: str
    location: Location | None = None

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.location.path if self.location else None,
            "line": self.location.start_line if self.location else None,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    platforms: tuple[Platform, ...]
    build_platform: Platform
    target: str  # the target stage's display name
    ops: Mapping[str, Op]
    stages: tuple[StageInstance, ...]  # in Dockerfile order, reachable ones only
    results: Mapping[Platform, str]  # per target platform, the final op key
    warnings: tuple[PlanWarning, ...]

    def instances(self, stage_index: int) -> tuple[StageInstance, ...]:
        return tuple(s for s in self.stages if s.stage_index == stage_index)

    def shared(self, instance: StageInstance) -> bool:
        return len(instance.targets) > 1

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
                    "emulated": any(self.ops[k].emulated for k in s.ops),
                    "base": s.base_image,
                    "ops": list(s.ops),
                }
                for s in self.stages
            ],
            "ops": {k: op.to_json() for k, op in self.ops.items()},
            "results": {str(p): k for p, k in self.results.items()},
            "warnings": [w.to_json() for w in self.warnings],
        }
