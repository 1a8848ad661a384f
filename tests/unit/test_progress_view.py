"""The live view's model with a fake clock: what is cut at 80/120/200 columns, timers that
tick, waiting vs running, the header, failures, cancellation, finished rows giving way."""

from __future__ import annotations

import pytest

from polyarch.progress import Event
from polyarch.progress_view import BuildView, plain

LONG_RUN = ("RUN apt-get update && apt-get install -y --no-install-recommends build-essential "
            "ca-certificates curl git python3 && rm -rf /var/lib/apt/lists/*")  # fmt: skip


def step(kind: str, key: str, platform: str, **extra: object) -> Event:
    return Event(kind, key, extra.pop("description", LONG_RUN), stage="build",  # type: ignore[arg-type]
                 platform=platform, position="3/7", **extra)  # type: ignore[arg-type]  # fmt: skip


def two_platforms(view: BuildView) -> None:
    view.apply(step("start", "a", "linux/amd64"), 1.0)
    view.apply(step("start", "b", "linux/arm64", emulated=True), 1.0)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_rows_keep_number_label_and_timer_at_every_width(width: int) -> None:
    view = BuildView(0.0)
    two_platforms(view)
    lines = [plain(line) for line in view.render(13.4, width)]
    assert lines[0] == "[+] Building 13.4s (0/2)"
    amd, arm = lines[1], lines[2]
    for line in (amd, arm):
        assert len(line) == width
        assert line.startswith(("#1 [", "#2 ["))
        assert line.endswith("12.4s")  # the timer ticks with the clock, in full
        assert "3/7]" in line
    short = width < 100
    assert ("[amd64 build 3/7]" if short else "[linux/amd64 build 3/7]") in amd
    assert ("[arm64 qemu build 3/7]" if short else "[linux/arm64 qemu build 3/7]") in arm
    assert "…" in amd or width == 200  # the description is what gets cut


def test_timers_tick_and_a_waiting_step_counts_from_when_it_runs() -> None:
    view = BuildView(0.0)
    view.apply(step("start", "a", "linux/amd64"), 0.0)
    view.apply(step("waiting", "a", "linux/amd64"), 0.0)
    assert plain(view.render(5.0, 120)[1]).endswith("waiting")
    view.apply(step("running", "a", "linux/amd64"), 7.0)
    assert plain(view.render(8.0, 120)[1]).endswith("1.0s")
    assert plain(view.render(17.5, 120)[1]).endswith("10.5s")
    view.apply(step("log", "a", "linux/amd64", text="Setting up curl"), 17.6)
    lines = [plain(line) for line in view.render(18.0, 120)]
    assert lines[2].strip() == "> Setting up curl"
    view.apply(step("done", "a", "linux/amd64", seconds=11.2), 18.2)
    lines = [plain(line) for line in view.render(30.0, 120)]
    assert lines[1].endswith("11.2s") and len(lines) == 2  # no output under a finished step
    assert lines[0] == "[+] Building 30.0s (1/1)"


def test_failures_and_cancellation() -> None:
    view = BuildView(0.0)
    two_platforms(view)
    view.apply(step("error", "b", "linux/arm64",
                    text="RUN false exited with status 1:\n  | one\n  | two"), 4.0)  # fmt: skip
    view.finish(4.5, "FAILED")
    lines = [plain(line) for line in view.render(9.0, 120)]
    assert lines[0] == "[+] Building 4.5s (1/2) FAILED"
    assert lines[1].endswith("CANCELED")  # amd64 was stopped by arm64's failure
    assert lines[2].endswith("ERROR") and lines[2].startswith("#2 [linux/arm64 qemu build 3/7]")
    assert [line.strip() for line in lines[3:]] == [
        "! RUN false exited with status 1:",
        ">   | one",
        ">   | two",
    ]


def test_pulls_are_rows_and_finished_rows_give_way() -> None:
    view = BuildView(0.0)
    view.apply(Event("start", "", "resolve debian for linux/arm64", platform="linux/arm64"), 0)
    view.apply(Event("done", "", "resolve debian for linux/arm64", platform="linux/arm64",
                     text="pulled (through mirror.lan)", seconds=2.0), 2.0)  # fmt: skip
    assert "(pulled (through mirror.lan))" in plain(view.render(3.0, 120)[1])
    for n in range(20):
        view.apply(step("cached", f"c{n}", "linux/amd64", description=f"COPY {n}"), 3.0)
    view.apply(step("start", "run", "linux/amd64", description="RUN make"), 3.0)
    view.apply(Event("note", "", "cache", text="cache export skipped"), 3.0)
    lines = [plain(line) for line in view.render(4.0, 120, height=10)]
    assert len(lines) <= 10
    assert any("finished steps above" in line for line in lines)
    assert "RUN make" in lines[-2] and lines[-1] == "note: cache export skipped"


def test_a_pull_shows_its_bytes_and_retries_show() -> None:
    view = BuildView(0.0)
    pull = "resolve base/node:bookworm for linux/arm64"
    view.apply(Event("start", "", pull, platform="linux/arm64"), 0.0)
    view.apply(Event("progress", "", pull, platform="linux/arm64", current=12_300_000,
                     total=45_600_000), 1.0)  # fmt: skip
    view.apply(Event("note", "", "registry", text="retrying (1/4) in 1.6 s: connection refused"),
               1.5)  # fmt: skip
    lines = [plain(line) for line in view.render(2.0, 80)]
    assert lines[1].endswith("12.3/45.6 MB 2.0s") and len(lines[1]) == 80
    assert lines[1].startswith("#1 [arm64] resolve base/node")
    assert lines[-1] == "note: registry: retrying (1/4) in 1.6 s: connection refused"


def test_a_build_once_step_shows_the_platforms_it_serves() -> None:
    view = BuildView(0.0)
    view.apply(Event("start", "k", "RUN npm run build", stage="js", platform="linux/amd64",
                     position="4/5", shared="amd64, arm64"), 0.0)  # fmt: skip
    wide, narrow = plain(view.render(1.0, 120)[1]), plain(view.render(1.0, 40)[1])
    assert "[linux/amd64 js 4/5 → amd64, arm64] RUN npm run build" in wide
    assert narrow.startswith("#1 [amd64 4/5] ") and narrow.endswith("1.0s")
