"""How a failed build is told: stage, platform, the Dockerfile lines around the step, every
other platform's failure; and the JSON `fatal` event."""

from __future__ import annotations

import json
from pathlib import Path

from polyarch.cli.failure import PROGRESS_SCHEMA_VERSION, fatal_event, text_lines
from polyarch.errors import BuildError, UsageError


def test_a_failure_on_two_platforms_names_both_and_shows_the_line(tmp_path: Path) -> None:
    df = tmp_path / "Dockerfile"
    df.write_text("FROM a AS build\nWORKDIR /x\nRUN false\nCOPY a b\nRUN true\nCMD x\n")
    arm = BuildError("RUN false exited with status 1:\n  | boom", location=f"{df}:3",
                     stage="build", platform="linux/arm64")  # fmt: skip
    amd = BuildError("RUN false exited with status 1:\n  | boom", location=f"{df}:3",
                     stage="build", platform="linux/amd64")  # fmt: skip
    lines = "\n".join(text_lines(arm.with_others((amd,)))).splitlines()
    assert lines[0] == f"error: {df}:3: RUN false exited with status 1:"
    assert " in stage 'build' for linux/arm64" in lines
    marked = [line for line in lines if ">>>" in line]
    assert marked == [" 3 | >>> RUN false"]
    assert " 1 |     FROM a AS build" in lines and " 5 |     RUN true" in lines
    assert " 6 |     CMD x" not in lines  # two lines of context each side
    assert lines[-1] == (f"also failed (linux/amd64 stage 'build'): {df}:3: RUN false exited "
                         "with status 1:")  # fmt: skip


def test_a_missing_dockerfile_shows_no_excerpt(tmp_path: Path) -> None:
    err = BuildError("boom", location=f"{tmp_path}/gone:3")
    assert text_lines(err) == [f"error: {tmp_path}/gone:3: boom"]


def test_the_fatal_event_is_json_with_where_it_failed() -> None:
    err = BuildError("RUN false exited", location="Dockerfile:7", stage="s", platform="linux/arm64")
    event = fatal_event(err, 1)
    assert json.loads(json.dumps(event)) == event
    assert event["event"] == "fatal" and event["version"] == PROGRESS_SCHEMA_VERSION
    assert (event["status"], event["file"], event["line"]) == (1, "Dockerfile", 7)
    assert (event["platform"], event["stage"]) == ("linux/arm64", "s")
    plain = fatal_event(UsageError("bad flag"), 2)
    assert plain["status"] == 2 and "file" not in plain and plain["error"] == "bad flag"


def test_an_excerpt_never_reads_through_a_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("line one\nsupersecret\n")
    (tmp_path / "Dockerfile").symlink_to(secret)
    err = BuildError("boom", location=f"{tmp_path / 'Dockerfile'}:2")
    assert "supersecret" not in "\n".join(text_lines(err))
