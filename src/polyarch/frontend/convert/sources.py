"""What a step takes files from, as the stage walk resolves it (`--from=`, `from=`)."""

from __future__ import annotations

from typing import Protocol

from polyarch.frontend.convert.state import StageContext
from polyarch.frontend.dockerfile.instructions import Instruction
from polyarch.graph.model import OnceCheck


class Sources(Protocol):
    def from_input(
        self,
        value: str,
        ctx: StageContext,
        ins: Instruction,
        paths: tuple[str, ...],
        consumer: int,
    ) -> tuple[str, str, OnceCheck | None]:
        """`--from=` / `from=`: a stage (by name or index), a named context or an image:
        (vertex, shown name, the build-once check of what the consumer takes, if the stage is
        build-once)."""
        ...
