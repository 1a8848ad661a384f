"""RUN --mount, every type, with real builds (Debian base, runc): what each mount gives the
step, what it leaves out of the image, and what it does to the cache."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_build import built, flatten, image, polyarch, write_context

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


def tree_of(root: Path, name: str, into: Path) -> Path:
    layout, manifest, _config = image(root, name)
    return flatten(layout, manifest, into)


CACHE = """\
FROM {base}
ARG ROUND=1
RUN --mount=type=cache,target=/var/cache/demo \\
    echo "round $ROUND" >> /var/cache/demo/log && cp /var/cache/demo/log /seen
RUN --mount=type=cache,target=/var/cache/other,id=named,uid=1234,gid=1234,mode=0700 \\
    stat -c '%u:%g %a' /var/cache/other > /named-owner
"""


def test_cache_mount_persists_is_no_layer_and_keeps_the_key(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", CACHE.format(base=base), {})
    built(root, ctx, "-t", "local/cache:1", "--build-arg", "ROUND=1")
    second = built(root, ctx, "-t", "local/cache:2", "--build-arg", "ROUND=2")
    assert second["polyarch.steps"]["run"] == 2
    tree = tree_of(root, "local/cache:2", tmp_path / "t2")
    assert (tree / "seen").read_text() == "round 1\nround 2\n"  # the first build's write stayed
    assert (tree / "named-owner").read_text() == "1234:1234 700\n"
    assert not (tree / "var/cache/demo/log").exists()  # never part of a layer
    # The cache mount's contents are not part of the step's key: the same step again is cached.
    again = built(root, ctx, "-t", "local/cache:3", "--build-arg", "ROUND=1")
    assert again["polyarch.steps"]["run"] == 0
    # du lists it; prune --cache-mounts empties it.
    rows = [line.split("  ") for line in polyarch("du", "--root", str(root)).stdout.splitlines()]
    mounts = {[c for c in row if c][1].strip() for row in rows if row[0] == "cache mount"}
    assert mounts == {"/var/cache/demo", "named"}
    pruned = polyarch("prune", "--root", str(root), "--cache-mounts").stdout
    assert "2 cache mounts" in pruned
    built(root, ctx, "-t", "local/cache:4", "--build-arg", "ROUND=3", "--no-cache")
    assert (tree_of(root, "local/cache:4", tmp_path / "t4") / "seen").read_text() == "round 3\n"


LOCKED = """\
FROM {base} AS one
RUN --mount=type=cache,target=/c,sharing=locked \\
    echo start one >> /c/log && sleep 1 && echo end one >> /c/log
FROM {base} AS two
RUN --mount=type=cache,target=/c,sharing=locked \\
    echo start two >> /c/log && sleep 1 && echo end two >> /c/log
FROM {base}
COPY --from=one /etc/hostname /one
COPY --from=two /etc/hostname /two
RUN --mount=type=cache,target=/c,sharing=locked cp /c/log /log
"""


def test_locked_cache_mount_serialises_its_users(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", LOCKED.format(base=base), {})
    built(root, ctx, "-t", "local/locked:1", "-j", "4")
    log = (tree_of(root, "local/locked:1", tmp_path / "t") / "log").read_text().splitlines()
    assert sorted(log) == ["end one", "end two", "start one", "start two"]
    assert log[0].replace("start", "end") == log[1]  # one ran to its end before the other


BIND = """\
FROM {base} AS builder
RUN mkdir /out && echo from-stage > /out/made
FROM {base}
RUN --mount=type=bind,source=files,target=/src \\
    ls -A /src | sort > /listing && cat /src/a.txt > /a
RUN --mount=target=/ctx ls -A /ctx | sort > /whole
RUN --mount=type=bind,source=files,target=/src,rw \\
    echo scribble > /src/a.txt && cat /src/a.txt > /rw-saw
