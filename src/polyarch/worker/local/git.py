"""Git sources with the host's git: which commit a ref names (`git ls-remote`, run on every
build, as BuildKit does, so a moved branch is seen), and that commit's tree checked out.

The tree is fetched shallow where the remote allows it; submodules are fetched too unless
asked not to; `.git` is removed unless kept. Every file's modification time is the commit's
time (BuildKit leaves checkout time by default; the commit's makes the same commit give the
same layer on any machine). SSH remotes use the build's `--ssh default` agent when one was
given (else the caller's), never ask for a password, and accept unknown host keys as BuildKit
does without known hosts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from polyarch.errors import PolyarchError

_HEX: Final = re.compile(r"[0-9a-f]{7,64}")
_TIMEOUT: Final = 1800.0


class GitError(PolyarchError):
    """A git remote that could not be read, or a ref it does not have."""


def git_env(ssh_socket: Path | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "GIT_ASKPASS": "/bin/false",
    }
    if ssh_socket is not None:
        env["SSH_AUTH_SOCK"] = str(ssh_socket)
    return env


def _git(args: list[str], env: Mapping[str, str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                              env=dict(env), cwd=cwd, timeout=_TIMEOUT)  # fmt: skip
    except FileNotFoundError:
        raise GitError("git sources need git on this machine (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"{what}: git {args[0]} took over {_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        raise GitError(f"{what}: git {args[0]} failed: {lines[-1] if lines else done.returncode}")
    return done.stdout


def resolve_commit(remote: str, ref: str, env: Mapping[str, str]) -> str:
    """The commit `ref` names on `remote` now ("" for a commit given by a prefix, which only
    a fetch can tell)."""
    if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", ref):
        return ref
    name = ref or "HEAD"
    patterns = [name] if name == "HEAD" else [name, f"{name}^{{}}"]
    out = _git(["ls-remote", "--", remote, *patterns], env, remote)
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, tab, name_found = line.partition("\t")
        if tab:
            found[name_found.strip()] = sha.strip()
    if name.startswith("refs/"):
        wanted = [f"{name}^{{}}", name]
    elif name == "HEAD":
        wanted = ["HEAD"]
    else:
        wanted = [f"refs/tags/{name}^{{}}", f"refs/tags/{name}", f"refs/heads/{name}"]
    for candidate in wanted:
        if candidate in found:
            return found[candidate]
    if _HEX.fullmatch(ref):
        return ""
    raise GitError(f"{remote} has no ref {name!r}")


def checkout(
    remote: str,
    ref: str,
    commit: str,
    into: Path,
    env: Mapping[str, str],
    *,
    keep_git_dir: bool = False,
    submodules: bool = True,
) -> str:
    """`commit` of `remote` (or what `ref` names, when `commit` is "") checked out in `into`
    (a new directory). Returns the commit checked out."""
    into.mkdir(parents=True)
    where = f"{remote}#{ref}" if ref else remote
    _git(["init", "-q", str(into)], env, where)
    _git(["remote", "add", "origin", remote], env, where, cwd=into)
    target = commit or ref
    try:
        _git(["fetch", "-q", "--depth", "1", "--no-tags", "origin", target], env, where,
             cwd=into)  # fmt: skip
        fetched = "FETCH_HEAD"
    except GitError:
        # Not every remote gives a commit by id (or by prefix): all of it, then the commit.
        _git(["fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"], env,
             where, cwd=into)  # fmt: skip
        fetched = target
    try:
        actual = _git(["rev-parse", "--verify", "-q", f"{fetched}^{{commit}}"], env, where,
                      cwd=into).strip()  # fmt: skip
    except GitError:
        raise GitError(f"{where}: no commit {target!r}") from None
    if commit and not actual.startswith(commit):
        raise GitError(f"{where}: {ref or 'HEAD'} moved during the build (was {commit[:12]}, "
                       f"now {actual[:12]}); build again")  # fmt: skip
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", actual], env, where, cwd=into)
    if submodules and (into / ".gitmodules").is_file():
        _git(["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"], env, where,
             cwd=into)  # fmt: skip
    when = int(_git(["log", "-1", "--format=%ct", actual], env, where, cwd=into).strip() or 0)
    if not keep_git_dir:
        shutil.rmtree(into / ".git")
        for path, _dirs, files in os.walk(into):
            if ".git" in files:  # a submodule's link to the repository just removed
                os.unlink(os.path.join(path, ".git"))
    _set_times(into, when)
    return actual


def check_commit(actual: str, checksum: str, where: str) -> None:
    """`ADD --checksum` (or `?checksum=`) of a git source: the commit must start with it."""
    if checksum and not actual.startswith(checksum):
        raise GitError(f"{where}: checksum mismatch: expected commit {checksum}, got {actual}")


def _set_times(root: Path, when: int) -> None:
    for path, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            os.utime(os.path.join(path, name), (when, when), follow_symlinks=False)
    os.utime(root, (when, when))
