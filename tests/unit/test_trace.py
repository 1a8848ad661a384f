"""The build trace (Trace Event Format) made from progress events."""

from __future__ import annotations

import json
import time
from pathlib import Path

from polyarch import cpu
from polyarch.progress import Event
from polyarch.trace import TraceRecorder

T0 = 1_700_000_000.0


def test_a_track_per_platform_and_stage_and_a_slice_per_step(tmp_path: Path) -> None:
    seen: list[Event] = []
    trace = TraceRecorder(seen.append)
    for event in [
        Event("start", "", "resolve base for linux/arm64", platform="linux/arm64", at=T0),
        Event("done", "", "resolve base for linux/arm64", platform="linux/arm64", at=T0 + 1,
              seconds=1.0, text="pulled"),
        Event("start", "k1", "RUN make", "build", "linux/amd64", at=T0 + 1),
        Event("start", "k2", "RUN make", "build", "linux/arm64", at=T0 + 1, emulated=True),
        Event("done", "k1", "RUN make", "build", "linux/amd64", at=T0 + 3, cache="run"),
        Event("done", "k2", "RUN make", "build", "linux/arm64", at=T0 + 9, cache="run",
              emulated=True),
        Event("cached", "k3", "COPY . /app", "final", "linux/amd64", at=T0 + 9, cache="imported",
              text="imported from r/app:cache"),
        Event("start", "k4", "RUN test", "final", "linux/arm64", at=T0 + 9),
        Event("error", "k4", "RUN test", "final", "linux/arm64", at=T0 + 10, text="exit 1\nmore"),
        Event("note", "", "cache", text="a note", at=T0 + 10),
    ]:  # fmt: skip
        trace(event)
    assert len(seen) == 10  # every event passed on
    trace.write(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    events = data["traceEvents"]
    processes = {e["args"]["name"]: e["pid"] for e in events if e["name"] == "process_name"}
    assert {"linux/amd64", "linux/arm64", "build"} <= set(processes)
    slices = {(e["pid"], e["name"]): e for e in events if e["ph"] == "X"}
    arm = slices[(processes["linux/arm64"], "RUN make")]
    amd = slices[(processes["linux/amd64"], "RUN make")]
    assert arm["dur"] == 8_000_000 and arm["args"]["emulated"] is True
    assert amd["dur"] == 2_000_000 and "emulated" not in amd["args"]
    assert arm["tid"] != slices[(processes["linux/arm64"], "RUN test")]["tid"]  # stages apart
    cached = slices[(processes["linux/amd64"], "COPY . /app")]
    assert cached["dur"] == 0 and cached["args"]["cache"] == "imported"
    assert slices[(processes["linux/arm64"], "RUN test")]["args"]["error"] == "exit 1"
    assert slices[(processes["linux/arm64"], "resolve base for linux/arm64")]["args"] == {
        "cache": "run", "stage": "", "detail": "pulled"}  # fmt: skip
    assert any(e["ph"] == "i" and e["name"] == "a note" for e in events)
    assert all(isinstance(e["ts"], int) for e in events if e["ph"] in ("X", "i"))


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_time_by_kind_nests_exclusively_and_reaches_the_trace(tmp_path: Path) -> None:
    trace = TraceRecorder()
    before = cpu.snapshot()
    with cpu.measure("commit"):
        _busy(0.05)
        with cpu.measure("compress"):
            _busy(0.1)
        _busy(0.05)
    cpu.charge("run native", (1.5, 0.25))
    spent = cpu.since(before)
    commit, compress = (sum(spent["measured"][k]) for k in ("commit", "compress"))
    # the nested block is its own kind and paused in the outer one: nothing counted twice
    assert 0.09 <= compress < 0.2 and 0.09 <= commit < 0.2, spent
    assert spent["charged"]["run native"] == [1.5, 0.25]
    assert sum(spent["total"]["self"]) >= commit + compress - 0.02
    trace.write(tmp_path / "t.json")
    recorded = json.loads((tmp_path / "t.json").read_text())["otherData"]["cpu_seconds"]
    assert recorded["charged"]["run native"] == [1.5, 0.25]
    assert sum(recorded["measured"]["compress"]) >= 0.09
