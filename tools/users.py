"""Ordinary users for the rootless tests and bench: made with a subordinate id range, removed
after, and a way to run this checkout's polyarch as one of them."""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


def add_user(name: str, *extra: str, ids: str | None = "300000-365535") -> None:
    """A fresh user `name` (one left over is removed first), its home made, not locked (sshd
    lets it in by key). useradd gives a subordinate range where /etc/subuid exists; where it
    did not, `ids` is added, as an administrator would."""
    remove_user(name)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-p", "*", *extra, name], check=True)
    if ids is not None and not has_range(name):
        subprocess.run(["usermod", "--add-subuids", ids, "--add-subgids", ids, name], check=True)


def has_range(name: str) -> bool:
    return SUBUID.exists() and any(line.startswith(f"{name}:")
                                   for line in SUBUID.read_text().splitlines())  # fmt: skip


def remove_user(name: str) -> None:
    """The user, its home (whatever ids own files there) and its subordinate ranges, gone."""
    subprocess.run(["userdel", "-r", "-f", name], capture_output=True, check=False)
    for path in (SUBUID, SUBGID):
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        kept = [line for line in lines if not line.startswith(f"{name}:")]
        if kept != lines:
            path.write_text("".join(kept))


@contextmanager
def python_reachable() -> Iterator[list[str]]:
    """Shell lines that, run in a mount namespace of the caller's own, make this Python
    passable for other users where it lives somewhere they cannot go (a root-only home): its
    blocked directory is replaced by a tmpfs holding just the way through. Nothing on the
    host changes."""
    real = Path(sys.executable).resolve()
    lines = ["set -e"]
    blocked = next((p for p in reversed(real.parents) if not p.stat().st_mode & 0o001), None)
    hold = Path(tempfile.mkdtemp(prefix="polyarch-user-python-"))
    if blocked is not None:
        child = blocked / real.relative_to(blocked).parts[0]
        lines += [f"mount --bind {shlex.quote(str(child))} {hold}",
                  f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(blocked))}",
                  f"mkdir -p {shlex.quote(str(child))}",
                  f"mount --bind {hold} {shlex.quote(str(child))}"]  # fmt: skip
    try:
        yield lines
    finally:
        hold.rmdir()


def in_namespace(lines: list[str], command: list[str]) -> list[str]:
    """`command` run after `lines` in a private mount namespace."""
    script = "\n".join([*lines, f"exec {shlex.join(command)}"])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def as_user(
    name: str,
    args: list[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """`polyarch ARGS` run by `name`, with no privilege, in `cwd`."""
    home = pwd.getpwnam(name).pw_dir
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    command = ["runuser", "-u", name, "--", "env", f"HOME={home}", f"PATH={os.environ['PATH']}",
               *extra, sys.executable, "-m", "polyarch", *args]  # fmt: skip
    with python_reachable() as lines:
        shell = in_namespace([*lines, f"cd {shlex.quote(str(cwd))}"], command)
        return subprocess.run(shell, capture_output=True, text=True, timeout=timeout, check=False)
