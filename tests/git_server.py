"""Git remotes on 127.0.0.1 for tests: `git daemon` (git://) and Debian's OpenSSH server
(ssh://, with a throwaway host key and a key pair for one client). The caller stops them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ServerUnavailable(Exception):
    """git or sshd is not installed here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(
    port: int, process: subprocess.Popen[bytes], what: str, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not listen on {host}:{port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str], *, bare_into: Path | None = None) -> Path:
    """A work tree with `files` committed on `main`; and, with `bare_into`, a bare clone of
    it there (what a server serves). Returns the work tree."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", str(path))
    commit(path, files, "first")
    if bare_into is not None:
        git("clone", "-q", "--bare", str(path), str(bare_into))
        git("remote", "add", "origin", str(bare_into), cwd=path)
    return path


def commit(work: Path, files: dict[str, str], message: str) -> str:
    for name, content in files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@dataclass
class GitDaemon:
    base: Path
    port: int
    process: subprocess.Popen[bytes]

    def url(self, repo: str) -> str:
        return f"git://127.0.0.1:{self.port}/{repo}"

    def stop(self) -> None:
        _stop(self.process)


def start_git_daemon(base: Path) -> GitDaemon:
    if shutil.which("git") is None:
        raise ServerUnavailable("git is not installed (apt-get install git)")
    port = free_port()
    process = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
         "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_port(port, process, "git daemon")
    return GitDaemon(base, port, process)


@dataclass
class SshServer:
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    client_key: Path  # the private key sshd lets in (as root)
    host: str = "127.0.0.1"

    def url(self, path: Path) -> str:
        return f"ssh://root@{self.host}:{self.port}{path}"

    def stop(self) -> None:
        _stop(self.process)


def start_sshd(
    root: Path,
    host: str = "127.0.0.1",
    netns: str | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> SshServer:
    """sshd on `host` (127.0.0.1) that lets root in with one key only (made here), and any
    user with that key; with `netns`, inside that network namespace (`ip netns`); `wrap`
    turns its command line into the one started (a namespace of the test's own)."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd is None or shutil.which("ssh-keygen") is None:
        raise ServerUnavailable("sshd is not installed (apt-get install openssh-server)")
    root.mkdir(parents=True, exist_ok=True)
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
    shutil.copy(client_key.with_suffix(".pub"), root / "authorized_keys")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation directory
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {host}\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    # nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup mounts runc needs.
    inside = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    command = [*inside, sshd, "-D", "-e", "-f", str(config)]
    process = subprocess.Popen(wrap(command) if wrap else command,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_port(port, process, "sshd", host)
    return SshServer(root, port, process, client_key, host)