RUN --mount=type=bind,from=builder,source=/out,target=/b cat /b/made > /from-stage
RUN --mount=type=bind,from={base},source=/etc,target=/base-etc test -f /base-etc/os-release \\
    && echo yes > /from-image
"""


def test_bind_mounts_from_context_stage_and_image(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    files = {
        "files/a.txt": "alpha\n",
        "files/skip.log": "ignored\n",
        ".dockerignore": "files/*.log\n",
    }
    ctx = write_context(tmp_path / "ctx", BIND.format(base=base), files)
    built(root, ctx, "-t", "local/bind:1")
    tree = tree_of(root, "local/bind:1", tmp_path / "t")
    assert (tree / "listing").read_text() == "a.txt\n"  # the ignore rules hold for mounts
    assert (tree / "a").read_text() == "alpha\n"
    assert "skip.log" not in (tree / "whole").read_text()
    assert (tree / "rw-saw").read_text() == "scribble\n"
    assert (ctx / "files/a.txt").read_text() == "alpha\n"  # rw writes never reach the context
    assert (tree / "from-stage").read_text() == "from-stage\n"
    assert (tree / "from-image").read_text() == "yes\n"
    for mount_point in ("src", "ctx", "b", "base-etc"):
        assert not (tree / mount_point).exists()
    # A change to a mounted file runs the step again (the mount's files are part of its key).
    (ctx / "files/a.txt").write_text("beta\n")
    again = built(root, ctx, "-t", "local/bind:2")
    assert again["polyarch.steps"]["run"] >= 1
    assert (tree_of(root, "local/bind:2", tmp_path / "t2") / "a").read_text() == "beta\n"


TMPFS = """\
FROM {base}
RUN --mount=type=tmpfs,target=/scratch,size=2m \\
    df -k /scratch | tail -n 1 | awk '{{print $2}}' > /size && echo x > /scratch/left && \\
    grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /fstype
"""


def test_tmpfs_mount_has_its_size_and_leaves_nothing(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", TMPFS.format(base=base), {})
    built(root, ctx, "-t", "local/tmpfs:1")
    tree = tree_of(root, "local/tmpfs:1", tmp_path / "t")
    assert (tree / "size").read_text() == "2048\n"
    assert (tree / "fstype").read_text() == "tmpfs\n"
    assert not (tree / "scratch").exists()


SECRETS = """\
FROM {base}
RUN --mount=type=secret,id=token \\
    sha256sum /run/secrets/token | cut -d' ' -f1 > /file-hash && \\
    stat -c '%a %u' /run/secrets/token > /file-mode
RUN --mount=type=secret,id=token,env=TOKEN,target=/tmp/tok,mode=0440,uid=1234 \\
    printf %s "$TOKEN" | sha256sum | cut -d' ' -f1 > /env-hash && \\
    stat -c '%a %u' /tmp/tok > /target-mode
