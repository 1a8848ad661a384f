"""Servers that send what they should not: a gigabyte where a few kilobytes belong (an error
body, a token, a manifest, a gzip bomb, a 401 the auth flow reads), a blob that stops half way
or trickles. polyarch refuses with its clear message, its peak memory stays under 64 MiB
(measured), and a stalled transfer fails after its idle time and is tried again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile_server import (
    MANIFEST,
    GiB,
    HostileRegistry,
    Reply,
    digest,
    error_json,
    gzip_bomb,
    huge,
    one_layer_image,
    trickle,
)

PEAK_LIMIT_MIB = 64


@pytest.fixture
def server() -> Iterator[HostileRegistry]:
    running = HostileRegistry()
    yield running
    running.stop()


# Run polyarch from a small fresh interpreter and report its peak memory: a child's peak as
# wait4 tells it includes the memory of the process it was forked from (pytest's, here).
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "polyarch", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
os.write(int(os.environ["PEAK_FD"]), str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(*args: str, timeout: float = 120) -> tuple[int, str, float]:
    """Run polyarch; its exit status, stderr and peak resident memory in MiB."""
    read, write = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True,
                              text=True, timeout=timeout, pass_fds=(write,),
                              env={**os.environ, "PEAK_FD": str(write)})  # fmt: skip
    finally:
        os.close(write)
    with os.fdopen(read) as peak:
        kib = int(peak.read() or 0)
    return done.returncode, done.stderr, kib / 1024


def image_routes(server: HostileRegistry) -> dict[str, bytes]:
    """A real little image under a/b:1 (a config and one layer)."""
    return one_layer_image(server, "hello.txt", b"hello\n" * 100_000)


def assert_bounded(status: int, stderr: str, peak: float, *said: str) -> None:
    assert status == 1, stderr
    assert "Traceback" not in stderr
    for text in said:
        assert text in stderr, stderr
    assert peak < PEAK_LIMIT_MIB, f"peak {peak:.1f} MiB"


def test_a_gigabyte_error_body_is_cut(server: HostileRegistry) -> None:
    server.route("GET", r"/v2/a/b/manifests/1",
                 lambda _h, _n: Reply(404, body=huge(), length=GiB))  # fmt: skip
    status, stderr, peak = measured("inspect", f"{server.host}/a/b:1")
    assert_bounded(status, stderr, peak, "get manifest failed", "HTTP 404")


def test_a_gigabyte_manifest_is_refused(server: HostileRegistry) -> None:
    server.route(
        "GET",
        r"/v2/a/b/manifests/1",
        lambda _h, _n: Reply(200, {"Content-Type": MANIFEST}, huge(), GiB),
    )
    status, stderr, peak = measured("inspect", f"{server.host}/a/b:1")
    assert_bounded(status, stderr, peak, "larger than 4194304 bytes")


def test_a_gzip_bomb_is_refused_as_it_inflates(server: HostileRegistry) -> None:
    bomb = gzip_bomb()
    server.route("GET", r"/v2/a/b/manifests/1", lambda _h, _n: Reply(
        200, {"Content-Type": MANIFEST, "Content-Encoding": "gzip"}, bomb))  # fmt: skip
    status, stderr, peak = measured("inspect", f"{server.host}/a/b:1")
    assert_bounded(status, stderr, peak, "larger than 4194304 bytes")


def _bearer(server: HostileRegistry) -> str:
    return f'Bearer realm="http://{server.host}/token",service="hostile"'


def test_a_gigabyte_token_is_refused(server: HostileRegistry) -> None:
    challenge = {"WWW-Authenticate": _bearer(server)}
    server.route("GET", r"/v2/", lambda _h, _n: Reply(401, challenge, b"{}"))
    server.route("GET", r"/token", lambda _h, _n: Reply(200, {}, huge(), GiB))
    status, stderr, peak = measured("inspect", f"{server.host}/a/b:1")
    assert_bounded(status, stderr, peak, "larger than 1048576 bytes")


def test_a_gigabyte_token_error_is_cut(server: HostileRegistry) -> None:
    challenge = {"WWW-Authenticate": _bearer(server)}
    server.route("GET", r"/v2/", lambda _h, _n: Reply(401, challenge, b"{}"))
    server.route("GET", r"/token", lambda _h, _n: Reply(403, {}, huge(), GiB))
    status, stderr, peak = measured("inspect", f"{server.host}/a/b:1")
    assert_bounded(status, stderr, peak, "token service", "refused")


def test_a_gigabyte_401_is_cut_where_httpx_reads_it(server: HostileRegistry) -> None:
    """The auth flow answers a 401 with a fresh token and httpx reads the 401's body first."""
    challenge = {"WWW-Authenticate": _bearer(server) + ',scope="repository:a/b:pull"'}
    server.route("GET", r"/v2/", lambda _h, _n: Reply(401, challenge, b"{}"))
    server.route("GET", r"/token", lambda _h, _n: Reply(200, {}, b'{"token":"t"}'))
    server.route("GET", r"/v2/a/b/manifests/1",
                 lambda _h, _n: Reply(401, challenge, huge(), GiB))  # fmt: skip
    status, stderr, peak = measured("inspect", f"{server.host}/a/b:1")
    assert_bounded(status, stderr, peak, "HTTP 401")


