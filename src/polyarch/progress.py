"""Build progress as events. Library code emits them; the CLI decides how to show them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from polyarch.graph.model import PlanWarning

# start: a step (or a pull, an export) began; waiting / running: a step waits for a slot (or
# a base) and then gets it, its own time counting from there; log: a line of its output;
# cached / done / error: how it ended; note: something to know, for the step or the build.
# progress: bytes done of a total (a pull).
EventKind = Literal[
    "start", "waiting", "running", "progress", "log", "cached", "done", "error", "note"
]


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    step: str  # the op key, or "" for build-wide notes
    description: str
    stage: str = ""
    platform: str = ""
    text: str = ""  # a log line, an error message, or a note
    seconds: float | None = None
    at: float = field(default_factory=time.time)
    cache: str = ""  # a step's outcome: "local" or "imported" (a cache hit), "run"
    emulated: bool = False  # a step run under emulation
    position: str = ""  # the step's place in its stage, "3/7"
    node: str = ""  # the builder node it ran on (empty: this machine)
    shared: str = ""  # a build-once step's target platforms ("amd64, arm64")
    current: int | None = None  # bytes done (progress events)
    total: int | None = None  # of these bytes
    warning: PlanWarning | None = None  # a note that is a warning about the Dockerfile
    cause: str = ""  # why a step runs instead of coming from the cache (start, done)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.kind,
            "step": self.step,
            "description": self.description,
            "stage": self.stage,
            "platform": self.platform,
            "time": self.at,
        }
        if self.text:
            out["text"] = self.text
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        if self.cache:
            out["cache"] = self.cache
        if self.emulated:
            out["emulated"] = True
        if self.position:
            out["position"] = self.position
        if self.node:
            out["node"] = self.node
        if self.shared:
            out["shared"] = self.shared
        if self.current is not None:
            out["current"], out["total"] = self.current, self.total
        if self.warning is not None:
            out["warning"] = self.warning.to_json()
        if self.cause:
            out["cause"] = self.cause
        return out


Progress = Callable[[Event], None]


def silent(_event: Event) -> None:
    """A progress sink that shows nothing."""
