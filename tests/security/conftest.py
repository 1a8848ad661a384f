"""The security tests use the integration suite's registries and base image (started and made
here, on 127.0.0.1). A build's tests run in two places: as root, and rootless (as an ordinary
user made for the session, with a subordinate id range, removed after)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tools import users

from tests.integration.conftest import base, registry

__all__ = ["Place", "base", "place", "registry"]

USER = "polyarch-rl-security"


@dataclass(frozen=True)
class Place:
    """Where polyarch runs: as root, or as `user` (rootless). `space` is a directory both
    the test and that user reach, for contexts, workspaces and files the build must not
    touch."""

    user: str | None
    space: Path

    def polyarch(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self.user is None:
            command = [sys.executable, "-m", "polyarch", *args]
            return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        return users.as_user(self.user, list(args), self.space, timeout=600)


@pytest.fixture(scope="session")
def ordinary_user() -> Iterator[str]:
    if not shutil.which("newuidmap") or not shutil.which("useradd"):
        pytest.skip("rootless needs uidmap (tools/dev setup installs it) and useradd")
    users.add_user(USER)
    try:
        yield USER
    finally:
        users.remove_user(USER)


@pytest.fixture(params=["root", "rootless"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "root":
        yield Place(None, tmp_path)
        return
    user: str = request.getfixturevalue("ordinary_user")
    space = Path(tempfile.mkdtemp(prefix="polyarch-rl-sec-"))
    entry = pwd.getpwnam(user)
    os.chown(space, entry.pw_uid, entry.pw_gid)
    space.chmod(0o755)
    try:
        yield Place(user, space)
    finally:
        shutil.rmtree(space, ignore_errors=True)
