"""buildx's flag surface on `polyarch build`, checked before anything runs: outputs parsed
strictly (and honoured), --iidfile, -q, BUILDKIT_PROGRESS, the emulator pre-flight check."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_build import write_context
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyarch", *args], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


def tags(registry: RunningRegistry, repository: str) -> list[str]:
    resp = httpx.get(f"http://{registry.host}/v2/{repository}/tags/list")
    return sorted(resp.json().get("tags") or []) if resp.status_code == 200 else []


def test_outputs_are_honoured_or_refused(
    base: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo hi > /hi\n", {})
    root = str(tmp_path / "root")
    # buildx's way to push: type=image,push=true (it was accepted and ignored before).
    image_ref = registry.ref("surface/image:1")
    done = run("build", "--root", root, "-t", image_ref, "-o", "type=image,push=true", str(ctx))
    assert done.returncode == 0, done.stderr
    assert tags(registry, "surface/image") == ["1"]
    # type=registry,name=... pushes to the name given, with no -t.
    named = registry.ref("surface/named:2")
    done = run("build", "--root", root, "-o", f"type=registry,name={named}", str(ctx))
    assert done.returncode == 0, done.stderr
    assert tags(registry, "surface/named") == ["2"]
    # push-by-digest: the image is in the registry, no tag moved (the CI-matrix path).
    iid = tmp_path / "iid"
    done = run("build", "--root", root, "--iidfile", str(iid), "-o",
               f"type=registry,name={registry.ref('surface/bydigest')},push-by-digest=true",
               str(ctx))  # fmt: skip
    assert done.returncode == 0, done.stderr
    digest = iid.read_text()
    assert digest.startswith("sha256:")
    assert tags(registry, "surface/bydigest") == []
    # (an index: the image and its provenance, buildx's default on a push)
    resp = httpx.head(f"http://{registry.host}/v2/surface/bydigest/manifests/{digest}",
                      headers={"Accept": "application/vnd.oci.image.index.v1+json"})  # fmt: skip
    assert resp.status_code == 200
    pushed = httpx.get(
        f"http://{registry.host}/v2/surface/bydigest/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    ).json()
    image = pushed["manifests"][0]["digest"]
    # -q prints the digest alone (the image's: unpushed, it carries no provenance).
    quiet = run("build", "--root", root, "-q", str(ctx))
    assert quiet.returncode == 0 and quiet.stdout.strip() == image and quiet.stderr == ""
    # A tag kept locally says how to push it.
    kept = run("build", "--root", root, "-t", registry.ref("surface/kept:1"), str(ctx))
    assert "polyarch push" in kept.stderr
    # verify of that tag says it exists only here, and how to push it.
    verified = run("verify", "--root", root, "--no-run", registry.ref("surface/kept:1"))
    assert verified.returncode == 1
    assert (
        f"exists only in the local store: push it with `polyarch push "
        f"{registry.ref('surface/kept:1')}`" in verified.stderr
    )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("type=image,push=true,bogus=1", "not bogus"),
        ("type=registry,compression=brotli", "compression must be gzip, zstd or uncompressed"),
        ("type=registry,compression=zstd,compression-level=99", "compression-level for zstd"),
        ("type=oci,dest=x,compression=estargz", "not eStargz"),
        ("type=local", "needs dest=PATH"),
        ("type=local,dest=-", "type=tar,dest=-"),
        ("type=oci", "needs dest=PATH"),
        ("type=oci,dest=-,tar=false", "writes a directory"),
        ("type=oci,dest={ctx}", "is a directory"),
        ("type=oci,dest=x,oci-mediatypes=false", "OCI media types only"),
        ("type=nope", "type must be"),
        ("type=registry", "pushing needs a name"),
    ],
)
def test_bad_outputs_fail_before_anything_runs(
    base: str, tmp_path: Path, output: str, message: str
) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN true\n", {})
    done = run("build", "--root", str(tmp_path / "root"), "--progress", "plain", "-o",
               output.format(ctx=ctx), str(ctx))  # fmt: skip
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "resolve" not in done.stderr and "Traceback" not in done.stderr


@contextlib.contextmanager
def _unregistered(platform: str) -> Iterator[None]:
    """The platform's emulator handler removed from the kernel, as after a reboot; registered
    again (F flag) afterwards, as the test session had it."""
    from polyarch.platform import Platform
    from polyarch.runtime import binfmt

    handler = binfmt.BINFMT / binfmt.handler_name(Platform.parse(platform))
    if handler.exists():
        handler.write_text("-1")
    try:
        yield
    finally:
        binfmt.install([Platform.parse(platform)], Platform.parse("linux/amd64"))


def test_a_platform_without_an_emulator_is_named_before_any_pull(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN true\n", {})
    with _unregistered("linux/riscv64"):
        done = run("build", "--root", str(tmp_path / "root"), "--progress", "plain",
                   "--platform", "linux/riscv64", "--no-emulator-install", str(ctx))  # fmt: skip
    assert done.returncode == 1
    assert (
        "linux/riscv64 needs QEMU to run its RUN steps on this linux/amd64 machine" in done.stderr
    )
    assert "run 'polyarch emulators install --platform linux/riscv64' as root, or leave out " \
           "--no-emulator-install" in done.stderr  # fmt: skip
    assert "Dockerfile:2" in done.stderr and "resolve" not in done.stderr


def test_a_build_as_root_registers_a_missing_emulator_and_goes_on(
    tiny: str, tmp_path: Path
) -> None:
    """The seed's author lost the emulators at each reboot; a build registers what it needs."""
    from polyarch.runtime import binfmt

    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN uname -m > /arch\n", {})
    with _unregistered("linux/s390x"):
        done = run("build", "--root", str(tmp_path / "root"), "--progress", "plain",
                   "--platform", "linux/s390x", "-o", f"type=local,dest={tmp_path / 'out'}",
                   str(ctx))  # fmt: skip
        assert done.returncode == 0, done.stderr
        notes = [line for line in done.stderr.splitlines() if "registered" in line]
        assert len(notes) == 1, done.stderr
        assert "for linux/s390x with the F flag: this build needs it (--no-emulator-install " \
               "to refuse instead)" in notes[0]  # fmt: skip
        assert "F" in (binfmt.BINFMT / "qemu-s390x").read_text()
    assert (tmp_path / "out" / "arch").read_text() == "s390x\n"


