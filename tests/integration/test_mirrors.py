"""Registry mirrors for base images, against real registries: a mirror that holds the image,
one that is down, and a registry that cannot be reached."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from polyarch.api import RegistryOptions, Session
from polyarch.oci.models import Index, Manifest
from polyarch.reference import Reference
from tests.integration.test_build import write_context
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


def dead_host() -> str:
    """A loopback address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyarch", "build", "--progress", "plain",
                           *args], capture_output=True, text=True, timeout=600)  # fmt: skip


def copy(src: str, dst: str) -> None:
    with Session(RegistryOptions()) as session:
        session.copy(src, dst)


def test_blobs_come_from_the_mirror_and_a_down_mirror_is_skipped(
    base: str, registry: RunningRegistry, second_registry: RunningRegistry, tmp_path: Path
) -> None:
    origin = registry.ref(f"mirrored/{tmp_path.name}:1")
    copy(base, origin)
    copy(base, second_registry.ref(f"mirrored/{tmp_path.name}:1"))
    # The origin keeps its tag and manifests but loses its layers: only the mirror has them.
    with Session(RegistryOptions()) as session:
        ref = Reference.parse(origin)
        document = session.client.get_manifest(ref).document
        if isinstance(document, Index):  # the base is an index: its image's layers
            document = session.client.get_manifest(
                ref.with_digest(document.manifests[0].digest)).document  # fmt: skip
        assert isinstance(document, Manifest)
        layers = document.layers
    for layer in layers:
        resp = httpx.delete(f"http://{registry.host}/v2/mirrored/{tmp_path.name}/blobs/"
                            f"{layer.digest}")  # fmt: skip
        assert resp.status_code == 202
    ctx = write_context(tmp_path / "ctx", f"FROM {origin}\nRUN echo via mirror > /m\n", {})
    result = build("--root", str(tmp_path / "root"), "-t", registry.ref("mirrored/out:1"),
                   "--push", "--registry-mirror", f"{registry.host}={dead_host()}",
                   "--registry-mirror", f"{registry.host}={second_registry.host}",
                   str(ctx))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"through {second_registry.host}" in result.stderr
    assert "trying the next source" in result.stderr  # the dead one, skipped
    # Pushes never go to a mirror.
    tags = httpx.get(f"http://{second_registry.host}/v2/mirrored/out/tags/list")
    assert tags.status_code == 404 or not tags.json().get("tags")


def test_a_registry_that_cannot_be_reached_resolves_the_tag_at_the_mirror(
    base: str, second_registry: RunningRegistry, tmp_path: Path
) -> None:
    gone = dead_host()
    copy(base, second_registry.ref("offline/debian:1"))
    ctx = write_context(tmp_path / "ctx", f"FROM {gone}/offline/debian:1\nRUN true\n", {})
    result = build("--root", str(tmp_path / "root"), "--registry-mirror",
                   f"{gone}={second_registry.host}", str(ctx))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"was resolved by the mirror {second_registry.host}" in result.stderr
    # Without the mirror the same build fails with the registry's error, not a traceback.
    bare = build("--root", str(tmp_path / "root2"), str(ctx))
    assert bare.returncode == 1 and "Traceback" not in bare.stderr
