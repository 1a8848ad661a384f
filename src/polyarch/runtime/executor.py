"""Run one process in a root filesystem with an OCI runtime (runc or crun).

The runtime is found once: the first of runc and crun that is installed. (Debian's crun 1.8
refuses hybrid cgroup hosts; runc works there, which is why runc comes first.) Output is passed
line by line to a callback as it comes, so progress can show it live.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from polyarch import cpu
from polyarch.errors import PolyarchError
from polyarch.runtime.spec import ProcessSpec, runtime_spec
from polyarch.runtime.userns import rootless

RUNTIMES = ("runc", "crun")


class RuntimeMissingError(PolyarchError):
    """No OCI runtime is installed."""


def find_runtime() -> str:
    for name in RUNTIMES:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeMissingError("no OCI runtime found: install runc (apt-get install runc) or crun")


INITS = ("tini-static",)


def find_init() -> str | None:
    """A statically linked init for running emulated processes (Debian's tini), if any."""
    for name in INITS:
        path = shutil.which(name)
        if path:
            return path
    return None


class Executor:
    def __init__(self, state_dir: Path, runtime: str | None = None) -> None:
        self.runtime = runtime or find_runtime()
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)

    def reap(self) -> list[str]:
        """Stop and delete every container in this state directory (what a killed polyarch
        left running, or a runtime killed mid-way left stopped). Call it only when no live
        process owns any of them (with the workspace lock held). Returns their ids."""
        listed = subprocess.run(
            [self.runtime, "--root", str(self.state_dir), "list", "-q"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        ids = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
        for container_id in ids:
            for args in (["kill", container_id, "KILL"], ["delete", "--force", container_id]):
                subprocess.run([self.runtime, "--root", str(self.state_dir), *args],
                               capture_output=True, check=False)  # fmt: skip
        return ids

    def run(
        self,
        process: ProcessSpec,
        rootfs: Path,
        bundle: Path,
        on_output: Callable[[str], None],
    ) -> int:
        """Run to completion; returns the exit status (128+N when killed by signal N)."""
        return self.start(process, rootfs, bundle, on_output).wait()

    def start(
        self,
        process: ProcessSpec,
        rootfs: Path,
        bundle: Path,
        on_output: Callable[[str], None],
    ) -> Container:
        """Start the process and return at once; its output goes to `on_output` as it comes."""
        bundle.mkdir(parents=True, exist_ok=True)
        spec = runtime_spec(process, str(rootfs), rootless=rootless())
        (bundle / "config.json").write_text(json.dumps(spec))
        container_id = "polyarch-" + uuid.uuid4().hex[:16]
        proc = subprocess.Popen(
            [self.runtime, "--root", str(self.state_dir), "run", "--bundle", str(bundle),
             container_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return Container(self, container_id, proc, on_output)


class Container:
    """A process started by the runtime: its pid (for its namespaces), its exit, a kill."""

    def __init__(
        self,
        executor: Executor,
        container_id: str,
        proc: subprocess.Popen[bytes],
        on_output: Callable[[str], None],
    ) -> None:
        self.executor = executor
        self.id = container_id
        self.proc = proc
        # what the runtime and the processes it reaped used (user, kernel), once it ended
        self.cpu: cpu.Seconds = (0.0, 0.0)

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                on_output(raw.decode("utf-8", "replace").rstrip("\n"))

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()

    def pid(self) -> int | None:
        """The container's first process on the host, once it runs (None before or after)."""
        done = subprocess.run(
            [self.executor.runtime, "--root", str(self.executor.state_dir), "state", self.id],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            return None
        state = json.loads(done.stdout)
        pid = state.get("pid")
        return int(pid) if state.get("status") == "running" and pid else None

    def poll(self) -> int | None:
        """The exit status if the process has ended (128+N when killed by signal N)."""
        if self.proc.returncode is None:
            # Reaped here rather than by Popen.poll, for the CPU time the step used.
            with contextlib.suppress(ChildProcessError):  # reaped already (a kill's wait)
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    self.proc.returncode = os.waitstatus_to_exitcode(status)
                    self.cpu = cpu.usage(usage)
        code = self.proc.poll()
        if code is None:
            return None
        self._reader.join()
        return 128 - code if code < 0 else code

    def wait(self, timeout: float | None = None) -> int:
        self.proc.wait(timeout)
        code = self.poll()
        assert code is not None
        return code

    def kill(self) -> None:
        """Stop the container and everything in it (its init dies, so its pid namespace
        does); its state is removed."""
        if self.proc.poll() is None:
            subprocess.run(
                [self.executor.runtime, "--root", str(self.executor.state_dir), "kill", self.id,
                 "KILL"],
                capture_output=True,
                check=False,
            )  # fmt: skip
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(
            [self.executor.runtime, "--root", str(self.executor.state_dir), "delete", "--force",
             self.id],
            capture_output=True,
            check=False,
        )  # fmt: skip
        self._reader.join(5)
