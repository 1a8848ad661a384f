"""Rootless: an ordinary user with a subordinate id range (made for the test, removed after)
builds, pushes, verifies and cleans with no sudo; the images are those a root build makes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tools import users
from tools.users import add_user, has_range, in_namespace, python_reachable, remove_user

from tests.git_server import start_sshd
from tests.integration.helpers import needs_emulation, polyarch
from tests.integration.test_against_buildah import CASES, case_flags, render
from tests.integration.test_build import flatten, image
from tests.integration.test_nodes import env_for, events
from tests.registry_server import RunningRegistry

pytestmark = [
    needs_emulation,
    pytest.mark.skipif(not shutil.which("newuidmap") or not shutil.which("useradd"),
                       reason="rootless needs uidmap (tools/dev setup installs it) and useradd"),
]  # fmt: skip
USER = "polyarch-rl-test"
BARE = "polyarch-rl-noids"
BOTH = "linux/amd64,linux/arm64"


@pytest.fixture(scope="module")
def user() -> Iterator[str]:
    """An ordinary user with the subordinate ranges useradd gives (and, for the message
    test, one without any)."""
    add_user(USER)
    add_user(BARE, "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", ids=None)
    assert has_range(USER) and not has_range(BARE)
    try:
        yield USER
    finally:
        remove_user(USER)
        remove_user(BARE)


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
    return users.as_user(name, args, cwd, env={"SOURCE_DATE_EPOCH": "1700000000"})


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
         "--platform", BOTH, "--metadata-file", str(tmp_path / "meta.json"), "-t", ref,
         "--provenance=mode=min", str(ctx)],  # the push's default provenance, unpushed
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    root = json.loads((tmp_path / "meta.json").read_text())
    # Owners as the Dockerfile asked (1000, 1234:5678), never the user's or an overflow id:
    # the same bytes, the same digests (the provenance too).
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


def test_a_result_file_the_user_cannot_write_is_refused_first(
    user: str, workdir: Path, tiny: str
) -> None:
    context(workdir, tiny, user)
    locked = workdir / "root-only"
    locked.mkdir(mode=0o755)  # root's: the user cannot make a file there
    done = as_user(user, ["build", "--progress", "plain", "--metadata-file",
                          str(locked / "meta.json"), "ctx"], workdir)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--metadata-file" in done.stderr and "permission denied" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "#1 " not in done.stderr  # nothing was built


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


def test_steps_have_the_hosts_network_or_none(user: str, workdir: Path, tiny: str) -> None:
    ctx = context(workdir, tiny, user)
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny}\nRUN grep -c : /proc/net/dev > /host-net\n"
        "RUN --network=none grep -c : /proc/net/dev > /no-net\n"
    )
    done = as_user(user, ["build", "--output", "type=local,dest=out", "ctx"], workdir)
    assert done.returncode == 0, done.stderr
    interfaces = sum(":" in line for line in Path("/proc/net/dev").read_text().splitlines())
    assert (workdir / "out" / "host-net").read_text() == f"{interfaces}\n"
    assert (workdir / "out" / "no-net").read_text() == "1\n"  # loopback only
    assert (workdir / "out" / "no-net").stat().st_uid == pwd.getpwnam(user).pw_uid


def test_the_copy_snapshotter_gives_the_same_image_rootless(
    user: str, workdir: Path, tiny: str, tmp_path: Path
) -> None:
    """Where overlayfs cannot be mounted in the user namespace (kernels before 5.11), layers
    are copied: the same image, whiteouts and setuid bits included."""
    ctx = context(workdir, tiny, user)
    tool = ctx / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny}\nRUN rm -rf /etc/issue /usr/share/doc && echo gone > /gone\n"
        "COPY --chown=5:5 tool /tool\nRUN chmod g+s /tool && chown 7 /gone && chmod 4700 /gone\n"
    )
    digests = {}
    for snapshotter in ("overlay", "copy"):
        env = {"SOURCE_DATE_EPOCH": "1", "POLYARCH_SNAPSHOTTER": snapshotter}
        done = users.as_user(user, ["build", "--root", f"root-{snapshotter}", "-t", "local/s:1",
                                    "--metadata-file", f"{snapshotter}.json", "ctx"], workdir,
                             env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        meta = json.loads((workdir / f"{snapshotter}.json").read_text())
        digests[snapshotter] = meta["containerimage.digest"]
    assert digests["overlay"] == digests["copy"]
    layout, manifest, _config = image(workdir / "root-copy", "local/s:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert not (tree / "etc" / "issue").exists() and not (tree / "usr" / "share" / "doc").exists()
    made = (tree / "tool").stat()
    assert (stat.S_IMODE(made.st_mode), made.st_uid, made.st_gid) == (0o6755, 5, 5)
    gone = (tree / "gone").stat()
    assert (stat.S_IMODE(gone.st_mode), gone.st_uid) == (0o4700, 7)


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


def test_a_node_reached_as_an_ordinary_user_builds_rootless(
    user: str, workdir: Path, tiny: str, tmp_path: Path
) -> None:
    """A builder's node is polyarch reached over SSH as the ordinary user: its worker enters
    the user namespace itself; the arm64 image it builds is the one a root build makes."""
    ctx = context(workdir, tiny, user)
    served = Path(tempfile.mkdtemp(prefix="polyarch-rl-sshd-"))  # the user reads its key list
    served.chmod(0o755)
    with python_reachable() as lines:
        sshd = start_sshd(served, wrap=lambda command: in_namespace(lines, command))
        try:
            (served / "authorized_keys").chmod(0o644)
            env = {**env_for(tmp_path, sshd), "SOURCE_DATE_EPOCH": "1700000000"}
            node = f"ssh://{user}@127.0.0.1:{sshd.port}"
            made = subprocess.run(
                [sys.executable, "-m", "polyarch", "builder", "create", "rl", "--node",
                 f"arm={node}", "--platform", "linux/arm64", "--node-command",
                 f"{sys.executable} -m polyarch", "--use"],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
            built = subprocess.run(
                [sys.executable, "-m", "polyarch", "build", "--root", str(tmp_path / "farm"),
                 "--platform", BOTH, "--progress", "json", "--metadata-file",
                 str(tmp_path / "farm.json"), str(ctx)],
                capture_output=True, text=True, env=env, timeout=900, check=False,
            )  # fmt: skip
        finally:
            sshd.stop()
            shutil.rmtree(served, ignore_errors=True)
    assert built.returncode == 0, built.stderr
    stream = events(built.stderr)
    on_node = {e["platform"] for e in stream if e.get("node") == "arm" and e.get("step")}
    assert on_node == {"linux/arm64"}, [e["text"] for e in stream if e["event"] == "note"]
    data = Path(pwd.getpwnam(user).pw_dir) / ".local" / "share" / "polyarch"
    assert data.stat().st_uid == pwd.getpwnam(user).pw_uid  # the node's workspace, the user's
    here = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(tmp_path / "here"),
         "--platform", BOTH, "--metadata-file", str(tmp_path / "here.json"), str(ctx)],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert here.returncode == 0, here.stderr
    farm = json.loads((tmp_path / "farm.json").read_text())
    local = json.loads((tmp_path / "here.json").read_text())
    assert farm["polyarch.platforms"] == local["polyarch.platforms"]


@pytest.fixture(scope="module")
def root_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace for the root builds of the corpus (the base unpacked once), as the
    user's own workspace is one for all its builds."""
    return tmp_path_factory.mktemp("corpus-root")


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_the_buildah_corpus_builds_the_same_image_rootless(
    user: str, workdir: Path, base: str, case: Path, tmp_path: Path, root_workspace: Path
) -> None:
    """Each case that test_against_buildah holds polyarch's root build to, built by the
    user: the same image digest as the root build (the same files, owners and modes)."""
    ctx = render(case, base, workdir / "ctx")
    entry = pwd.getpwnam(user)
    for path in (ctx, *ctx.rglob("*")):  # the user's checkout
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    flags = case_flags(case, ctx)
    common = ["build", "--progress", "plain", "-t", f"cmp/{case.name}:1", *flags]
    ours = as_user(user, [*common, "--output", f"type=oci,dest={workdir / 'ours'},tar=false",
                          str(ctx)], workdir)  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run(
        [sys.executable, "-m", "polyarch", *common, "--root", str(root_workspace), "--output",
         f"type=oci,dest={tmp_path / 'root-out'},tar=false", str(ctx)],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert theirs.returncode == 0, theirs.stderr
    rootless = json.loads((workdir / "ours" / "index.json").read_text())["manifests"]
    root = json.loads((tmp_path / "root-out" / "index.json").read_text())["manifests"]
    assert [m["digest"] for m in rootless] == [m["digest"] for m in root]


def test_release_push_builders_du_and_prune_as_the_user(
    user: str, workdir: Path, tiny: str, registry: RunningRegistry
) -> None:
    """The rest of the commands a user runs, with no sudo: a release versioned from git
    (built, pushed, verified, tagged), push of a kept image, a builder in the user's own
    configuration, du and prune of the user's workspace."""
    ctx = context(workdir, tiny, user)
    (ctx / "polyarch.toml").write_text(
        f'[image]\nregistry = "{registry.host}"\nname = "rl/app"\nbase_version = "1.2.0"\n'
        f'[build]\nplatforms = ["linux/amd64", "linux/arm64"]\n'
    )
    shutil.chown(ctx / "polyarch.toml", user, user)
    git = ["runuser", "-u", user, "--", "git", "-C", str(ctx), "-c", "user.name=t",
           "-c", "user.email=t@example.org"]  # fmt: skip
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "one"], ["tag", "1.2.0"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    released = users.as_user(user, ["release", "--run", 'test "$(cat /arch)" = "$(uname -m)"'],
                             ctx)  # fmt: skip
    assert released.returncode == 0, released.stdout + released.stderr
    ref = registry.ref("rl/app:1.2.0")
    assert f"released {ref}" in released.stdout, released.stdout
    kept = users.as_user(user, ["build", "-t", "local/kept:1", "."], ctx)
    assert kept.returncode == 0, kept.stderr
    pushed = users.as_user(user, ["push", "local/kept:1", registry.ref("rl/kept:1")], ctx)
    assert pushed.returncode == 0, pushed.stderr
    assert polyarch("verify", "--no-run", registry.ref("rl/kept:1")).returncode == 0
    made = users.as_user(user, ["builder", "create", "mine", "--node", "here=local", "--use"],
                         workdir)  # fmt: skip
    assert made.returncode == 0, made.stderr
    listed = users.as_user(user, ["builder", "ls"], workdir)
    assert listed.returncode == 0 and "mine" in listed.stdout, listed.stderr
    kept_in = Path(pwd.getpwnam(user).pw_dir) / ".config" / "polyarch" / "builders.json"
    assert "mine" in kept_in.read_text() and kept_in.stat().st_uid == pwd.getpwnam(user).pw_uid
    used = users.as_user(user, ["du"], workdir)
    assert used.returncode == 0, used.stderr
    pruned = users.as_user(user, ["prune", "-a", "-f"], workdir)
    assert pruned.returncode == 0, pruned.stderr
    after = users.as_user(user, ["images"], workdir)
    assert "local/kept:1" in after.stdout  # tagged images stay; the rest is gone
    removed = users.as_user(user, ["builder", "rm", "mine"], workdir)
    assert removed.returncode == 0, removed.stderr


def test_a_layout_the_user_cannot_write_is_read(user: str, workdir: Path, tmp_path: Path) -> None:
    """An OCI layout of root's (readable, not writable by the user): inspected and copied from
    without a write to it."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (ctx / "f").write_text("f\n")
    layout = workdir / "roots-layout"
    made = polyarch("build", "--root", str(tmp_path / "root"), "-t", "local/ro:1", "--output",
                    f"type=oci,dest={layout},tar=false", str(ctx))  # fmt: skip
    assert made.returncode == 0, made.stderr
    before = sorted(str(p.relative_to(layout)) for p in layout.rglob("*"))
    shown = as_user(user, ["inspect", f"oci:{layout}:1"], workdir)
    assert shown.returncode == 0 and "Digest:" in shown.stdout, shown.stderr
    copied = as_user(user, ["copy", f"oci:{layout}:1", f"oci:{workdir / 'mine'}:1"], workdir)
    assert copied.returncode == 0, copied.stderr
    assert sorted(str(p.relative_to(layout)) for p in layout.rglob("*")) == before
