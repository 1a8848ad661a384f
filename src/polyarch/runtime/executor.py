"""Run one process in a root filesystem with an OCI runtime (runc or crun).

The runtime is found once: the first of runc and crun that is installed. (Debian's crun 1.8
refuses hybrid cgroup hosts; runc works there, which is why runc comes first.) Output is passed
line by line to a callback as it comes, so progress can show it live.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from polyarch.errors import PolyarchError
from polyarch.runtime.spec import ProcessSpec, runtime_spec

RUNTIMES = ("runc", "crun")


class RuntimeMissingError(PolyarchError):
    """No OCI runtime is installed."""


def find_runtime() -> str:
    for name in RUNTIMES:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeMissingError("no OCI runtime found: install runc (apt-get install runc) or crun")


class Executor:
    def __init__(self, state_dir: Path, runtime: str | None = None) -> None:
        self.runtime = runtime or find_runtime()
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)

    def run(
        self,
        process: ProcessSpec,
        rootfs: Path,
        bundle: Path,
        on_output: Callable[[str], None],
    ) -> int:
        """Run to completion; returns the exit status (128+N when killed by signal N)."""
        bundle.mkdir(parents=True, exist_ok=True)
        spec = runtime_spec(process, str(rootfs))
        (bundle / "config.json").write_text(json.dumps(spec))
        container_id = "polyarch-" + uuid.uuid4().hex[:16]
        proc = subprocess.Popen(
            [self.runtime, "--root", str(self.state_dir), "run", "--bundle", str(bundle),
             container_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                on_output(raw.decode("utf-8", "replace").rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code = proc.wait()
        reader.join()
        if code < 0:
            return 128 - code
        return code
