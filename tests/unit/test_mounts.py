"""The local worker's mount helpers (cache directories, secrets, agents) and the parsing of
--secret, --ssh, --build-context and prune's sizes and durations."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from polyarch.api import parse_contexts, parse_secret, parse_ssh
from polyarch.errors import UsageError
from polyarch.frontend.convert import NamedContext
from polyarch.units import parse_duration, parse_size
from polyarch.worker.local.mounts import CacheMounts, SecretSource, write_secret

OWNER = (os.getuid(), os.getgid())


def test_a_new_cache_has_the_mounts_mode_and_persists(tmp_path: Path) -> None:
    caches = CacheMounts(tmp_path)
    with caches.use("/root/.npm", "shared", None, 0o700, OWNER) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        (path / "kept").write_text("x")
    with caches.use("/root/.npm", "shared", None, 0o755, OWNER) as again:
        assert again == path and (again / "kept").read_text() == "x"
    assert [cache_id for cache_id, _ in caches.entries()] == ["/root/.npm"]


def test_a_seed_is_copied_once_with_its_nodes(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "file").write_text("seeded")
    os.mkfifo(seed / "fifo")
    (seed / "link").symlink_to("/etc/passwd")
    caches = CacheMounts(tmp_path / "caches")
    with caches.use("c", "shared", seed, 0o755, OWNER) as path:
        assert (path / "file").read_text() == "seeded"
        assert stat.S_ISFIFO((path / "fifo").lstat().st_mode)
        assert os.readlink(path / "link") == "/etc/passwd"  # a link stays a link
        (path / "file").write_text("changed")
    with caches.use("c", "shared", seed, 0o755, OWNER) as path:
        assert (path / "file").read_text() == "changed"  # not seeded again


def _overlapped(caches: CacheMounts, cache_id: str, sharing: str) -> bool:
    """Whether two users of the cache were inside it at the same time."""
    inside: list[int] = []
    overlap = threading.Event()
    lock = threading.Lock()

    def user() -> None:
        with caches.use(cache_id, sharing, None, 0o755, OWNER):
            with lock:
                inside.append(1)
                if len(inside) > 1:
                    overlap.set()
            time.sleep(0.3)
            with lock:
                inside.pop()

    threads = [threading.Thread(target=user) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return overlap.is_set()


def test_shared_users_overlap_and_locked_users_take_turns(tmp_path: Path) -> None:
    caches = CacheMounts(tmp_path)
    assert _overlapped(caches, "s", "shared")
    assert not _overlapped(caches, "l", "locked")


def test_a_private_user_of_a_busy_cache_gets_a_new_one(tmp_path: Path) -> None:
    caches = CacheMounts(tmp_path)
    with caches.use("p", "private", None, 0o755, OWNER) as first:
        (first / "mine").write_text("1")
        with caches.use("p", "private", None, 0o755, OWNER) as second:
            assert second != first and not (second / "mine").exists()
            (second / "theirs").write_text("2")
        assert not second.exists()  # thrown away after the step
    with caches.use("p", "private", None, 0o755, OWNER) as again:
        assert again == first and (again / "mine").exists()


def test_secret_files_are_private_and_sources_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_secret(tmp_path / "s", b"value", 0o440, OWNER)
    assert path.read_bytes() == b"value"
    assert stat.S_IMODE(path.stat().st_mode) == 0o440
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    monkeypatch.setenv("TOKEN_VAR", "from-env")
    assert SecretSource("t", env="TOKEN_VAR").read() == b"from-env"


def test_parse_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "npmrc"
    f.write_text("x")
    assert parse_secret(f"id=npmrc,src={f}") == SecretSource("npmrc", file=f)
    assert parse_secret(f"id=npmrc,source={f},type=file") == SecretSource("npmrc", file=f)
    assert parse_secret("id=tok,env=GITHUB_TOKEN") == SecretSource("tok", env="GITHUB_TOKEN")
    assert parse_secret("id=tok,src=GITHUB_TOKEN,type=env") == SecretSource(
        "tok", env="GITHUB_TOKEN"
    )
    assert parse_secret("TOKEN") == SecretSource("TOKEN", env="TOKEN")  # a bare id: its variable
    for bad in ("src=/x", "id=a,color=red", f"id=a,src={tmp_path / 'missing'}"):
        with pytest.raises(UsageError):
            parse_secret(bad)


def test_parse_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    assert parse_ssh(f"deploy={key}").key == key
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent.sock")
    assert parse_ssh("default").socket == Path("/run/agent.sock")
    monkeypatch.delenv("SSH_AUTH_SOCK")
    with pytest.raises(UsageError, match="SSH_AUTH_SOCK is not set"):
        parse_ssh("default")
    with pytest.raises(UsageError, match="neither"):
        parse_ssh(f"x={tmp_path / 'missing'}")


def test_parse_contexts(tmp_path: Path) -> None:
    contexts, dirs = parse_contexts({
        "dir": str(tmp_path),
        "img": "docker-image://alpine:3.20",
        "lay": "oci-layout:///srv/layout:v1",
        "repo": "https://example.com/r.git#main",
    })  # fmt: skip
    assert contexts == {
        "dir": NamedContext("local", str(tmp_path)),
        "img": NamedContext("image", "alpine:3.20"),
        "lay": NamedContext("layout", "/srv/layout:v1"),
        "repo": NamedContext("git", "https://example.com/r.git#main"),
    }
    assert dirs == {"dir": tmp_path}
    for bad in ({"context": str(tmp_path)}, {"x": "https://example.com/ctx.tar.gz"},
                {"x": str(tmp_path / "missing")}):  # fmt: skip
        with pytest.raises(UsageError):
            parse_contexts(bad)


@pytest.mark.parametrize(
    ("text", "value"),
    [("100", 100), ("10GB", 10 * 1000**3), ("512MiB", 512 * 1024**2), ("1.5g", 1500 * 1000**2)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("24h", 86400), ("30m", 1800), ("1h30m", 5400),
                                             ("7d", 7 * 86400)])  # fmt: skip
def test_parse_duration(text: str, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["", "ten", "10 parsecs", "5x", "1h-"])
def test_bad_sizes_and_durations(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_size(bad)
    with pytest.raises(UsageError):
        parse_duration(bad)
