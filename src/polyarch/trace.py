"""A build as a Chrome trace (the Trace Event Format: opens in Perfetto or chrome://tracing).

`TraceRecorder` is a progress sink that keeps every event and passes it on; `write` turns them
into one process per platform (build-wide work in a process of its own), one thread per
stage, and a slice per step, pull, cache import or export: its cache state (run, local,
imported) and whether it ran emulated are the slice's arguments. Cached steps are slices of
no length; notes are instant events. The CPU time spent since the recorder was made, by
kind (`polyarch.cpu`), is the trace's `otherData.cpu_seconds`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from polyarch import cpu
from polyarch.progress import Event, Progress, silent


class TraceRecorder:
    def __init__(self, forward: Progress = silent) -> None:
        self.forward = forward
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._cpu = cpu.snapshot()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
        self.forward(event)

    def close(self) -> None:
        close = getattr(self.forward, "close", None)
        if callable(close):
            close()

    def trace(self) -> dict[str, Any]:
        with self._lock:
            events = list(self.events)
        other = {"cpu_seconds": cpu.since(self._cpu)}
        if not events:
            return {"traceEvents": [], "displayTimeUnit": "ms", "otherData": other}
        origin = min(e.at for e in events)
        pids: dict[str, int] = {"build": 1}
        tids: dict[tuple[int, str], int] = {}
        out: list[dict[str, Any]] = []

        def where(event: Event) -> tuple[int, int]:
            process = event.platform if event.step and event.platform else (
                event.platform or "build")  # fmt: skip
            pid = pids.setdefault(process, len(pids) + 1)
            thread = event.stage or ("steps" if event.step else "pulls and caches")
            tid = tids.setdefault((pid, thread), len([k for k in tids if k[0] == pid]) + 1)
            return pid, tid

        def micro(at: float) -> int:
            return int((at - origin) * 1_000_000)

        started: dict[str, Event] = {}
        running: dict[str, float] = {}  # when a step that waited for a slot got it
        for event in events:
            name = event.step or event.description
            pid, tid = where(event)
            if event.kind == "start":
                started[name] = event
            elif event.kind == "running" and name in started:
                running[name] = event.at
            elif event.kind in ("done", "error") and name in started:
                begin = started.pop(name)
                at = running.pop(name, begin.at)
                args: dict[str, Any] = {"cache": event.cache or "run", "stage": event.stage}
                if at - begin.at >= 0.001:
                    args["waited_s"] = round(at - begin.at, 3)  # for a slot: not its own time
                if event.emulated or begin.emulated:
                    args["emulated"] = True
                if begin.cause:
                    args["cause"] = begin.cause
                if event.kind == "error":
                    args["error"] = event.text.splitlines()[0] if event.text else ""
                elif event.text:
                    args["detail"] = event.text
                out.append({"name": event.description, "cat": "step" if event.step else "io",
                            "ph": "X", "ts": micro(at),
                            "dur": max(1, micro(event.at) - micro(at)), "pid": pid,
                            "tid": tid, "args": args})  # fmt: skip
            elif event.kind == "cached":
                hit: dict[str, Any] = {"cache": event.cache or "local", "stage": event.stage}
                if event.text:
                    hit["detail"] = event.text
                out.append({"name": event.description, "cat": "step", "ph": "X",
                            "ts": micro(event.at), "dur": 0, "pid": pid, "tid": tid,
                            "args": hit})  # fmt: skip
            elif event.kind == "note":
                out.append({"name": event.text[:200], "cat": "note", "ph": "i", "s": "p",
                            "ts": micro(event.at), "pid": pid, "tid": tid})  # fmt: skip
        meta: list[dict[str, Any]] = []
        for process, pid in pids.items():
            meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                         "args": {"name": process}})  # fmt: skip
        for (pid, thread), tid in tids.items():
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                         "args": {"name": thread}})  # fmt: skip
        return {"traceEvents": meta + out, "displayTimeUnit": "ms", "otherData": other}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.trace(), indent=None) + "\n", encoding="utf-8")
