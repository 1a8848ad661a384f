"""The build cache exported to a registry (and a directory) and imported on a fresh workspace:
real builds, a real Distribution registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import needs_emulation
from tests.integration.test_build import write_context
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)

DOCKERFILE = """\
FROM {base} AS deps
COPY a.txt /a.txt
RUN cat /a.txt > /deps-made && echo deps > /marker
FROM {base}
COPY --from=deps /deps-made /deps-made
COPY b.txt /b.txt
RUN cat /b.txt /deps-made > /final
"""


def build(root: Path, ctx: Path, *args: str, check: bool = True) -> dict[str, Any]:
    meta = ctx.parent / f"meta-{os.urandom(4).hex()}.json"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
         "--metadata-file", str(meta), *args, str(ctx)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    if not check:
        return {"returncode": result.returncode, "stderr": result.stderr}
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(meta.read_text())
    data["stderr"] = result.stderr
    data["stdout"] = result.stdout
    return data


def _entry_layer(root: Path, description: str) -> str:
    """The hex digest of the layer the local cache of `root` records for a step."""
    import sqlite3

    db = sqlite3.connect(root / "cache.db")
    try:
        for (result,) in db.execute("SELECT result FROM steps WHERE description LIKE ?",
                                    (f"%{description}%",)):  # fmt: skip
            return str(json.loads(result)["digest"]).split(":")[1]
    finally:
        db.close()
    raise AssertionError(f"no cache entry for {description!r}")


@pytest.fixture
def ctx(base: str, tmp_path: Path) -> Path:
    return write_context(tmp_path / "ctx", DOCKERFILE.format(base=base),
                         {"a.txt": "alpha\n", "b.txt": "beta\n"})  # fmt: skip


def test_export_then_import_on_a_fresh_workspace_runs_nothing(
    registry: RunningRegistry, ctx: Path, tmp_path: Path, base: str
) -> None:
    cache = registry.ref(f"cache/{tmp_path.name}:buildcache")
    first = build(tmp_path / "one", ctx, "--cache-to", f"type=registry,ref={cache},mode=max")
    assert first["polyarch.steps"]["run"] == 5  # two RUN and three COPY steps
    assert "exported the build cache" in first["stdout"]
    # A fresh workspace, as a CI runner: every step from the imported cache, the same digest.
    second = build(tmp_path / "two", ctx, "--cache-from", f"type=registry,ref={cache}")
    assert second["polyarch.steps"]["run"] == 0
    assert second["polyarch.steps"]["imported"] == 5
    assert second["containerimage.digest"] == first["containerimage.digest"]
    assert "CACHED (imported from" in second["stderr"]
    # Lazy: the deps stage's layer is not in the final image, so it was never fetched.
    deps_layer = _entry_layer(tmp_path / "one", "RUN cat /a.txt")
    assert (tmp_path / "one" / "store" / "blobs" / "sha256" / deps_layer).is_file()
    assert not (tmp_path / "two" / "store" / "blobs" / "sha256" / deps_layer).exists()
    # What the import gave stays in that workspace's cache (as BuildKit keeps it): without
    # --cache-from, nothing runs, and the deps stage's layer is still not fetched...
    kept = build(tmp_path / "two", ctx)
    assert kept["polyarch.steps"]["run"] == 0
    assert kept["containerimage.digest"] == first["containerimage.digest"]
    assert not (tmp_path / "two" / "store" / "blobs" / "sha256" / deps_layer).exists()
    # ...until a step runs on top of it: then it is fetched from the cache it came from.
    dockerfile = (ctx / "Dockerfile").read_text()
    (ctx / "Dockerfile").write_text(dockerfile.replace(
        "echo deps > /marker\n", "echo deps > /marker\nRUN echo more >> /marker\n"))  # fmt: skip
    grown = build(tmp_path / "two", ctx)
    assert grown["polyarch.steps"]["run"] == 4  # the new RUN and the final stage after it
    assert (tmp_path / "two" / "store" / "blobs" / "sha256" / deps_layer).is_file()
    (ctx / "Dockerfile").write_text(dockerfile)
    del base
    # A changed file re-runs only the steps after it.
    (ctx / "b.txt").write_text("changed\n")
    third = build(tmp_path / "three", ctx, "--cache-from", cache)
    assert third["polyarch.steps"]["run"] == 2  # COPY b.txt and the RUN after it
    assert "RUN cat /b.txt /deps-made > /final" in third["stderr"]


def test_mode_min_exports_only_the_final_images_steps(
    registry: RunningRegistry, ctx: Path, tmp_path: Path
) -> None:
    cache = registry.ref(f"cache/{tmp_path.name}:min")
    build(tmp_path / "one", ctx, "--cache-to", f"type=registry,ref={cache}")
    fresh = build(tmp_path / "two", ctx, "--cache-from", cache)
    # The deps stage's steps are not in the final image: not exported, so they run again;
    # the final stage's steps hit (their keys are the same: deps gives the same bytes).
    assert fresh["polyarch.steps"]["run"] == 2
    assert "RUN cat /a.txt > /deps-made" in fresh["stderr"]


def test_local_cache_round_trip_and_a_corrupted_layer_is_ignored(ctx: Path, tmp_path: Path) -> None:
    directory = tmp_path / "cache-dir"
    first = build(tmp_path / "one", ctx, "--cache-to", f"type=local,dest={directory},mode=max")
    again = build(tmp_path / "two", ctx, "--cache-from", f"type=local,src={directory}")
    assert again["polyarch.steps"]["run"] == 0
    assert again["containerimage.digest"] == first["containerimage.digest"]
    # Damage every layer blob in the exported cache: each hit is dropped, with a warning, and
    # the steps run again; the image is still right.
    index = json.loads((directory / "index.json").read_text())
    manifest = json.loads((directory / "blobs" / "sha256" /
                           index["manifests"][0]["digest"].split(":")[1]).read_text())  # fmt: skip
    for layer in manifest["layers"]:
        blob = directory / "blobs" / "sha256" / layer["digest"].split(":")[1]
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    damaged = build(tmp_path / "three", ctx, "--cache-from", f"type=local,src={directory}")
    assert "ignored" in damaged["stderr"]
    assert damaged["polyarch.steps"]["run"] == 5
    assert damaged["containerimage.digest"] == first["containerimage.digest"]


@needs_emulation
def test_matrix_exports_to_one_reference_keep_each_others_entries(
    registry: RunningRegistry, tiny: str, tmp_path: Path
) -> None:
    """Two CI jobs, one platform each, export to one reference at the same time; a later
    two-platform build on a fresh machine finds both platforms' steps."""
    dockerfile = f"FROM {tiny}\nCOPY a.txt /a.txt\nRUN uname -m > /machine && cat /a.txt\n"
    ctx = write_context(tmp_path / "ctx", dockerfile, {"a.txt": "x\n"})
    cache = registry.ref(f"cache/{tmp_path.name}:matrix")
    results: dict[str, dict[str, Any]] = {}

    def job(platform: str) -> None:
        results[platform] = build(tmp_path / platform.replace("/", "-"), ctx, "--platform",
                                  platform, "--cache-to", f"{cache},mode=max".replace(
                                      cache, f"type=registry,ref={cache}"))  # fmt: skip

    jobs = [threading.Thread(target=job, args=(p,)) for p in ("linux/amd64", "linux/arm64")]
    for t in jobs:
        t.start()
    for t in jobs:
        t.join()
    assert set(results) == {"linux/amd64", "linux/arm64"}
    both = build(tmp_path / "fresh", ctx, "--platform", "linux/amd64,linux/arm64",
                 "--cache-from", cache)  # fmt: skip
    assert both["polyarch.steps"]["run"] == 0
    for platform in ("linux/amd64", "linux/arm64"):
        assert (
            both["polyarch.platforms"][platform]["digest"]
            == (results[platform]["containerimage.digest"])
        )


def test_bad_cache_options_are_refused_before_building(ctx: Path, tmp_path: Path) -> None:
    for args, message in [
        (("--cache-to", "type=gha"), "gha caches are not supported"),
        (("--cache-to", "type=registry,ref=x/y:z,compression=zstd"), "not compression"),
        (("--cache-from", "type=registry,ref=x/y:z,mode=max"), "not mode"),
        (("--cache-to", "type=local"), "needs dest=DIR"),
        (("--cache-to", "type=registry,ref=x/y:z,max-size=lots"), "not a size"),
    ]:
        result = build(tmp_path / "root", ctx, *args, check=False)
        assert result["returncode"] == 2 or result["returncode"] == 1, args
        assert message in result["stderr"], (args, result["stderr"])
        assert "Traceback" not in result["stderr"]
        assert "#1" not in result["stderr"]  # nothing ran


def test_a_missing_cache_is_a_note_not_an_error(
    registry: RunningRegistry, ctx: Path, tmp_path: Path
) -> None:
    result = build(tmp_path / "root", ctx, "--cache-from", registry.ref("cache/none:nothing"))
    assert result["polyarch.steps"]["run"] == 5
    assert "has no entries yet" in result["stderr"]
