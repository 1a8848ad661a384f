"""Builds that are killed, interrupted or run out of disk: the next build finds nothing
running and nothing half-made; errors are clear."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_build import polyarch, write_context

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="needs root, runc and mmdebstrap",
)


def start_build(root: Path, ctx: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress",
               "json", str(ctx)]  # fmt: skip
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        event = json.loads(line)
        if event["event"] == "start" and event["description"].startswith("RUN sleep"):
            break
    deadline = time.monotonic() + 60
    while not containers(root) and time.monotonic() < deadline:
        time.sleep(0.2)  # the step's container runs (after its layers are unpacked)
    time.sleep(0.5)
    return proc


def containers(root: Path) -> list[str]:
    listed = subprocess.run(["runc", "--root", str(root / "runtime"), "list", "-q"],
                            capture_output=True, text=True)  # fmt: skip
    return listed.stdout.split()


@pytest.mark.usefixtures("named_semaphores")
def test_a_killed_builds_step_is_stopped_by_the_next_build(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN sleep 300\n", {})
    proc = start_build(root, ctx)
    os.kill(proc.pid, signal.SIGKILL)  # polyarch only: its runtime and the step live on
    proc.wait()
    assert containers(root)  # left running by the killed build
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")
    polyarch("build", "--root", str(root), str(ctx))
    assert containers(root) == []
    assert not list((root / "tmp").iterdir())
    assert not list((root / "store" / ".ingest").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_build_stops_its_steps_at_once(
    base: str, tmp_path: Path, sig: signal.Signals
) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN sleep 300\n", {})
    proc = start_build(root, ctx)
    started = time.monotonic()
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=15) == 130
    assert time.monotonic() - started < 5
    assert containers(root) == []  # the step's container was stopped, not left behind


def test_a_full_disk_is_a_clear_error(base: str, tmp_path: Path) -> None:
    root = tmp_path / "small-root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(root)], check=True)
    try:
        ctx = write_context(
            tmp_path / "ctx", f"FROM {base}\nRUN head -c 40000000 /dev/urandom > /big\n", {}
        )
        result = polyarch("build", "--root", str(root), str(ctx), check=False)
        assert result.returncode == 1
        assert "no space left" in result.stderr.lower()
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
