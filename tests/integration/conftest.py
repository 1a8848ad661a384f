"""Real registries for integration tests, started here and stopped when the session ends.

Every directory a session or module fixture makes is removed when it ends (a test's own
`tmp_path` is removed when it passes: `tmp_path_retention_policy = "failed"`), so a run leaves
the machine's disk as it found it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.git_server import (
    GitDaemon,
    ServerUnavailable,
    SshServer,
    start_git_daemon,
    start_sshd,
)
from tests.integration.helpers import remove_tree
from tests.registry_server import (
    RegistryUnavailable,
    RunningRegistry,
    start_plain,
    start_secure,
)


def _serve(start: Callable[[Path], RunningRegistry], root: Path) -> Iterator[RunningRegistry]:
    try:
        running = start(root)
    except RegistryUnavailable as exc:
        remove_tree(root)
        pytest.skip(str(exc))
    yield running
    running.stop()
    remove_tree(root)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from _serve(start_plain, tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def second_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from _serve(start_plain, tmp_path_factory.mktemp("registry2"))


@pytest.fixture(scope="session")
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from _serve(start_secure, tmp_path_factory.mktemp("secure-registry"))


@pytest.fixture(scope="session")
def base(registry: RunningRegistry) -> str:
    """The Debian base image (made from packages, cached by recipe), pushed to `registry`."""
    from tools.base_images import push

    from polyarch.api import RegistryOptions, Session

    ref = registry.ref("base/debian:bookworm")
    with Session(RegistryOptions()) as session:
        push("debian", ["amd64"], ref, session)
    return ref


@pytest.fixture(scope="session")
def emulators() -> None:
    from polyarch.api import machine_platform
    from polyarch.platform import Platform
    from polyarch.runtime import binfmt
    from tests.integration.helpers import EMULATED_PLATFORMS

    binfmt.install([Platform.parse(p) for p in EMULATED_PLATFORMS], machine_platform())


@pytest.fixture(scope="session")
def tiny(registry: RunningRegistry, emulators: None) -> str:
    """A minimal Debian (dash, coreutils, dpkg) for the four emulated platforms, pushed."""
    from tools.base_images import push

    from polyarch.api import RegistryOptions, Session
    from polyarch.platform import Platform
    from tests.integration.helpers import EMULATED_PLATFORMS

    ref = registry.ref("base/tiny:bookworm")
    arches = [Platform.parse(p).debian_arch for p in EMULATED_PLATFORMS]
    with Session(RegistryOptions()) as session:
        push("tiny", arches, ref, session)
    return ref


@pytest.fixture(scope="session")
def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed (tools/dev setup installs it)")
    return path


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's dockerd on a private socket and data root; yields the DOCKER_HOST."""
    from tests.docker_engine import EngineUnavailable, start_engine

    root = tmp_path_factory.mktemp("dockerd")
    try:
        engine = start_engine(root)
    except EngineUnavailable as exc:
        if "did not start" in str(exc):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield engine.host
    engine.stop()
    remove_tree(root)


@pytest.fixture(scope="session")
def toolbox(registry: RunningRegistry) -> str:
    """Debian with git and an SSH client, pushed to `registry`."""
    from tools.base_images import push

    from polyarch.api import RegistryOptions, Session

    ref = registry.ref("base/toolbox:bookworm")
    with Session(RegistryOptions()) as session:
        push("toolbox", ["amd64"], ref, session)
    return ref


@pytest.fixture(scope="session")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitDaemon]:
    """`git daemon` serving the bare repositories put in its base directory."""
    root = tmp_path_factory.mktemp("git-daemon")
    try:
        daemon = start_git_daemon(root)
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    yield daemon
    daemon.stop()
    remove_tree(root)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An OpenSSH server on 127.0.0.1 that lets root in with one throwaway key."""
    root = tmp_path_factory.mktemp("sshd")
    try:
        server = start_sshd(root)
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()
    remove_tree(root)


@pytest.fixture
def agent(sshd: SshServer, tmp_path: Path) -> Iterator[str]:
    """A real ssh-agent holding the key the server lets in; its socket."""
    sock = tmp_path / "agent.sock"
    process = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            subprocess.run(["sleep", "0.05"], check=False)
        subprocess.run(["ssh-add", "-q", str(sshd.client_key)], check=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(sock)})  # fmt: skip
        yield str(sock)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def named_semaphores() -> Iterator[None]:
    """A polyarch killed with SIGKILL (a node's worker, a build) leaves the named semaphores
    of its process pool in /dev/shm, as any Python killed so would: those that appeared are
    removed after the test."""
    shm = Path("/dev/shm")
    before = set(shm.glob("sem.mp-*"))
    yield
    for leftover in set(shm.glob("sem.mp-*")) - before:
        leftover.unlink(missing_ok=True)
