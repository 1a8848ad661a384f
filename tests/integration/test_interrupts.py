"""Ctrl-C in the middle of a transfer: `copy` (to a layout and to a registry), `push` and a
build's pull end within 2 seconds, write no tag, leave no partial blob where it could be
mistaken for a whole one, and the same command run again completes. The transfers are made
slow on purpose by a registry written for the test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile_server import HostileRegistry, MiB, Reply, digest, one_layer_image
from tests.integration.helpers import needs_emulation
from tests.integration.test_build import write_context
from tests.registry_server import RunningRegistry

LAYER_SIZE = 8 * MiB


@pytest.fixture
def server() -> Iterator[HostileRegistry]:
    running = HostileRegistry()
    yield running
    running.stop()


def serve_image(server: HostileRegistry, *, slow: bool) -> dict[str, bytes]:
    """An image under a/b:1 whose one layer (8 MiB, incompressible) comes slowly or not."""
    parts = one_layer_image(server, "random.bin", os.urandom(LAYER_SIZE), level=1,
                            env=("PATH=/b",))  # fmt: skip
    layer = parts["layer"]

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(layer), 64 * 1024):
            yield layer[start : start + 64 * 1024]

    server.route(
        "GET",
        rf"/v2/a/b/blobs/{digest(layer)}",
        lambda _h, _n: Reply(
            200, body=pieces() if slow else layer, length=len(layer), pause=0.1 if slow else 0
        ),
    )
    return parts


def interrupted(args: list[str], started: callable) -> tuple[int, float, str]:  # type: ignore[valid-type]
    """Run polyarch, send SIGINT once `started()` is true, and time how long it takes to end."""
    proc = subprocess.Popen([sys.executable, "-m", "polyarch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not started():
        if proc.poll() is not None:
            raise AssertionError(f"ended before the transfer: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "the transfer never started"
        time.sleep(0.05)
    time.sleep(0.5)  # well into the transfer
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - sent, err


def polyarch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyarch", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def asked_for(server: HostileRegistry, path: str) -> callable:  # type: ignore[valid-type]
    return lambda: server.counts.get(path, 0) > 0


def test_ctrl_c_during_copy_to_a_layout(server: HostileRegistry, tmp_path: Path) -> None:
    parts = serve_image(server, slow=True)
    layer = digest(parts["layer"])
    out = tmp_path / "out"
    status, took, err = interrupted(["copy", f"{server.host}/a/b:1", f"oci:{out}:v1"],
                                    asked_for(server, f"/v2/a/b/blobs/{layer}"))  # fmt: skip
    assert status == 130 and "interrupted" in err and "Traceback" not in err
    assert took < 2.0, f"took {took:.1f} s"
    assert not (out / "blobs" / "sha256" / layer[7:]).exists()  # no partial blob by its name
    assert "v1" not in tags(out)
    serve_image(server, slow=False)  # the same image, fast now (a fresh random layer)
    again = polyarch("copy", f"{server.host}/a/b:1", f"oci:{out}:v1")
    assert again.returncode == 0, again.stderr
    assert "v1" in tags(out)


def tags(layout: Path) -> list[str]:
    index = layout / "index.json"
    if not index.exists():
        return []
    entries = json.loads(index.read_text())["manifests"]
    return [e.get("annotations", {}).get("org.opencontainers.image.ref.name") for e in entries]


def test_ctrl_c_during_copy_to_a_registry(
    server: HostileRegistry, registry: RunningRegistry
) -> None:
    parts = serve_image(server, slow=True)
    layer = digest(parts["layer"])
    target = registry.ref("interrupted/copy:v1")
    status, took, _err = interrupted(["copy", f"{server.host}/a/b:1", target],
                                     asked_for(server, f"/v2/a/b/blobs/{layer}"))  # fmt: skip
    assert status == 130 and took < 2.0, f"took {took:.1f} s"
    missing = polyarch("inspect", target)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr  # no tag was written
    serve_image(server, slow=False)
    again = polyarch("copy", f"{server.host}/a/b:1", target)
    assert again.returncode == 0, again.stderr
    assert polyarch("inspect", target).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="building needs root")
def test_ctrl_c_during_push_and_during_a_pull(server: HostileRegistry, tmp_path: Path) -> None:
    root = tmp_path / "root"
    # A pull: the build's base image comes slowly.
    parts = serve_image(server, slow=True)
    layer = digest(parts["layer"])
    ctx = write_context(tmp_path / "ctx", f"FROM {server.host}/a/b:1\nCOPY f /f\n", {"f": "x"})
    status, took, _err = interrupted(
        ["build", "--root", str(root), "-t", f"{server.host}/x/y:1", str(ctx)],
        asked_for(server, f"/v2/a/b/blobs/{layer}"),
    )  # fmt: skip
    assert status == 130 and took < 2.0, f"took {took:.1f} s"
    assert not (root / "store" / "blobs" / "sha256" / layer[7:]).exists()
    serve_image(server, slow=False)
    built = polyarch("build", "--root", str(root), "-t", f"{server.host}/x/y:1", str(ctx))
    assert built.returncode == 0, built.stderr
    # A push: the registry takes the upload slowly.
    uploads: dict[str, int] = {}
    server.route("HEAD", r"/v2/x/y/blobs/.*", lambda _h, _n: Reply(404))
    server.route("POST", r"/v2/x/y/blobs/uploads/",
                 lambda _h, n: Reply(202, {"Location": f"/upload/{n}"}))  # fmt: skip

    def slow_put(handler: object, _n: int) -> Reply:
        uploads["put"] = uploads.get("put", 0) + 1
        handler.body(pause=0.2)  # type: ignore[attr-defined]
        return Reply(201)

    server.route("PUT", r"/upload/.*", slow_put)
    server.route("PUT", r"/v2/x/y/manifests/.*", lambda _h, _n: Reply(201))
    status, took, _err = interrupted(["push", "--root", str(root), f"{server.host}/x/y:1"],
                                     lambda: uploads.get("put", 0) > 0)  # fmt: skip
    assert status == 130 and took < 2.0, f"took {took:.1f} s"
    assert not any(p.startswith("/v2/x/y/manifests/") for p in server.counts)  # no tag

    def fast_put(handler: object, _n: int) -> Reply:
        handler.body()  # type: ignore[attr-defined]
        return Reply(201)

    server.route("PUT", r"/upload/.*", fast_put)
    pushed = polyarch("push", "--root", str(root), f"{server.host}/x/y:1")
    assert pushed.returncode == 0, pushed.stderr
    assert any(p.startswith("/v2/x/y/manifests/") for p in server.counts)


def containers(root: Path) -> list[str]:
    listed = subprocess.run(["runc", "--root", str(root / "runtime"), "list", "-q"],
                            capture_output=True, text=True)  # fmt: skip
    return listed.stdout.split()


def overlay_mounts(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mounts:
        return [line for line in mounts if str(root) in line]


@needs_emulation
def test_ctrl_c_stops_a_verify_run_and_an_emulated_step(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", f'FROM {tiny}\nCMD ["sleep", "300"]\n', {})
    ref = registry.ref("interrupted/verify:1")
    built = polyarch("build", "--root", str(root), "--platform", "linux/arm64", "-t", ref,
                     "--push", str(ctx))  # fmt: skip
    assert built.returncode == 0, built.stderr
    checking = tmp_path / "verify-root"
    status, took, err = interrupted(
        ["verify", "--root", str(checking), "--platform", "linux/arm64", ref],
        lambda: bool(checking.exists() and containers(checking)),
    )  # fmt: skip
    assert status == 130 and "Traceback" not in err
    assert took < 2.0, f"verify took {took:.1f} s to stop"
    assert containers(checking) == [] and overlay_mounts(checking) == []
    (ctx / "Dockerfile").write_text(f"FROM {tiny}\nRUN sleep 300\n")
    status, took, err = interrupted(
        ["build", "--root", str(root), "--platform", "linux/arm64", str(ctx)],
        lambda: bool(containers(root)),
    )  # fmt: skip
    assert status == 130 and "Traceback" not in err
    assert took < 2.0, f"the emulated step took {took:.1f} s to stop"
    assert containers(root) == [] and overlay_mounts(root) == []
