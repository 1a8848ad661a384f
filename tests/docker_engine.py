"""Debian's dockerd on a private socket, data root and exec root under a directory of its own,
for the tests that load into an engine and for bench/cold.py (BuildKit side by side)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLIENT = "/usr/bin/docker"  # Debian's, not a newer client elsewhere on PATH


class EngineUnavailable(Exception):
    """dockerd is not installed, not run as root, or did not start (with its log's tail)."""


@dataclass
class RunningEngine:
    process: subprocess.Popen[bytes]
    host: str  # DOCKER_HOST
    root: Path
    client: str  # the docker CLI that answered

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def client() -> str | None:
    return CLIENT if os.path.exists(CLIENT) else shutil.which("docker")


def start_engine(root: Path) -> RunningEngine:
    """dockerd with no bridge and no iptables rules (RUN steps take the host's network);
    returns once the client gets an answer from it."""
    dockerd, docker = shutil.which("dockerd"), client()
    if dockerd is None or docker is None or os.geteuid() != 0:
        raise EngineUnavailable("Debian's docker.io (dockerd) is needed, as root")
    host = f"unix://{root}/docker.sock"
    with (root / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(
            [dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "pid"), "-H", host, "--iptables=false",
             "--ip6tables=false", "--bridge=none"],
            stdout=log, stderr=log,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while subprocess.run([docker, "-H", host, "version"], capture_output=True,
                         check=False).returncode:  # fmt: skip
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            tail = (root / "dockerd.log").read_text()[-2000:]
            raise EngineUnavailable(f"dockerd did not start: {tail}")
        time.sleep(0.3)
    return RunningEngine(process, host, root, docker)
