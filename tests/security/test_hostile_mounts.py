"""Hostile RUN --mount options against a real build: a bind source that climbs out, a symlink
left in a cache mount, a secret target that is a symlink in the image, a cache seeded from a
stage path that climbs out (or holding device nodes: copied as nodes, never read). Each is
confined or refused; nothing on the host is touched. Each runs as root and rootless."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_build import flatten, image
from tests.security.conftest import Place

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc"),
    reason="building needs root and runc",
)


def build(place: Place, root: Path, ctx: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return place.polyarch("build", "--root", str(root), "--progress", "plain", *args, str(ctx))


def context(path: Path, dockerfile: str) -> Path:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text(dockerfile)
    (path / "inside.txt").write_text("in the context\n")
    return path


def tree(root: Path, name: str, into: Path) -> Path:
    layout, manifest, _config = image(root, name)
    return flatten(layout, manifest, into)


def test_a_bind_source_climbing_out_stays_in_the_context(
    place: Place, tmp_path: Path, base: str
) -> None:
    (place.space / "outside.txt").write_text("host file next to the context\n")
    ctx = context(place.space / "ctx", f"FROM {base}\n"
                  "RUN --mount=type=bind,source=../..,target=/m ls -A /m | sort > /seen\n"
                  "RUN --mount=type=bind,source=../outside.txt,target=/o cat /o > /o-seen || "
                  "echo refused > /o-seen\n")  # fmt: skip
    result = build(place, place.space / "root", ctx, "-t", "local/climb:1")
    if result.returncode == 0:
        t = tree(place.space / "root", "local/climb:1", tmp_path / "t")
        assert (t / "seen").read_text() == "Dockerfile\ninside.txt\n"  # the context's root
        assert "host file" not in (t / "o-seen").read_text()
    else:
        assert "outside.txt" in result.stderr and "Traceback" not in result.stderr


def test_a_symlink_left_in_a_cache_mount_points_inside_the_step(
    place: Place, tmp_path: Path, base: str
) -> None:
    victim = place.space / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep\n")
    if place.user is not None:  # the user's own: a rootless step that got out could write
        for path in (victim, victim / "keep"):
            shutil.chown(path, place.user, place.user)
    dockerfile = (
        f"FROM {base}\n"
        f"RUN --mount=type=cache,target=/c ln -sfn {victim} /c/sub && ln -sfn / /c/top\n"
        "RUN --mount=type=cache,target=/s,source=sub touch /s/owned && ls -A /s > /sub-list\n"
        "RUN --mount=type=cache,target=/t,source=top/etc test ! -e /t/os-release "
        "&& echo in > /t-ok\n"
        "RUN --mount=type=cache,target=/c rm -rf /c/sub/keep /c/top/tmp/x; echo done > /done\n"
    )
    ctx = context(place.space / "ctx", dockerfile)
    result = build(place, place.space / "root", ctx, "-t", "local/cachelink:1")
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]  # nothing made or removed
    assert (victim / "keep").read_text() == "keep\n"
    assert result.returncode == 0, result.stderr
    # The links were resolved inside the cache mount, never on the host.
    t = tree(place.space / "root", "local/cachelink:1", tmp_path / "t")
    assert (t / "sub-list").read_text() == "owned\n"
    assert (t / "t-ok").read_text() == "in\n"  # `/` in the cache is the cache's root


def test_a_secret_target_that_is_a_symlink_in_the_image_is_refused(place: Place, base: str) -> None:
    host_dir = place.space / "host-secrets"
    host_dir.mkdir()
    if place.user is not None:  # the user's own directory: a rootless step could write there
        shutil.chown(host_dir, place.user, place.user)
    secret = place.space / "secret.txt"
    secret.write_text("value\n")
    dockerfile = (
        f"FROM {base}\n"
        f"RUN mkdir -p /run && ln -s {host_dir} /run/secrets\n"
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok\n"
    )
    ctx = context(place.space / "ctx", dockerfile)
    result = build(place, place.space / "root", ctx, "--secret", f"id=tok,src={secret}")
    assert list(host_dir.iterdir()) == []
    assert result.returncode == 1
    assert "symlink" in result.stderr and "Dockerfile:3" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cache_seeded_from_a_stage_path_climbing_out_stays_in_the_stage(
    place: Place, tmp_path: Path, base: str
) -> None:
    # No device node can be made in a user namespace (rootless): there, the FIFO alone.
    node, check = ("mknod /data/zero c 1 5 && ", "test -c /d/zero && ") if place.user is None \
        else ("", "")  # fmt: skip
    dockerfile = (
        f"FROM {base} AS seed\n"
        f"RUN mkdir -p /data && echo seeded > /data/marker && {node}mkfifo /data/fifo\n"
        f"FROM {base}\n"
        "RUN --mount=type=cache,target=/c,from=seed,source=../../../../.. ls /c > /listing\n"
        "RUN --mount=type=cache,target=/d,id=d2,from=seed,source=../../data cat /d/marker > /m "
        f"&& {check}test -p /d/fifo && echo nodes > /nodes\n"
    )
    ctx = context(place.space / "ctx", dockerfile)
    result = build(place, place.space / "root", ctx, "-t", "local/seed:1")
    assert result.returncode == 0, result.stderr
    t = tree(place.space / "root", "local/seed:1", tmp_path / "t")
    listing = (t / "listing").read_text().split()
    assert "data" in listing and "etc" in listing  # the stage's root, not the host's
    assert (t / "m").read_text() == "seeded\n"
    assert (t / "nodes").read_text() == "nodes\n"  # a seed's device nodes are made, not read
