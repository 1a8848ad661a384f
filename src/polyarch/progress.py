"""Build progress as events. Library code emits them; the CLI decides how to show them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["start", "log", "cached", "done", "error", "note"]


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
        return out


Progress = Callable[[Event], None]


def silent(_event: Event) -> None:
    """A progress sink that shows nothing."""
