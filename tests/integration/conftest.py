"""Real registries for integration tests, started here and stopped when the session ends."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
        pytest.skip(str(exc))
    yield running
    running.stop()


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
def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed (tools/dev setup installs it)")
    return path
