"""The live terminal view of a build: `progress_view.BuildView` drawn with rich, redrawn on a
clock (timers tick while a step is silent), fitted to the terminal's width and height. When
the build ends the view stays on screen as the final record (FINISHED, FAILED or CANCELED),
followed by any error in full."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from polyarch.progress import Event
from polyarch.progress_view import BuildView, Outcome


class LiveRenderer:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.view = BuildView(time.monotonic())
        self.lock = threading.Lock()
        self.closed = False
        self.live = Live(console=self.console, refresh_per_second=8, transient=False,
                         vertical_overflow="visible", get_renderable=self._renderable)  # fmt: skip
        self.live.start()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.view.apply(event, time.monotonic())

    def _renderable(self) -> Text:
        with self.lock:
            width, height = self.console.size
            # While live the view fits the screen; the final record holds every row.
            lines = self.view.render(time.monotonic(), width, None if self.closed else height - 1)
        text = Text(no_wrap=True, overflow="ellipsis")
        for n, line in enumerate(lines):
            if n:
                text.append("\n")
            for part, style in line:
                text.append(part, style=style or None)
        return text

    def close(self, outcome: Outcome = "FINISHED") -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.view.finish(time.monotonic(), outcome)
        self.live.refresh()
        self.live.stop()
