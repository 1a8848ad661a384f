"""`polyarch doctor`: is this machine ready to build for the platforms asked? (effects: reads)

Each check says what it found and, when something is wrong, how to fix it. A failed check is
something a build needs; a warning is something it may need.
"""

from __future__ import annotations

import gzip
import os
import platform as host
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from polyarch.errors import PolyarchError
from polyarch.platform import Platform
from polyarch.runtime import binfmt, userns
from polyarch.runtime.executor import RUNTIMES, find_init

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


def _version(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return ()
    return tuple(int(g) for g in match.groups() if g is not None)


def kernel() -> Check:
    release = host.release()
    if _version(release) >= (4, 8):
        return Check("kernel", "ok", f"Linux {release} (binfmt F flag needs 4.8)")
    return Check("kernel", "fail", f"Linux {release}", "upgrade to a kernel >= 4.8")


def emulation(platforms: Sequence[Platform], machine: Platform) -> list[Check]:
    checks: list[Check] = []
    if not binfmt.mounted():
        checks.append(Check("binfmt_misc", "fail", "not mounted", "polyarch emulators install"))
        return checks
    checks.append(Check("binfmt_misc", "ok", f"mounted at {binfmt.BINFMT}"))
    for platform in platforms:
        status = binfmt.status(platform, machine)
        if status.kind == "native":
            checks.append(Check(f"emulation {platform}", "ok", "native"))
        elif status.kind == "emulated" and status.fix_binary:
            interp = status.handler.interpreter if status.handler else "?"
            checks.append(Check(f"emulation {platform}", "ok", f"{interp} (F flag)"))
        elif status.kind == "emulated":
            detail = "registered without the F flag (fails inside containers)"
            checks.append(
                Check(f"emulation {platform}", "warn", detail, "polyarch emulators install")
            )
        elif status.kind == "unsupported":
            checks.append(Check(f"emulation {platform}", "fail", "no emulator runs it here",
                                f"RUN steps for {platform} need a {platform.os} machine: "
                                "QEMU's user mode runs Linux programs only"))  # fmt: skip
        else:
            fix = (
                f"polyarch emulators install --platform {platform} (a build as root does it itself)"
                if status.available
                else "apt-get install qemu-user-static, then polyarch emulators install"
            )
            checks.append(Check(f"emulation {platform}", "fail", "no handler", fix))
    return checks


def runtime() -> Check:
    for name in RUNTIMES:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            out = subprocess.run(
                [path, "--version"], check=False, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Check("OCI runtime", "fail", f"{path} does not run: {exc}", "reinstall it")
        version = out.stdout.splitlines()[0] if out.stdout else name
        if name == "runc":
            return _runc_cve(path, version)
        return Check("OCI runtime", "ok", version)
    return Check("OCI runtime", "fail", "neither runc nor crun found", "apt-get install runc")


def _runc_cve(path: str, version: str) -> Check:
    """CVE-2024-21626 (leaked fd, container breakout): fixed in runc 1.1.12, and in
    distribution builds that patched older versions: ask the package changelog."""
    numbers = _version(version)
    if numbers >= (1, 1, 12):
        return Check("OCI runtime", "ok", f"{version} (has the CVE-2024-21626 fix)")
    changelog = Path("/usr/share/doc/runc/changelog.Debian.gz")
    try:
        with gzip.open(changelog, "rt", errors="replace") as f:
            patched = "CVE-2024-21626" in f.read()
    except OSError:
        patched = False
    if patched:
        return Check("OCI runtime", "ok", f"{version} (Debian build patched for CVE-2024-21626)")
    return Check("OCI runtime", "fail", f"{version} lacks the CVE-2024-21626 fix",
                 "upgrade runc to >= 1.1.12 (apt-get install --only-upgrade runc)")  # fmt: skip


def init() -> Check:
    """A static init for emulated steps: without one, a crash of an emulated PID 1 hangs."""
    path = find_init()
    if path is not None:
        return Check("init for emulated steps", "ok", path)
    return Check("init for emulated steps", "warn",
                 "no tini-static: an emulated step whose main process crashes would hang",
                 "apt-get install tini")  # fmt: skip


def overlay() -> Check:
    try:
        listed = "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        listed = False
    if listed:
        return Check("overlayfs", "ok", "supported by the kernel")
    return Check("overlayfs", "fail", "not in /proc/filesystems", "modprobe overlay")


def namespaces() -> Check:
    missing = [n for n in ("pid", "mnt", "ipc", "uts") if not Path(f"/proc/self/ns/{n}").exists()]
    if missing:
        return Check("namespaces", "fail", f"missing: {', '.join(missing)}", "a kernel with them")
    if os.geteuid() != 0:
        return rootless_check()
    return Check("namespaces", "ok", "pid, mount, ipc, uts; running as root")


def rootless_check() -> Check:
    """An ordinary user: what polyarch's user namespace needs (polyarch.runtime.userns)."""
    user = userns.user_name()
    missing = [t for t in ("unshare", "newuidmap", "newgidmap") if shutil.which(t) is None]
    if missing:
        return Check("rootless", "fail", f"{', '.join(missing)} missing",
                     "apt-get install uidmap util-linux")  # fmt: skip
    ranges = userns.subordinate_ranges(user, os.getuid())
    if ranges is None:
        fix = f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
        return Check("rootless", "fail", f"{user} has no subordinate id range", fix)
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = 1
    if limit == 0:
        return Check("rootless", "fail", "user namespaces are disabled",
                     "sysctl user.max_user_namespaces=15000")  # fmt: skip
    count = min(ranges.uid_count, userns.RANGE)
    found = f"as {user}: a user namespace with uids 0-{count} (subordinate {ranges.uid_start}+)"
    refused = userns.overlay_mountable()
    if refused is not None:
        return Check("rootless", "warn", f"{found}; overlayfs cannot be mounted in it "
                     f"({refused}): builds copy layers instead, slower, same results",
                     "a kernel from 5.11 mounts overlayfs in a user namespace")  # fmt: skip
    return Check("rootless", "ok", f"{found}, overlayfs with userxattr, runc rootless; "
                 "emulators must be registered by an administrator")  # fmt: skip


def disk(root: Path) -> Check:
    probe = root if root.exists() else root.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    gib = free / 2**30
    if gib >= 5:
        return Check("disk", "ok", f"{gib:.1f} GiB free for {root}")
    level: Level = "warn" if gib >= 1 else "fail"
    return Check("disk", level, f"{gib:.1f} GiB free for {root}", "free space or use --root")


def clock() -> Check:
    year = time.gmtime().tm_year
    if year >= 2024:
        return Check("clock", "ok", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    return Check("clock", "fail", f"the clock says {year}", "set the time (TLS needs it)")


def registries(hosts: Sequence[str], client: object) -> list[Check]:
    from polyarch.registry.client import RegistryClient  # noqa: PLC0415

    assert isinstance(client, RegistryClient)
    checks = []
    for name in hosts:
        try:
            reach = client.reach(name)
            who = "anonymous" if reach.anonymous else "with credentials"
            checks.append(
                Check(f"registry {name}", "ok", f"{reach.base} (auth: {reach.auth}, {who})")
            )
        except PolyarchError as exc:
            checks.append(Check(f"registry {name}", "fail", str(exc), "check the address"))
    return checks
