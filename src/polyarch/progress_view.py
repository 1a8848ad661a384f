"""What the live view of a build shows, as a model with no terminal and no clock of its own
(pure): events go in with the time they arrived, lines of text come out for a given time and
width. The terminal renderer (`progress_tty`) draws them on a clock; the tests drive it with a
fake one.

The shape follows buildx's: a header with the elapsed time and steps done of those known,
then one row per step, `#N [platform stage n/m] description  time`, the last lines a running
step printed under it. What is cut to fit is the description, never the number, the label or
the time; at narrow widths the label shortens (`linux/arm64` -> `arm64`, long stage names cut)
so that rows of different platforms stay apart. A step waiting for a slot says `waiting` and
its time counts from when it runs; steps under emulation are marked `qemu`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from polyarch.progress import Event

Style = str  # a rich style name; "" for none
Line = tuple[tuple[str, Style], ...]
Outcome = Literal["FINISHED", "FAILED", "CANCELED"]

TAIL_LINES = 3  # output lines shown under a running step
NOTE_LINES = 3  # build-wide notes shown under the rows
WIDE = 100  # from this width on, platforms show in full (`linux/arm64`)
TIMER_WIDTH = 8


@dataclass
class Row:
    number: int
    description: str
    platform: str
    stage: str
    position: str
    emulated: bool
    step: bool  # a build step (else a pull, a cache import or export)
    started: float
    node: str = ""
    shared: str = ""  # a build-once step: the platforms it serves
    state: str = "running"  # waiting, running, cached, done, error, canceled
    running_since: float | None = None
    seconds: float | None = None
    note: str = ""  # where a cached step came from, the mirror a pull went through
    bytes_done: int | None = None  # a pull's bytes, of bytes_total
    bytes_total: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    @property
    def ended(self) -> bool:
        return self.state in ("cached", "done", "error", "canceled")


def _cut(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _megabytes(value: int) -> str:
    return f"{value / 1e6:.1f}"


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 600 else f"{value / 60:.0f}m"


class BuildView:
    def __init__(self, started: float) -> None:
        self.started = started
        self.rows: dict[str, Row] = {}
        self.notes: deque[str] = deque(maxlen=NOTE_LINES)
        self.outcome: Outcome | None = None
        self.ended_at: float | None = None

    # events ------------------------------------------------------------------------------

    def apply(self, event: Event, now: float) -> None:
        if event.kind == "note" and not event.step:
            self.notes.append(f"{event.description}: {event.text}" if event.description
                              and event.description not in event.text else event.text)  # fmt: skip
            return
        key = event.step or f"io:{event.description}:{event.platform}"
        row = self.rows.get(key)
        if row is None:
            row = Row(len(self.rows) + 1, event.description, event.platform, event.stage,
                      event.position, event.emulated, bool(event.step), now,
                      event.node)  # fmt: skip
            row.running_since = now
            row.shared = event.shared
            self.rows[key] = row
        if event.kind == "start":
            row.state, row.running_since = "running", now
        elif event.kind == "waiting":
            row.state, row.running_since = "waiting", None
        elif event.kind == "running":
            row.state, row.running_since = "running", now
        elif event.kind in ("log", "note"):
            row.tail.append(event.text)
        elif event.kind == "progress" and event.current is not None:
            row.bytes_done, row.bytes_total = event.current, event.total or 0
        elif event.kind == "cached":
            row.state, row.seconds, row.note = "cached", 0.0, event.text
        elif event.kind == "done":
            row.state = "done"
            since = row.running_since if row.running_since is not None else row.started
            row.seconds = event.seconds if event.seconds is not None else now - since
            row.note = event.text
        elif event.kind == "error":
            row.state = "error"
            since = row.running_since if row.running_since is not None else row.started
            row.seconds = now - since
            lines = [line for line in event.text.splitlines() if line.strip()]
            row.note = lines[0] if lines else ""
            row.tail.clear()
            row.tail.extend(lines[1:][-TAIL_LINES:])

    def finish(self, now: float, outcome: Outcome) -> None:
        """The build ended: steps still going are canceled (an interruption, or another
        step's failure stopped them)."""
        self.outcome, self.ended_at = outcome, now
        for row in self.rows.values():
            if not row.ended:
                row.state = "canceled"

    # drawing -----------------------------------------------------------------------------

    def header(self, now: float) -> Line:
        elapsed = (self.ended_at if self.ended_at is not None else now) - self.started
        done = sum(1 for r in self.rows.values() if r.ended and r.state != "canceled")
        text = f"[+] Building {elapsed:.1f}s ({done}/{len(self.rows)})"
        if self.outcome is None:
            return ((text, "bold"),)
        style = {"FINISHED": "bold green", "FAILED": "bold red", "CANCELED": "bold yellow"}
        return ((text + " ", "bold"), (self.outcome, style[self.outcome]))

    def _label(self, row: Row, width: int, compact: bool = False) -> str:
        platform = row.platform
        if width < WIDE and platform.startswith("linux/"):
            platform = platform.removeprefix("linux/")
        if row.node:
            platform = f"{platform}@{row.node}"
        parts = [platform] if platform else []
        if row.emulated and not compact:
            parts.append("qemu")
        if row.stage and not compact:
            parts.append(_cut(row.stage, 12 if width < WIDE else 24))
        if row.position:
            parts.append(row.position)
        if row.shared and not compact:
            parts.append(f"→ {row.shared}")  # built once, for these platforms
        return f"[{' '.join(parts)}] " if parts else ""

    def _status(self, row: Row, now: float) -> tuple[str, Style]:
        if row.state == "waiting":
            return "waiting", "dim"
        if row.state == "running":
            since = row.running_since if row.running_since is not None else row.started
            if row.bytes_done is not None and row.bytes_total:
                return (f"{_megabytes(row.bytes_done)}/{_megabytes(row.bytes_total)} MB "
                        f"{_seconds(now - since)}", "yellow")  # fmt: skip
            return _seconds(now - since), "yellow"
        if row.state == "cached":
            return "CACHED", "blue"
        if row.state == "error":
            return "ERROR", "bold red"
        if row.state == "canceled":
            return "CANCELED", "yellow"
        return _seconds(row.seconds or 0.0), "green"

    def row_lines(self, row: Row, now: float, width: int) -> list[Line]:
        number = f"#{row.number} "
        label = self._label(row, width)
        status, style = self._status(row, now)
        room = width - len(number) - max(TIMER_WIDTH, len(status)) - 1
        if len(label) > room // 2:  # very narrow: the platform and position only
            label = self._label(row, width, compact=True)
        description = row.description
        if row.note and row.state in ("cached", "done"):
            description += f" ({row.note})"
        text = _cut(description, room - len(label))
        pad = max(1, width - len(number) - len(label) - len(text) - len(status))
        line: Line = ((number, "dim"), (label, "cyan"), (text, "red" if row.state == "error"
                      else ""), (" " * pad, ""), (status, style))  # fmt: skip
        out = [line]
        indent = " " * len(number)
        if row.state == "error" and row.note:
            out.append(((indent, ""), (_cut(f"! {row.note}", width - len(indent)), "red")))
        if row.state in ("running", "error") and row.tail:
            for tail in row.tail:
                out.append(((indent, ""), (_cut(f"> {tail}", width - len(indent)), "dim")))
        return out

    def render(self, now: float, width: int, height: int | None = None) -> list[Line]:
        """The view at `now`, `width` columns wide; given a `height`, finished rows give way
        (oldest first, counted in one line) so that running ones stay in sight."""
        width = max(width, 20)
        blocks = [(row, self.row_lines(row, now, width)) for row in self.rows.values()]
        notes: list[Line] = [((_cut(f"note: {n}", width), "dim"),) for n in self.notes]
        lines: list[Line] = [self.header(now)]
        if height is not None:
            budget = height - 2 - len(notes)  # the header, the "finished above" line
            used = sum(len(b) for _r, b in blocks)
            hidden = 0
            kept: list[tuple[Row, list[Line]]] = []
            for row, block in blocks:
                if used > budget and row.ended and row.state != "error":
                    used -= len(block)
                    hidden += 1
                    continue
                kept.append((row, block))
            if hidden:
                lines.append(((f"   … {hidden} finished steps above", "dim"),))
            blocks = kept
        for _row, block in blocks:
            lines.extend(block)
        return lines + notes


def plain(line: Line) -> str:
    return "".join(text for text, _style in line)
