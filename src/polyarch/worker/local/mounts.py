"""What a RUN step's `--mount`s become on this machine: directories and sockets bound into the
step, none of them part of its layer.

- cache: a directory in the workspace, one per id (BuildKit's default id is the target), kept
  across builds. `shared` lets concurrent steps use it together, `locked` makes them take turns
  (across processes too), `private` gives a step that finds it busy a copy of its own. A cache
  seeded `from` a stage or image is seeded the first time it is made.
- bind: an input's filesystem, or the build context's selected files (ignore rules applied),
  read-only by default; with `rw`, writes are thrown away after the step.
- tmpfs: a tmpfs of the given size.
- secret: the value in a file outside any layer (a private directory in memory, /dev/shm, as
  BuildKit mounts secrets from a tmpfs; the step's directory where there is none), bound
  read-only, and/or in an environment variable of the step only. A missing required secret is
  an error before the build runs; a missing optional one is no mount.
- ssh: a socket that forwards to the build's agent (the caller's SSH_AUTH_SOCK, or an agent
  polyarch starts for a key file), with the owner and mode the mount asks for.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.errors import PolyarchError, StepError
from polyarch.worker.local.filecopy import copy_tree, set_owner_and_mode

CACHE_META = ".polyarch-cache"


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret's value comes from: a file, or an environment variable, or (on a
    builder's node) the client that started the build, asked when a step needs it."""

    id: str
    file: Path | None = None
    env: str | None = None
    fetch: Callable[[], bytes] | None = None

    def read(self) -> bytes:
        if self.fetch is not None:
            return self.fetch()
        if self.file is not None:
            try:
                return self.file.read_bytes()
            except OSError as exc:
                raise StepError(f"secret {self.id!r}: cannot read {self.file}: "
                                f"{exc.strerror}") from None  # fmt: skip
        value = os.environ.get(self.env or self.id)
        if value is None:
            raise StepError(f"secret {self.id!r}: the variable {self.env or self.id} is not set")
        return value.encode()


@dataclass(frozen=True, slots=True)
class SshSource:
    """An SSH agent for `--mount=type=ssh,id=ID`: a socket, or a key file (an agent is
    started for it)."""

    id: str
    socket: Path | None = None
    key: Path | None = None


class CacheMounts:
    """The workspace's cache-mount directories, and who is using them now."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}
        self._turns: dict[str, threading.Lock] = {}

    def path(self, cache_id: str) -> Path:
        digest = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
        return self.root / digest

    @contextlib.contextmanager
    def use(
        self,
        cache_id: str,
        sharing: str,
        seed: Path | None,
        mode: int,
        owner: tuple[int, int],
    ) -> Iterator[Path]:
        """The directory of `cache_id` for the length of one step."""
        base = self.path(cache_id)
        with self._lock:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = not base.is_dir()
            if fresh:
                _make_cache(base, cache_id, seed, mode, owner)
            with contextlib.suppress(OSError):
                os.utime(base / CACHE_META)  # last used: what `prune --filter until=` reads
            busy = self._users.get(cache_id, 0)
            self._users[cache_id] = busy + 1
            turn = self._turns.setdefault(cache_id, threading.Lock())
        try:
            if sharing == "locked":
                with turn, _flocked(base):
                    yield base / "data"
            elif sharing == "private" and busy:
                # Someone is using it: a new one of its own (seeded as a new cache would be),
                # as BuildKit makes, thrown away after the step.
                fresh_dir = Path(tempfile.mkdtemp(dir=self.root, prefix=".private-"))
                try:
                    _fill(fresh_dir / "data", seed, mode, owner)
                    yield fresh_dir / "data"
                finally:
                    shutil.rmtree(fresh_dir, ignore_errors=True)
            else:
                with _flocked(base, shared=True):
                    yield base / "data"
        finally:
            with self._lock:
                self._users[cache_id] -= 1

    def entries(self) -> Iterator[tuple[str, Path]]:
        """(id, directory) of every cache mount kept."""
        if not self.root.is_dir():
            return
        for entry in sorted(self.root.iterdir()):
            meta = entry / CACHE_META
            if entry.name.startswith(".") or not meta.is_file():
                continue
            yield meta.read_text(encoding="utf-8", errors="replace"), entry


def _make_cache(
    base: Path, cache_id: str, seed: Path | None, mode: int, owner: tuple[int, int]
) -> None:
    work = Path(tempfile.mkdtemp(dir=base.parent, prefix=".new-"))
    try:
        _fill(work / "data", seed, mode, owner)
        (work / CACHE_META).write_text(cache_id, encoding="utf-8")
        work.rename(base)
    except FileExistsError:
        shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _fill(data: Path, seed: Path | None, mode: int, owner: tuple[int, int]) -> None:
    """A cache mount's directory: empty with the mount's mode and owner, or a copy of the
    seed (a view of a stage's or an image's files: copied as they are, device nodes as
    nodes, never read)."""
    data.mkdir()
    if seed is not None and seed.is_dir():
        try:
            copy_tree(seed, data)
        except (OSError, PolyarchError) as exc:
            raise StepError(f"cannot seed the cache mount: {exc}") from None
        return
    os.chown(data, *owner)
    os.chmod(data, mode)


@contextlib.contextmanager
def _flocked(base: Path, *, shared: bool = False) -> Iterator[None]:
    fd = os.open(base / CACHE_META, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


SHM = Path("/dev/shm")  # noqa: S108 (directories made there with mkdtemp, 0700)
_SHM_PREFIX = "polyarch-secrets-"


def secret_directory(step: Path) -> Path:
    """A new private directory for a step's secret files: in memory (/dev/shm, when it is a
    tmpfs), so a secret never reaches a disk, else in the step's own directory. The caller
    removes it after the step; those of a polyarch that was killed are removed here."""
    if not _in_memory(SHM):
        return step / "secrets"
    for old in SHM.glob(f"{_SHM_PREFIX}*"):
        pid = old.name[len(_SHM_PREFIX) :].split("-")[0]
        with contextlib.suppress(OSError):
            st = old.lstat()  # ours alone (another user's, or a symlink, is left as it is)
            if (pid.isdigit() and not Path(f"/proc/{pid}").exists() and st.st_uid == os.geteuid()
                    and stat.S_ISDIR(st.st_mode)):  # fmt: skip
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=SHM, prefix=f"{_SHM_PREFIX}{os.getpid()}-"))


def _in_memory(path: Path) -> bool:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            return any(line.split()[1:3] == [str(path), "tmpfs"] for line in mounts)
    except OSError:
        return False


def write_secret(directory: Path, value: bytes, mode: int, owner: tuple[int, int]) -> Path:
    """The secret's value in a file of a private directory (never in a layer)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix="secret-")
    with os.fdopen(fd, "wb") as f:
        f.write(value)
        set_owner_and_mode(f, *owner, mode)
    return Path(name)


