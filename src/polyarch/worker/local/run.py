"""RUN steps on this machine: an exec op's process in the step's root filesystem, with runc.

BuildKit's sandbox: pid/ipc/uts/mount namespaces, the host's network (`--network=none`: a
network namespace of its own with only loopback), Docker's default capabilities
(`--security=insecure`: all of them, nothing masked), /proc, a tmpfs /dev, read-only /sys,
hostname `buildkitsandbox`. The host's resolv.conf is bound read-only, and an /etc/hosts as
BuildKit writes it (localhost and the sandbox's name, then the `--add-host` entries; never the
host's own entries); mount points the runtime had to create are removed afterwards, so they are
in no layer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from polyarch import cpu
from polyarch.errors import PolyarchError, StepError
from polyarch.graph.model import Vertex
from polyarch.graph.ops import BindMount as BindOp
from polyarch.graph.ops import CacheMount as CacheOp
from polyarch.graph.ops import ExecOp
from polyarch.graph.ops import SecretMount as SecretOp
from polyarch.graph.ops import SshMount as SshOp
from polyarch.graph.ops import TmpfsMount as TmpfsOp
from polyarch.layers import Root
from polyarch.runtime import (
    DEFAULT_PATH,
    BindMount,
    Container,
    ProcessSpec,
    bind_directory,
    find_init,
    unmount,
)
from polyarch.runtime.seccomp import oci_seccomp
from polyarch.runtime.spec import CAPABILITIES, capabilities_of
from polyarch.solver.scheduler import Cancelled
from polyarch.worker.base import Job, LayerRef, Result
from polyarch.worker.local.filecopy import (
    CopyError,
    CopyOptions,
    MissingSourceError,
    copy_sources,
    resolve_user,
    select_sources,
)
from polyarch.worker.local.mounts import AgentForwarder, secret_directory, write_secret

if TYPE_CHECKING:
    from polyarch.worker.local.worker import LocalWorker

TAIL_LINES: Final = 20
SILENCE_NOTE_SECONDS: Final = 60.0
CA_PATH: Final = "/run/polyarch-ca/ca-certificates.crt"
CA_VARIABLES: Final = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                       "GIT_SSL_CAINFO", "CURL_CA_BUNDLE")  # fmt: skip
# Where the runtime mounts its own file systems: these must be real directories of the rootfs,
# or the runtime would follow an image's symlink out of it.
RUNTIME_TARGETS: Final = ("proc", "dev", "sys")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How this machine runs RUN steps (never part of a key)."""

    ca_certs: Path | None = None  # a CA bundle on the host for RUN steps to trust
    step_timeout: float | None = None  # seconds a RUN step may take (--step-timeout)


@dataclass
class StepMounts:
    """What a step's `--mount`s became: binds, tmpfs mounts, and variables (a secret's value,
    SSH_AUTH_SOCK) that reach the process only."""

    binds: list[BindMount] = field(default_factory=list)
    tmpfs: list[tuple[str, int]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)


def run_exec(
    worker: LocalWorker,
    vertex: Vertex,
    op: ExecOp,
    inputs: Sequence[Result],
    merged: Path,
    step: Path,
    job: Job,
) -> None:
    settings = worker.session.run
    with contextlib.ExitStack() as stack:
        mounts = prepare_mounts(worker, op, inputs, stack, step)
        with Root(merged) as view:
            try:
                uid, gid, groups = resolve_user(view, op.user)
            except CopyError as exc:
                raise StepError(str(exc)) from None
            for name in RUNTIME_TARGETS:
                _refuse_symlinks(view, name)
            cwd = op.cwd or "/"
            fd = view.open_dir(cwd.lstrip("/"), create=True)
            if fd != view.fd:
                os.close(fd)
            created = [
                name for name in ("etc/resolv.conf", "etc/hosts") if view.lstat(name) is None
            ]
            for target in mounts.targets:
                if not target.startswith("/dev/"):
                    _refuse_symlinks(view, target.lstrip("/"))
                    created += _missing(view, target.lstrip("/"))
            had_run = view.lstat("run") is not None
        if Path("/etc/resolv.conf").exists():
            mounts.binds.append(BindMount("/etc/resolv.conf", "/etc/resolv.conf"))
        mounts.binds.append(BindMount(str(write_hosts(step, op.extra_hosts)), "/etc/hosts"))
        process = process_spec(
            op, (uid, gid, groups), mounts, settings,
            init=find_init() if vertex.emulated else None,
            seccomp=worker.seccomp_profile() if op.security != "insecure" else None,
        )  # fmt: skip
        code, tail = _run(worker, vertex, process, merged, step, job, settings.step_timeout)
    with Root(merged) as view:
        for name in sorted(set(created), key=lambda n: -n.count("/")):
            _remove_stub(view, name)
        if settings.ca_certs is not None:
            view.remove(CA_PATH.lstrip("/").rpartition("/")[0])
            if not had_run and not _listing(view, "run"):
                view.remove("run")
    if code != 0:
        started = _runtime_failure(tail)
        if started is not None:  # the process never ran: not the step's own exit status
            hint = (f"\nA binary for another machine than {vertex.platform}: is its emulator "
                    "registered? `polyarch emulators` shows it; `polyarch emulators install "
                    f"--platform {vertex.platform}` registers it."
                    if "exec format error" in started else "")  # fmt: skip
            raise StepError(f"{vertex.description}: the runtime could not start the step's "
                            f"process: {started}{hint}")  # fmt: skip
        message = f"{vertex.description} exited with status {code}:\n{_shown(tail)}"
        if vertex.emulated and code in (128 + 4, 128 + 11):
            message += "\n" + _emulation_hint(vertex, code)
        raise StepError(message)


