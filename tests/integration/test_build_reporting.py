"""What a build tells scripts and people: JSON progress that stays JSON to the end (a
`result` or a `fatal` event), a failure shown with its Dockerfile lines, --step-timeout,
--annotation on the manifests and the index."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.integration.test_build import write_context
from tests.integration.test_build_surface import run
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines()]  # every line is JSON


def test_json_progress_ends_with_a_result_or_a_fatal_event(
    base: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    root = str(tmp_path / "root")
    good = write_context(tmp_path / "good", f"FROM {base}\nRUN echo hi > /hi\n", {})
    ref = registry.ref("reporting/json:1")
    done = run("build", "--root", root, "--progress", "json", "-t", ref, "--push", str(good))
    assert done.returncode == 0, done.stderr
    stream = events(done.stderr)
    assert all(e["version"] == 1 for e in stream)
    assert stream[-1]["event"] == "result" and stream[-1]["status"] == 0
    assert str(stream[-1]["containerimage.digest"]).startswith("sha256:")
    assert any(e["event"] == "done" and e.get("position") for e in stream)
    pulled = [e for e in stream if e["event"] == "progress"
              and str(e.get("description")).startswith("resolve ")]  # fmt: skip
    assert pulled and pulled[-1]["current"] == pulled[-1]["total"]
    # Unpacking the base's layers is a row of its own, not the first step's time.
    unpacked = [e for e in stream if str(e.get("description")).startswith("unpack ")]
    assert {e["event"] for e in unpacked} == {"start", "done"}
    # The push is a row of its own: its bytes, then what the registry got.
    pushed = [e for e in stream if e.get("description") == f"push {ref}"]
    assert pushed[0]["event"] == "start" and pushed[-1]["event"] == "done"
    sent = [e for e in pushed if e["event"] == "progress"]
    assert sent and sent[-1]["current"] == sent[-1]["total"] > 0
    assert "uploaded" in str(pushed[-1]["text"])

    bad = write_context(tmp_path / "bad", f"FROM {base}\nWORKDIR /w\nRUN echo oops; exit 3\n", {})
    failed = run("build", "--root", root, "--progress", "json", str(bad))
    assert failed.returncode == 1
    stream = events(failed.stderr)
    fatal = stream[-1]
    assert fatal["event"] == "fatal" and fatal["status"] == 1
    assert fatal["line"] == 3 and str(fatal["file"]).endswith("Dockerfile")
    assert fatal["platform"] == "linux/amd64" and "exited with status 3" in str(fatal["error"])


def test_a_failed_step_shows_its_dockerfile_lines(base: str, tmp_path: Path) -> None:
    bad = write_context(tmp_path / "bad", f"FROM {base} AS build\nWORKDIR /w\n"
                        "RUN echo oops; exit 3\nRUN true\n", {})  # fmt: skip
    failed = run("build", "--root", str(tmp_path / "root"), "--progress", "plain", str(bad))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    tail = failed.stderr[failed.stderr.index("error: ") :].splitlines()
    assert "exited with status 3" in tail[0]
    assert " in stage 'build' for linux/amd64" in tail
    assert " 3 | >>> RUN echo oops; exit 3" in tail and " 4 |     RUN true" in tail


def test_a_step_that_runs_too_long_is_stopped(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo started; sleep 60\n", {})
    slow = run("build", "--root", str(tmp_path / "root"), "--progress", "plain",
               "--step-timeout", "2s", str(ctx))  # fmt: skip
    assert slow.returncode == 1
    assert "ran longer than the step timeout (2 s)" in slow.stderr
    assert "on linux/amd64" in slow.stderr and "| started" in slow.stderr


def test_annotations_reach_the_manifests_and_the_index(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN echo hi > /hi\n", {})
    ref = registry.ref("reporting/annotated:1")
    done = run("build", "--root", str(tmp_path / "root"), "--platform", "linux/amd64,linux/arm64",
               "-t", ref, "--push", "--annotation", "org.example.all=yes",
               "--annotation", "index:org.example.index=idx",
               "--annotation", "manifest[linux/arm64]:org.example.arm=only",
               "--annotation", "manifest-descriptor:org.example.entry=e", str(ctx))  # fmt: skip
    assert done.returncode == 0, done.stderr
    accept = {"Accept": "application/vnd.oci.image.index.v1+json, "
              "application/vnd.oci.image.manifest.v1+json"}  # fmt: skip
    base_url = f"http://{registry.host}/v2/reporting/annotated/manifests"
    index = httpx.get(f"{base_url}/1", headers=accept).json()
    assert index["annotations"] == {"org.example.index": "idx"}
    for entry in index["manifests"]:
        if entry["platform"]["os"] == "unknown":  # the images' provenance (a push's default)
            continue
        assert entry["annotations"] == {"org.example.entry": "e"}
        manifest = httpx.get(f"{base_url}/{entry['digest']}", headers=accept).json()
        want = {"org.example.all": "yes"}
        if entry["platform"]["architecture"] == "arm64":
            want["org.example.arm"] = "only"
        assert manifest["annotations"] == want
    # An index annotation on a one-platform build is refused before anything runs.
    one = run("build", "--root", str(tmp_path / "root"), "--annotation", "index:k=v", str(ctx))
    assert one.returncode == 2 and "need an index" in one.stderr


def test_a_process_the_runtime_cannot_start_is_told_as_such(tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nRUN true\n", {})
    failed = run("build", "--root", str(tmp_path / "root"), "--progress", "plain", str(ctx))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "RUN true: the runtime could not start the step's process" in failed.stderr
    assert "exited with status" not in failed.stderr