class AgentForwarder:
    """A unix socket with the step's owner and mode that forwards every connection to an SSH
    agent's socket (as BuildKit's SSH mounts do), for the length of one step."""

    def __init__(self, agent: Path, mode: int, owner: tuple[int, int]) -> None:
        # A short path (a unix socket's is at most 107 bytes) in a directory only root can
        # enter: the step reaches the socket through its bind mount, nobody else at all.
        self.path = Path(tempfile.mkdtemp(prefix="polyarch-ssh-")) / "agent.sock"
        self.agent = agent
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._server.bind(str(self.path))
            os.chown(self.path, *owner)
            os.chmod(self.path, mode)
            self._server.listen(16)
        except OSError as exc:
            self._server.close()
            shutil.rmtree(self.path.parent, ignore_errors=True)
            raise StepError(f"cannot make the SSH agent socket: {exc.strerror}") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(str(self.agent))
        except OSError:
            client.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join(30)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        shutil.rmtree(self.path.parent, ignore_errors=True)


@dataclass
class Agents:
    """The SSH agents of one build: sockets as given, or agents started for key files (and
    stopped when the build ends)."""

    sources: Mapping[str, SshSource] = field(default_factory=dict)
    _started: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def socket(self, agent_id: str) -> Path | None:
        source = self.sources.get(agent_id)
        if source is None:
            return None
        if source.socket is not None:
            return source.socket
        assert source.key is not None
        with self._lock:
            started = self._started.get(agent_id)
            if started is None:
                started = _start_agent(source.key)
                self._started[agent_id] = started
            return started[1]

    def close(self) -> None:
        with self._lock:
            for process, path in self._started.values():
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)
                shutil.rmtree(path.parent, ignore_errors=True)
            self._started.clear()


def _start_agent(key: Path) -> tuple[subprocess.Popen[bytes], Path]:
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        raise PolyarchError("--ssh with a key file needs ssh-agent and ssh-add "
                            "(apt-get install openssh-client)")  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="polyarch-agent-"))
    path = directory / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        if path.exists():
            break
        threading.Event().wait(0.05)
    # Never a prompt: a key with a passphrase belongs in the caller's agent (--ssh default).
    env = {**os.environ, "SSH_AUTH_SOCK": str(path), "SSH_ASKPASS_REQUIRE": "never"}
    added = subprocess.run(["ssh-add", str(key)], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, check=False)  # fmt: skip
    if added.returncode != 0:
        process.terminate()
        shutil.rmtree(directory, ignore_errors=True)
        if "passphrase" in added.stderr:
            raise PolyarchError(f"--ssh: {key} has a passphrase: add it to your ssh-agent and "
                                "use --ssh default (or --ssh ID=$SSH_AUTH_SOCK)")  # fmt: skip
        raise PolyarchError(f"--ssh: ssh-add could not load {key}: {added.stderr.strip()}")
    return process, path
