"""Rootless: an ordinary user with a subordinate id range (made for the test, removed after)
builds, pushes, verifies and cleans with no sudo; the images are those a root build makes."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import needs_emulation, polyarch
from tests.registry_server import RunningRegistry

pytestmark = [
    needs_emulation,
    pytest.mark.skipif(not shutil.which("newuidmap") or not shutil.which("useradd"),
                       reason="rootless needs uidmap (tools/dev setup installs it) and useradd"),
]  # fmt: skip
USER = "polyarch-rl-test"
BARE = "polyarch-rl-noids"
BOTH = "linux/amd64,linux/arm64"


def _add_user(name: str, *extra: str) -> None:
    subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", *extra, name], check=True)


def _remove_user(name: str) -> None:
    subprocess.run(["userdel", "-r", "-f", name], capture_output=True, check=False)
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        kept = [line for line in lines if not line.startswith(f"{name}:")]
        if kept != lines:
            path.write_text("".join(kept))


@pytest.fixture(scope="module")
def user() -> Iterator[str]:
    """An ordinary user with the subordinate ranges useradd gives (and, for the message
    test, one without any)."""
    _add_user(USER)
    _add_user(BARE, "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0")
    subuid = Path("/etc/subuid")
    if f"{USER}:" not in (subuid.read_text() if subuid.exists() else ""):
        # useradd gives ranges only where /etc/subuid exists: as an administrator would.
        ids = "300000-365535"
        subprocess.run(["usermod", "--add-subuids", ids, "--add-subgids", ids, USER], check=True)
    assert f"{USER}:" in subuid.read_text()
    try:
        yield USER
    finally:
        _remove_user(USER)
        _remove_user(BARE)


@pytest.fixture
def workdir(user: str) -> Iterator[Path]:
    """A directory the user owns (pytest's are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="polyarch-rl-"))
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`polyarch ARGS` run by `name`, with no privilege. This test's Python may live where
    others cannot go (a root-only home): in a mount namespace of the test's own, that path is
    made passable (its blocked directory replaced by a tmpfs holding just the way through),
    nothing on the host changes."""
    python = Path(sys.executable)
    real = python.resolve()
    script = ["set -e"]
    blocked = next((p for p in reversed(real.parents) if not p.stat().st_mode & 0o001), None)
    hold = Path(tempfile.mkdtemp(prefix="polyarch-rl-python-"))
    if blocked is not None:
        child = blocked / real.relative_to(blocked).parts[0]
        script += [f"mount --bind {shlex.quote(str(child))} {hold}",
                   f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(str(blocked))}",
                   f"mkdir -p {shlex.quote(str(child))}",
                   f"mount --bind {hold} {shlex.quote(str(child))}"]  # fmt: skip
    home = pwd.getpwnam(name).pw_dir
    command = ["runuser", "-u", name, "--", "env", f"HOME={home}", f"PATH={os.environ['PATH']}",
               "SOURCE_DATE_EPOCH=1700000000", str(python), "-m", "polyarch", *args]  # fmt: skip
    script.append(f"cd {shlex.quote(str(cwd))} && exec {shlex.join(command)}")
    try:
        shell = ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]
        return subprocess.run(shell, capture_output=True, text=True, timeout=900)
    finally:
        hold.rmdir()


def context(workdir: Path, tiny: str, user: str) -> Path:
    ctx = workdir / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny}\n"
        "RUN mkdir /data && chown 1000:1000 /data && echo owned > /data/f && chown 1000 /data/f\n"
        "COPY --chown=1234:5678 Dockerfile /df\n"
        "RUN uname -m > /arch\n"
    )
    entry = pwd.getpwnam(user)
    for path in (ctx, ctx / "Dockerfile"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return ctx


def test_a_rootless_build_is_the_root_build(
    user: str, workdir: Path, tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = context(workdir, tiny, user)
    ref = registry.ref("rootless/app:1")
    built = as_user(user, ["build", "--platform", BOTH, "-t", ref, "--push", "--metadata-file",
                           str(workdir / "meta.json"), "ctx"], workdir)  # fmt: skip
    assert built.returncode == 0, built.stderr
    rootless = json.loads((workdir / "meta.json").read_text())
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    done = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(tmp_path / "root"),
         "--platform", BOTH, "--metadata-file", str(tmp_path / "meta.json"), str(ctx)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = json.loads((tmp_path / "meta.json").read_text())
    # Owners as the Dockerfile asked (1000, 1234:5678), never the user's or an overflow id:
    # the same bytes, the same digests.
    assert rootless["containerimage.digest"] == root["containerimage.digest"]
    assert rootless["polyarch.platforms"] == root["polyarch.platforms"]
    data = Path(pwd.getpwnam(user).pw_dir) / ".local" / "share" / "polyarch"
    assert data.is_dir() and data.stat().st_mode & 0o777 == 0o700
    assert data.stat().st_uid == pwd.getpwnam(user).pw_uid

    checked = as_user(user, ["verify", "--platform", BOTH, "--run",
                             'test "$(cat /arch)" = "$(uname -m)" && stat -c %u:%g /data/f /df',
                             "--show-output", ref], workdir)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("| 1000:0") == 2 and checked.stdout.count("| 1234:5678") == 2
    cleaned = as_user(user, ["clean", ref.rsplit(":", 1)[0]], workdir)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not any((data / "snapshots").iterdir())  # subordinate-owned files removed too
    doctor = as_user(user, ["doctor", "--format", "json", "--platform", BOTH], workdir)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["rootless"]["level"] == "ok", checks["rootless"]


def test_a_step_cannot_reach_the_users_files(user: str, workdir: Path, tiny: str) -> None:
    home = Path(pwd.getpwnam(user).pw_dir)
    secret = home / "secret.txt"
    secret.write_text("the user's own\n")
    ctx = context(workdir, tiny, user)
    (ctx / "Dockerfile").write_text(f"FROM {tiny}\nRUN cat {secret}\n")
    refused = as_user(user, ["build", "--progress", "plain", "ctx"], workdir)
    assert refused.returncode == 1
    assert "No such file or directory" in refused.stderr
    assert "the user's own" not in refused.stderr
    secret.unlink()


def test_without_a_subordinate_range_the_fix_is_named(user: str, workdir: Path) -> None:
    del user
    os.chown(workdir, pwd.getpwnam(BARE).pw_uid, -1)
    done = as_user(BARE, ["build", "."], workdir)
    assert done.returncode == 1
    assert f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {BARE}" in (
        done.stderr)  # fmt: skip
    assert "Traceback" not in done.stderr


def test_an_ordinary_user_sees_the_emulators_an_administrator_registered(
    user: str, workdir: Path
) -> None:
    shown = as_user(user, ["emulators", "--platform", "linux/arm64", "--format", "json"], workdir)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["state"] == "emulated"
    refused = as_user(user, ["emulators", "install", "--platform", "linux/mips64le"], workdir)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert polyarch("emulators", "--platform", "linux/arm64").returncode == 0
