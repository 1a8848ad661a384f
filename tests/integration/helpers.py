"""What several integration test modules share: running polyarch, the emulated platforms."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EMULATED_PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"]

needs_emulation = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("qemu-aarch64-static"),
    reason="needs root, runc and qemu-user-static",
)


def polyarch(
    *args: str, check: bool = True, cwd: str | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"polyarch {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def remove_tree(path: Path) -> None:
    """A fixture's directory, gone: whatever is still mounted below it unmounted first."""
    with open("/proc/self/mountinfo") as mountinfo:
        mounted = [line.split()[4] for line in mountinfo]
    inside = sorted((m for m in mounted if m == str(path) or m.startswith(f"{path}/")),
                    key=len, reverse=True)  # fmt: skip
    for mount in inside:
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)
