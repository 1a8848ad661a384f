"""What several integration test modules share: running polyarch, the emulated platforms."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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