RUN --mount=type=secret,id=absent echo optional > /optional
RUN --mount=type=secret,id=fromenv,env=FROM_ENV printf %s "$FROM_ENV" | wc -c > /env-len
"""


def _found_under(path: Path, needle: bytes) -> list[str]:
    """The regular files under `path` that contain `needle` (names, symlink targets, and
    extended attributes are checked too)."""
    found = []
    for dirpath, dirs, files in os.walk(path):
        for name in files + dirs:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if needle in name.encode() or (
                stat.S_ISLNK(st.st_mode) and needle in os.readlink(full).encode()
            ):
                found.append(full)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    if needle in f.read():
                        found.append(full)
    return found


def test_secrets_reach_the_step_and_nothing_else(base: str, tmp_path: Path) -> None:
    import hashlib

    root = tmp_path / "root"
    value = "s3cr3t-" + os.urandom(8).hex()
    secret = tmp_path / "token.txt"
    secret.write_text(value)
    ctx = write_context(tmp_path / "ctx", SECRETS.format(base=base), {})
    env = {**os.environ, "MY_SECRET_VAR": value + "-env"}
    meta_args = ("--secret", f"id=token,src={secret}", "--secret", "id=fromenv,env=MY_SECRET_VAR")
    first = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
         "-t", "local/secret:1", *meta_args, str(ctx)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    tree = tree_of(root, "local/secret:1", tmp_path / "t")
    digest = hashlib.sha256(value.encode()).hexdigest()
    assert (tree / "file-hash").read_text() == digest + "\n"
    assert (tree / "env-hash").read_text() == digest + "\n"
    assert (tree / "file-mode").read_text() == "400 0\n"
    assert (tree / "target-mode").read_text() == "440 1234\n"
    assert (tree / "optional").read_text() == "optional\n"
    assert (tree / "env-len").read_text().strip() == str(len(value + "-env"))
    assert not (tree / "run/secrets/token").exists() and not (tree / "tmp/tok").exists()
    # Not in any byte polyarch wrote or printed: the store, the cache, the workspace, the log.
    for text in (value.encode(), (value + "-env").encode()):
        assert _found_under(root, text) == []
        assert text not in first.stdout.encode() + first.stderr.encode()
    # A secret is not part of the key (BuildKit's rule): another value, the same steps cached.
    secret.write_text(value + "-changed")
    again = built(root, ctx, "-t", "local/secret:2", *meta_args, env=env)
    assert again["polyarch.steps"]["run"] == 0


def test_a_missing_required_secret_fails_before_anything_runs(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    dockerfile = f"FROM {base}\nRUN touch /ran\nRUN --mount=type=secret,id=npmrc,required cat\n"
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    result = polyarch("build", "--root", str(root), "--progress", "plain", str(ctx), check=False)
    assert result.returncode == 1
    assert "secret 'npmrc' is required" in result.stderr
    assert "Dockerfile:3" in result.stderr
    # Nothing ran: no progress line for the step (the error shows the Dockerfile's lines).
    assert not [line for line in result.stderr.splitlines()
                if line.startswith("#") and "RUN touch /ran" in line]  # fmt: skip
    assert "Traceback" not in result.stderr


def test_secret_and_ssh_flags_are_checked(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\n", {})
    root = str(tmp_path / "root")
    for flags, message in [
        (("--secret", "id=x,src=/nonexistent"), "no file /nonexistent"),
        (("--secret", "id=x,bogus=1"), "--secret wants"),
        (("--ssh", "k=/nonexistent"), "neither an agent socket nor a key file"),
        (("--build-context", "x=/nonexistent"), "no such directory"),
    ]:
        result = polyarch("build", "--root", root, *flags, str(ctx), check=False)
        assert result.returncode != 0, flags
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_secrets_and_contexts_from_the_project_file(base: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    ctx = write_context(project / "app", f"FROM {base}\n"
                        "RUN --mount=type=secret,id=token,required cat /run/secrets/token > /s\n"
                        "COPY --from=shared note.txt /note\n", {})  # fmt: skip
    (project / "token.txt").write_text("from the file\n")
    (project / "shared").mkdir()
    (project / "shared" / "note.txt").write_text("shared note\n")
    (project / "polyarch.toml").write_text(
        '[build]\ncontext = "app"\nsecrets = ["id=token,src=token.txt"]\n'
        '[build.contexts]\nshared = "shared"\n'
    )
    root = tmp_path / "root"
    # Run from elsewhere: paths in the file are relative to the file, not to the caller.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(
        [sys.executable, "-m", "polyarch", "--config", str(project / "polyarch.toml"), "build",
         "--root", str(root), "-t", "local/project:1"],
        cwd=elsewhere, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    tree = tree_of(root, "local/project:1", tmp_path / "t")
    assert (tree / "s").read_text() == "from the file\n"  # a secret, written by the step itself
    assert (tree / "note").read_text() == "shared note\n"
    assert ctx.is_dir()
