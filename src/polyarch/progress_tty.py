"""The live terminal view of a build: every step with its state, time and last output line.

Like buildx's: steps numbered in order, grouped by stage and platform, running steps with a
timer and the last line they printed, cached and finished steps with their time. When the
build ends the view stays on screen as the final record, followed by any error in full.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from polyarch.progress import Event


@dataclass
class _Step:
    number: int
    where: str
    description: str
    state: str = "running"
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    last: str = ""


class LiveRenderer:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.steps: dict[str, _Step] = {}
        self.notes: list[str] = []
        self.lock = threading.Lock()
        self.closed = False
        self.live = Live(self.render(), console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def __call__(self, event: Event) -> None:
        with self.lock:
            key = event.step or f"note:{event.description}"
            step = self.steps.get(key)
            if step is None:
                where = f"{event.stage} {event.platform}".strip()
                step = _Step(len(self.steps) + 1, where, event.description)
                self.steps[key] = step
            if event.kind == "cached":
                step.state, step.seconds = "cached", 0.0
                step.last = event.text  # where an imported hit came from
            elif event.kind == "done":
                step.state = "done"
                step.seconds = event.seconds if event.seconds is not None else step.seconds
            elif event.kind == "error":
                step.state = "error"
                step.last = event.text.splitlines()[0] if event.text else ""
            elif event.kind == "log":
                step.last = event.text
            self.live.update(self.render())

    def render(self) -> Group:
        table = Table.grid(padding=(0, 1))
        table.add_column(justify="right", style="dim")
        table.add_column(style="cyan", no_wrap=True)
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column(justify="right", no_wrap=True)
        now = time.monotonic()
        for step in self.steps.values():
            if step.state == "running":
                status = Text(f"{now - step.started:5.1f}s", style="yellow")
            elif step.state == "cached":
                status = Text("CACHED", style="blue")
            elif step.state == "error":
                status = Text("ERROR", style="bold red")
            else:
                status = Text(f"{step.seconds or 0:5.1f}s", style="green")
            where = Text(f"[{step.where}]") if step.where else Text("")
            table.add_row(f"#{step.number}", where, Text(step.description), status)
            if step.state in ("running", "error") and step.last:
                table.add_row("", Text(""), Text(f"> {step.last}", style="dim"), "")
        return Group(table)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.live.update(self.render())
            self.live.stop()