def test_windows_run_steps_are_refused_without_qemu_advice(tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a /\nRUN dir\n", {"a": "a"})
    done = run("build", "--root", str(tmp_path / "root"), "--platform", "windows/amd64",
               str(ctx))  # fmt: skip
    assert done.returncode == 1
    assert "no emulator runs windows/amd64 programs on this linux/amd64 machine: QEMU's user " \
           "mode runs Linux programs only" in done.stderr  # fmt: skip
    assert "emulators install" not in done.stderr and "Dockerfile:3" in done.stderr


def test_buildkit_progress_selects_json(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo x\n", {})
    done = run("build", "--root", str(tmp_path / "root"), str(ctx),
               env={**os.environ, "BUILDKIT_PROGRESS": "json"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert any(e["event"] == "done" and e.get("cache") == "run" for e in events)


def test_trace_has_a_slice_per_step(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN sleep 0.3\nRUN echo two > /two\n", {})
    trace = tmp_path / "trace.json"
    done = run("build", "--root", str(tmp_path / "root"), "--trace", str(trace), str(ctx))
    assert done.returncode == 0, done.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert "linux/amd64" in names
    runs = [e for e in events if e["ph"] == "X" and e["name"].startswith("RUN ")]
    assert sorted(e["name"] for e in runs) == ["RUN echo two > /two", "RUN sleep 0.3"]
    assert all(e["args"]["cache"] == "run" for e in runs)
    assert next(e for e in runs if e["name"] == "RUN sleep 0.3")["dur"] >= 300_000
    assert any(e["ph"] == "X" and e["name"].startswith("resolve ") for e in events)
    # where the CPU time went, by kind: the steps' processes, the base pulled and unpacked,
    # the layers committed; [user, kernel] seconds
    spent = json.loads(trace.read_text())["otherData"]["cpu_seconds"]
    assert sum(spent["charged"]["run native"]) > 0, spent
    assert "run emulated" not in spent["charged"]
    assert {"pull", "commit"} <= set(spent["measured"]), spent
    assert "unpack" in spent["measured"] or "unpack" in spent["charged"], spent
    assert sum(spent["total"]["self"]) >= sum(sum(v) for v in spent["measured"].values()) - 0.05