UNLIMITED: Final = 2**64 - 1  # RLIM_INFINITY, as the runtime spec takes it


def parse_ulimit(text: str) -> tuple[str, int, int]:
    """`nofile=1024:2048` (or `nofile=1024`; -1 for unlimited) as a runtime spec's rlimit."""
    name, _, values = text.partition("=")
    soft_text, _, hard_text = values.partition(":")
    soft = UNLIMITED if soft_text == "-1" else int(soft_text)
    hard = soft if not hard_text else UNLIMITED if hard_text == "-1" else int(hard_text)
    return "RLIMIT_" + name.upper(), soft, hard


def hosts_file(extra_hosts: Sequence[str]) -> str:
    """The /etc/hosts BuildKit gives a step (executor/oci/hosts.go), with `HOST=IP` entries."""
    lines = ["127.0.0.1\tlocalhost buildkitsandbox", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for entry in extra_hosts:
        host, _, address = entry.partition("=")
        lines.append(f"{address}\t{host}")
    return "\n".join(lines) + "\n"


def write_hosts(step: Path, extra_hosts: Sequence[str]) -> Path:
    path = step / "hosts"
    path.write_text(hosts_file(extra_hosts), encoding="utf-8")
    path.chmod(0o644)
    return path


def prepare_mounts(
    worker: LocalWorker,
    op: ExecOp,
    inputs: Sequence[Result],
    stack: contextlib.ExitStack,
    step: Path,
) -> StepMounts:
    """Each `--mount` of the op made real for one step; released when `stack` closes."""
    out = StepMounts()
    session = worker.session
    secrets: Path | None = None  # the step's directory of secret files, made when needed
    for index, mount in enumerate(op.mounts):
        target = mount.target
        if isinstance(mount, BindOp):
            source = inputs[mount.input]
            if source.context is not None:
                bound = _context_copy(worker, source, step / f"bind-{index}")
            else:
                root = stack.enter_context(worker.view(source.layers))
                bound = _inside(root, mount.source)
            out.binds.append(BindMount(bound, target, readonly=not mount.readwrite))
        elif isinstance(mount, CacheOp):
            seed = None
            if mount.input is not None:
                root = stack.enter_context(worker.view(inputs[mount.input].layers))
                seed = Path(_inside(root, mount.source))
            cache = stack.enter_context(worker.cache_mounts.use(
                mount.id, mount.sharing, seed, mount.mode, (mount.uid, mount.gid),
            ))  # fmt: skip
            if mount.input is None and mount.source.strip("/"):
                cache = _cache_subdir(cache, mount.source, step / f"cache-{index}", stack)
            out.binds.append(BindMount(str(cache), target, readonly=mount.readonly))
        elif isinstance(mount, TmpfsOp):
            out.tmpfs.append((target, mount.size))
        elif isinstance(mount, SecretOp):
            secret = session.secrets.get(mount.id)
            if secret is None:
                if mount.required:
                    raise StepError(f"secret {mount.id!r} is required but was not given "
                                    "(--secret id=...,src=FILE or env=VAR)")  # fmt: skip
                continue
            value = secret.read()
            if mount.env:
                out.env[mount.env] = value.decode("utf-8", "replace")
            if mount.target:
                if secrets is None:
                    secrets = secret_directory(step)
                    stack.callback(shutil.rmtree, secrets, True)
                secret_file = write_secret(secrets, value, mount.mode,
                                           (mount.uid, mount.gid))  # fmt: skip
                out.binds.append(BindMount(str(secret_file), mount.target))
                target = mount.target
            else:
                continue
        elif isinstance(mount, SshOp):
            agent = session.agents.socket(mount.id)
            if agent is None:
                if mount.required:
                    raise StepError(f"SSH agent {mount.id!r} is required but was not given "
                                    "(--ssh default, or --ssh ID=KEYFILE|SOCKET)")  # fmt: skip
                continue
            forwarder = AgentForwarder(agent, mount.mode, (mount.uid, mount.gid))
            stack.callback(forwarder.close)
            out.binds.append(BindMount(str(forwarder.path), target, readonly=False))
            out.env.setdefault("SSH_AUTH_SOCK", target)
        out.targets.append(target)
    return out


def _cache_subdir(cache: Path, source: str, staging: Path, stack: contextlib.ExitStack) -> Path:
    """`source` of a cache mount: made if missing, resolved inside the cache (an earlier step
    may have left symlinks there), and bound at `staging` from an open descriptor, so the
    runtime never follows a path a concurrent step could change."""
    staging.mkdir()
    with Root(cache) as root:
        try:
            fd = root.open_dir(source.strip("/"), create=True)
        except (OSError, PolyarchError) as exc:
            raise StepError(f"cache mount source {source!r}: {exc}") from None
        try:
            bind_directory(fd, str(staging))
        finally:
            if fd != root.fd:
                os.close(fd)
    stack.callback(unmount, str(staging))
    return staging


def _context_copy(worker: LocalWorker, source: Result, into: Path) -> str:
    """A bind from a build context: what it selects (ignore rules applied), copied, so the
    step never sees an ignored file and its writes never reach the context."""
    assert source.context is not None
    into.mkdir()
    with worker.source_root(source) as (root, ignore):
        try:
            selected = select_sources(root, list(source.context.includes), ignore)
        except CopyError as exc:
            kind = "missing-source" if isinstance(exc, MissingSourceError) else ""
            raise StepError(f"mount source: {exc}", kind=kind) from None
        with Root(into) as dest:
            for sel in selected:
                name = "data/" if sel.is_dir else "data"
                copy_sources(root, [sel], dest, name, CopyOptions(keep_owner=True), [], ignore)
    if not (into / "data").exists():
        (into / "data").mkdir()
    return str(into / "data")


@dataclass(frozen=True, slots=True)
class ImageRun:
    """A process to start in an image's filesystem, as `polyarch verify` runs images: in a
    network namespace of its own, with the image's user, directory and environment."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    emulated: bool
    hostname: str = "polyarch-verify"


@contextlib.contextmanager
def started(
    worker: LocalWorker,
    layers: Sequence[LayerRef],
    run: ImageRun,
    on_output: Callable[[str], None],
) -> Iterator[Container]:
    """The image's layers mounted (changes thrown away afterwards) and `run` started in
    them, confined as a RUN step is (seccomp, Docker's capabilities, /dev, /proc and /sys
    real directories of the rootfs); stopped and unmounted when the block ends."""
    step = Path(tempfile.mkdtemp(dir=worker.work, prefix="run-"))
    upper, workdir, merged = step / "upper", step / "work", step / "merged"
    for d in (upper, workdir, merged):
        d.mkdir()
    try:
        with worker.mounted(layers, upper, workdir, merged):
            with Root(merged) as view:
                for name in RUNTIME_TARGETS:
                    _refuse_symlinks(view, name)
                try:
                    uid, gid, groups = resolve_user(view, run.user)
                except CopyError as exc:
                    raise StepError(str(exc)) from None
            env = run.env if any(e.startswith("PATH=") for e in run.env) else (
                DEFAULT_PATH, *run.env)  # fmt: skip
            process = ProcessSpec(
                args=run.argv, env=env, cwd=run.cwd or "/", uid=uid, gid=gid,
                additional_gids=groups, hostname=run.hostname, private_network=True,
                init=find_init() if run.emulated else None,
                seccomp=oci_seccomp(worker.seccomp_profile(), os.uname().machine, CAPABILITIES),
            )  # fmt: skip
            container = worker.executor.start(process, merged, step / "bundle", on_output)
            try:
                yield container
            finally:
                container.kill()
    finally:
        shutil.rmtree(step, ignore_errors=True)


def process_spec(
    op: ExecOp,
    ids: tuple[int, int, tuple[int, ...]],
    mounts: StepMounts,
    settings: RunSettings,
    *,
    init: str | None = None,
    seccomp: Mapping[str, Any] | None = None,
) -> ProcessSpec:
    """The process an exec op asks for (the user resolved to `ids`, its mounts made real in
    `mounts`): every field of the op lands here or was refused before."""
    env: dict[str, str] = {}
    for item in op.env:
        name, _, value = item.partition("=")
        env[name] = value
    for item in op.proxy_env:
        name, _, value = item.partition("=")
        env.setdefault(name, value)
    env.update(mounts.env)
    binds = list(mounts.binds)
    if settings.ca_certs is not None:
        # The host's CA bundle, read-only, for this step only: mounted outside any layer,
        # named by the variables the common tools read; never in the config or history.
        binds.append(BindMount(str(settings.ca_certs), CA_PATH))
        for variable in CA_VARIABLES:
            env.setdefault(variable, CA_PATH)
    uid, gid, groups = ids
    privileged = op.security == "insecure"
    capabilities = host_capabilities() if privileged else None
    if privileged:
        filter_ = None  # --security=insecure: unconfined, as BuildKit's insecure mode
    elif seccomp is None:
        raise StepError("no seccomp profile: RUN steps are never run unconfined")
    else:
        filter_ = oci_seccomp(seccomp, os.uname().machine, CAPABILITIES)
    return ProcessSpec(
        shm_size=op.shm_size,
        rlimits=tuple(parse_ulimit(u) for u in op.ulimits),
        args=op.argv,
        env=tuple(f"{k}={v}" for k, v in env.items()) + (() if "PATH" in env else (DEFAULT_PATH,)),
        cwd=op.cwd or "/",
        uid=uid,
        gid=gid,
        additional_gids=groups,
        binds=tuple(binds),
        tmpfs=tuple(mounts.tmpfs),
        private_network=op.network == "none",
        privileged=privileged,
        capabilities=capabilities,
        seccomp=filter_,
        init=init,
    )


def host_capabilities() -> tuple[str, ...]:
    """Every capability this process may hand on (its bounding set)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                return capabilities_of(int(line.split()[1], 16))
    except (OSError, ValueError):
        pass
    return CAPABILITIES


def _run(
    worker: LocalWorker,
    vertex: Vertex,
    process: ProcessSpec,
    merged: Path,
    step: Path,
    job: Job,
    timeout: float | None = None,
) -> tuple[int, list[str]]:
    tail: list[str] = []
    last_output = [time.monotonic()]
    finished = threading.Event()

    def output(line: str) -> None:
        last_output[0] = time.monotonic()
        tail.append(line)
        del tail[:-TAIL_LINES]
        job.log(line)

    def watch() -> None:
        # A step under emulation can be slow and silent: say it is alive, every minute.
        started = time.monotonic()
        while not finished.wait(15):
            if time.monotonic() - last_output[0] >= SILENCE_NOTE_SECONDS:
                minutes = (time.monotonic() - started) / 60
                job.note(f"still running under emulation (qemu-{vertex.platform.qemu_name}), "
                         f"{minutes:.0f} min so far")  # fmt: skip
                last_output[0] = time.monotonic()

    watcher = threading.Thread(target=watch, daemon=True) if vertex.emulated else None
    if watcher is not None:
        watcher.start()
    try:
        with job.slot(1 if vertex.emulated else 0):
            if job.cancelled.is_set():
                raise Cancelled("cancelled before it started")
            container = worker.executor.start(process, merged, step / "bundle", output)
            deadline = time.monotonic() + timeout if timeout is not None else None
            try:
                while True:
                    code = container.poll()
                    if code is not None:
                        container.wait()
                        kind = "run emulated" if vertex.emulated else "run native"
                        cpu.charge(kind, container.cpu)
                        return code, tail
                    if job.cancelled.wait(0.05):
                        raise Cancelled("stopped: the build is being cancelled")
                    if deadline is not None and time.monotonic() > deadline:
                        raise StepError(_timed_out(vertex, timeout or 0.0, tail))
            finally:
                if container.poll() is None:
                    container.kill()
    finally:
        finished.set()


RUNTIME_FAILURE = ("runc run failed:", "unable to start container process")


def _runtime_failure(tail: list[str]) -> str | None:
    """runc's own line when it could not start the process (no shell, a binary for another
    machine, a bad working directory), else None."""
    for line in tail:
        if any(marker in line for marker in RUNTIME_FAILURE):
            said = line.split('msg="', 1)[-1] if 'msg="' in line else line  # runc's logfmt
            said = said.strip().removesuffix('"').replace('\\"', '"')
            for prefix in RUNTIME_FAILURE:
                said = said.split(prefix, 1)[-1].lstrip(": ").strip()
            return said
    return None


def _shown(tail: list[str]) -> str:
    """A step's last output lines, as its error shows them."""
    return "\n".join(f"  | {line}" for line in tail) or "  (no output)"


def _timed_out(vertex: Vertex, timeout: float, tail: list[str]) -> str:
    where = f" under emulation (qemu-{vertex.platform.qemu_name})" if vertex.emulated else ""
    return (f"{vertex.description} on {vertex.platform}{where} ran longer than the step "
            f"timeout ({timeout:g} s) and was stopped (--step-timeout):\n"
            f"{_shown(tail)}")  # fmt: skip


def _inside(root: Root, path: str) -> str:
    """The host path of `path` resolved inside `root` (symlinks followed inside it)."""
    rel = path.strip("/")
    if not rel:
        return root.path
    st = root.lstat(rel)
    if st is None:
        raise StepError(f"mount source {path!r} does not exist")
    try:
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            fd = root.open_dir(rel, create=False)
            try:
                return os.readlink(f"/proc/self/fd/{fd}")
            finally:
                if fd != root.fd:
                    os.close(fd)
        with root.parent(rel, create=False) as (fd, leaf):
            return os.path.join(os.readlink(f"/proc/self/fd/{fd}"), leaf)
    except (OSError, PolyarchError) as exc:
        raise StepError(f"mount source {path!r}: {exc}") from None


def _refuse_symlinks(view: Root, rel: str) -> None:
    """Every component of `rel` that exists must be a directory, not a symlink: the runtime
    would otherwise follow it out of the rootfs."""
    parts = [p for p in rel.split("/") if p]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        st = view.lstat(sub)
        if st is None:
            return
        if stat.S_ISLNK(st.st_mode):
            raise StepError(f"/{sub} is a symlink in the image; polyarch mounts over it only "
                            "when it is a directory")  # fmt: skip
        if i < len(parts) and not stat.S_ISDIR(st.st_mode):
            raise StepError(f"/{sub} is not a directory in the image")


def _missing(view: Root, rel: str) -> list[str]:
    """The components of `rel` that do not exist yet (the runtime will make them)."""
    parts = [p for p in rel.split("/") if p]
    out = []
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if view.lstat(sub) is None:
            out.append(sub)
    return out


def _remove_stub(view: Root, rel: str) -> None:
    """A mount point the runtime made: removed when it is still empty (not the step's work)."""
    st = view.lstat(rel)
    if st is None:
        return
    if (stat.S_ISREG(st.st_mode) and st.st_size == 0) or (
        stat.S_ISDIR(st.st_mode) and not _listing(view, rel)
    ):
        view.remove(rel)


def _listing(root: Root, rel: str) -> list[str]:
    try:
        fd = root.open_dir(rel, create=False)
    except (FileNotFoundError, NotADirectoryError, PolyarchError):
        return []
    try:
        return os.listdir(fd)
    finally:
        if fd != root.fd:
            os.close(fd)


def _emulation_hint(vertex: Vertex, code: int) -> str:
    signal_name = "SIGILL (illegal instruction)" if code == 132 else "SIGSEGV (segmentation fault)"
    return (
        f"The process was killed by {signal_name} while running under QEMU emulation of "
        f"{vertex.platform}: likely an instruction the emulator does not support. Remedies: let "
        "the stage run once natively (--build-once, or FROM --platform=$BUILDPLATFORM with a "
        "cross-compiler), build on a native node for this platform, or use another base image."
    )