def test_a_gigabyte_blob_error_is_cut(server: HostileRegistry, tmp_path: Path) -> None:
    parts = image_routes(server)
    server.route("GET", rf"/v2/a/b/blobs/{digest(parts['layer'])}",
                 lambda _h, _n: Reply(404, body=huge(), length=GiB))  # fmt: skip
    status, stderr, peak = measured("copy", f"{server.host}/a/b:1", f"oci:{tmp_path / 'out'}")
    assert_bounded(status, stderr, peak, "HTTP 404")


def test_a_stalled_blob_fails_after_its_idle_time_and_resumes(
    server: HostileRegistry, tmp_path: Path
) -> None:
    parts = image_routes(server)
    layer = parts["layer"]
    half = len(layer) // 2

    def stall_once(handler: object, count: int) -> Reply:
        if count == 1:  # half of it, then nothing (the connection stays open)
            return Reply(200, body=iter([layer[:half], b""]), length=len(layer), pause=30)
        start = int(handler.headers["Range"].split("=")[1].split("-")[0])  # type: ignore[attr-defined]
        return Reply(206, {"Content-Range": f"bytes {start}-{len(layer) - 1}/{len(layer)}"},
                     layer[start:])  # fmt: skip

    server.route("GET", rf"/v2/a/b/blobs/{digest(layer)}", stall_once)
    started = time.monotonic()
    status, stderr, _peak = measured("--idle-timeout", "2", "copy", f"{server.host}/a/b:1",
                                     f"oci:{tmp_path / 'out'}")  # fmt: skip
    assert status == 0, stderr
    assert time.monotonic() - started < 20
    assert server.counts[f"/v2/a/b/blobs/{digest(layer)}"] == 2  # resumed once, by Range
    copied = tmp_path / "out" / "blobs" / "sha256" / digest(layer)[7:]
    assert copied.read_bytes() == layer


def test_a_trickling_blob_fails_within_the_retry_budget(
    server: HostileRegistry, tmp_path: Path
) -> None:
    parts = image_routes(server)
    layer = parts["layer"]
    server.route("GET", rf"/v2/a/b/blobs/{digest(layer)}", lambda _h, _n: Reply(
        200, body=trickle(layer), length=len(layer), pause=0.05))  # fmt: skip
    started = time.monotonic()
    status, stderr, _peak = measured("--idle-timeout", "1", "copy", f"{server.host}/a/b:1",
                                     f"oci:{tmp_path / 'out'}", timeout=90)  # fmt: skip
    assert status == 1 and "Traceback" not in stderr
    assert "stalled" in stderr, stderr
    assert time.monotonic() - started < 60  # five tries of about a second, and their waits
    assert not (tmp_path / "out" / "blobs" / "sha256" / digest(layer)[7:]).exists()


def test_an_unknown_error_body_still_names_the_status(server: HostileRegistry) -> None:
    server.route(
        "GET",
        r"/v2/a/b/manifests/1",
        lambda _h, _n: Reply(404, body=error_json("MANIFEST_UNKNOWN", "gone")),
    )
    status, stderr, _peak = measured("inspect", f"{server.host}/a/b:1")
    assert status == 1 and "gone" in stderr and "MANIFEST_UNKNOWN" in stderr
