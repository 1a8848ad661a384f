"""Rootless: polyarch run by an ordinary user, as buildah and BuildKit rootless run.

A command that builds or runs images (build, bake, release, verify, and those that remove what
builds made: clean, prune, du, and `worker` on a node) re-executes itself in a user namespace
and a mount namespace of its own, made with util-linux's `unshare` and the setuid helpers
`newuidmap`/`newgidmap` (Debian's `uidmap`): the user is root there (uid and gid 0 are the
user's own), and uids and gids 1-65536 are the user's subordinate range from /etc/subuid and
/etc/subgid. Inside, polyarch does what it does as root: overlayfs mounts (with `userxattr`, the
kernel's user-namespace form: `user.overlay.*` attributes instead of `trusted.overlay.*`), file
owners in layers as the Dockerfile asked (files a step makes as uid 1000 are uid 1000 in the
layer, the subordinate uid 100999 on the host), runc in its rootless mode. The network stays
the host's, as BuildKit rootless with its host network.

What an ordinary user cannot do, polyarch does not try: registering emulators (an
administrator registers them once, with the F flag, for every user), creating device nodes
from a layer (skipped, as containerd skips them in a user namespace), cgroup limits.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

from polyarch.errors import PolyarchError

ENV: Final = "POLYARCH_ROOTLESS"  # set in the namespace: polyarch is root there, not on the host
COMMANDS: Final = frozenset({"build", "bake", "release", "verify", "clean", "prune", "du",
                             "worker"})  # fmt: skip
RANGE: Final = 65536  # ids 1..65536 mapped; more of a range is not used
# The CLI's global options that take a value (tests/unit/test_rootless.py keeps this true):
# what may come before the command in `polyarch [OPTIONS] COMMAND ...`.
GLOBAL_VALUED: Final = frozenset({"--authfile", "--insecure-registry", "--certs-dir",
                                  "--idle-timeout", "--config"})  # fmt: skip


class RootlessError(PolyarchError):
    """polyarch cannot make its user namespace: what is missing, and the fix."""


def rootless() -> bool:
    """Whether polyarch runs in its rootless user namespace (root there, a user outside)."""
    return os.environ.get(ENV) == "1"


@dataclass(frozen=True, slots=True)
class Subordinate:
    uid_start: int
    uid_count: int
    gid_start: int
    gid_count: int


def subordinate_ranges(
    user: str, uid: int, subuid: Path = Path("/etc/subuid"), subgid: Path = Path("/etc/subgid")
) -> Subordinate | None:
    """The user's first subordinate uid and gid ranges (by name or number), or None."""
    uids = _range(subuid, user, uid)
    gids = _range(subgid, user, uid)
    if uids is None or gids is None:
        return None
    return Subordinate(uids[0], uids[1], gids[0], gids[1])


def _range(path: Path, user: str, uid: int) -> tuple[int, int] | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if count > 0:
            return start, count
    return None


def command_line(argv: list[str], ranges: Subordinate) -> list[str]:
    """`unshare` running `argv` as root of a user namespace that maps the user to root and
    its subordinate ranges to 1..N, in a private mount namespace."""
    uids = min(ranges.uid_count, RANGE)
    gids = min(ranges.gid_count, RANGE)
    return ["unshare", "--map-root-user", f"--map-users={ranges.uid_start},1,{uids}",
            f"--map-groups={ranges.gid_start},1,{gids}", "--mount", "--propagation", "private",
            "--", *argv]  # fmt: skip


def command_of(args: Sequence[str]) -> str | None:
    """The command `polyarch ARGS` runs (None for --help, --version, or none), read without
    the CLI: the first word after the global options and their values."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-h", "--help", "--version", "--"):
            return None
        i += 2 if args[i] in GLOBAL_VALUED else 1
    return args[i] if i < len(args) else None


def needed(args: Sequence[str]) -> bool:
    """Whether `polyarch ARGS`, run by this process, must first enter the namespace: an
    ordinary user, not in it yet, running a command that builds or runs images."""
    if os.geteuid() == 0 or rootless() or {"-h", "--help"} & set(args):
        return False
    return command_of(args) in COMMANDS


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def enter(argv: list[str]) -> NoReturn:
    """Re-execute `argv` in the rootless namespace (this process becomes it)."""
    missing = [tool for tool in ("unshare", "newuidmap", "newgidmap") if shutil.which(tool) is None]
    if missing:
        raise RootlessError(f"running as an ordinary user needs {', '.join(missing)}: apt-get "
                            "install uidmap util-linux (or run polyarch as root)")  # fmt: skip
    user = user_name()
    ranges = subordinate_ranges(user, os.getuid())
    if ranges is None:
        raise RootlessError(
            f"{user} has no subordinate id range in /etc/subuid and /etc/subgid, which a "
            f"rootless build needs (files of other owners than root in images): as root, run "
            f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
        )
    os.execvpe("unshare", command_line(argv, ranges), {**os.environ, ENV: "1"})  # noqa: S606 (argv, no shell)


def overlay_opaque() -> str:
    """The attribute an opaque overlay directory carries here."""
    return "user.overlay.opaque" if rootless() else "trusted.overlay.opaque"


def overlay_mountable() -> str | None:
    """Whether overlayfs mounts in a user namespace here (kernels from 5.11): None when it
    does, else what the kernel said. Where it does not, builds use copies (same results)."""
    with tempfile.TemporaryDirectory(prefix="polyarch-userns-") as scratch:
        for name in ("lower", "upper", "work", "merged"):
            Path(scratch, name).mkdir()
        options = f"lowerdir={scratch}/lower,upperdir={scratch}/upper,workdir={scratch}/work"
        try:
            done = subprocess.run(
                ["unshare", "--map-root-user", "--mount", "--", "mount", "-t", "overlay",
                 "overlay", "-o", options + ",userxattr", f"{scratch}/merged"],
                capture_output=True, text=True, timeout=20, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")
