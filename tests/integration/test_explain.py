"""`polyarch build --explain`: for every step that ran, the first input that changed since the
last build of the same target (each case changes one thing and reads the causes from the JSON
progress); and `polyarch diff`, what differs between two images. Real builds."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import polyarch
from tests.integration.test_build import write_context
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


def causes(root: Path, ctx: Path, *args: str) -> dict[str, str]:
    """Build; each step that ran -> why (from the JSON progress); cached steps are absent."""
    done = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "json",
         *args, str(ctx)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out: dict[str, str] = {}
    for line in done.stderr.splitlines():
        event = json.loads(line)
        if event.get("event") == "start" and event.get("cause"):
            out[f"{event['platform']} {event['description']}"] = event["cause"]
    return out


def test_a_first_build_then_a_rebuild_that_runs_nothing(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nCOPY a.txt /a\nRUN cat /a > /b\n",
                        {"a.txt": "a"})  # fmt: skip
    root = tmp_path / "root"
    first = causes(root, ctx, "--platform", "linux/amd64")
    assert set(first.values()) == {"no earlier build of this target to compare with"}
    assert causes(root, ctx, "--platform", "linux/amd64") == {}
    again = polyarch("build", "--root", str(root), "--progress", "plain", "--explain", str(ctx))
    assert "why steps ran: none ran (2 came from the cache)" in again.stderr


def test_context_files_edited_added_removed_and_chmodded(base: str, tmp_path: Path) -> None:
    ctx = write_context(
        tmp_path / "ctx",
        f"FROM {base}\nCOPY src/ /src/\nRUN ls -l /src > /listing\nCOPY other.txt /other\n",
        {"src/a.js": "a", "src/b.js": "b", "other.txt": "o"},
    )
    root = tmp_path / "root"
    causes(root, ctx)
    (ctx / "src" / "b.js").write_text("b, edited")
    edited = causes(root, ctx)
    assert edited == {
        "linux/amd64 COPY src/ /src/": "context file src/b.js was edited",
        "linux/amd64 RUN ls -l /src > /listing": "the step it builds on changed: "
        "`COPY src/ /src/` (stage-0 2/4)",
        "linux/amd64 COPY other.txt /other": "the step it builds on changed: "
        "`RUN ls -l /src > /listing` (stage-0 3/4)",
    }
    (ctx / "src" / "c.js").write_text("c")
    assert causes(root, ctx)["linux/amd64 COPY src/ /src/"] == "context file src/c.js was added"
    (ctx / "src" / "a.js").unlink()
    assert causes(root, ctx)["linux/amd64 COPY src/ /src/"] == ("context file src/a.js was removed")
    (ctx / "src" / "c.js").chmod(0o755)
    assert causes(root, ctx)["linux/amd64 COPY src/ /src/"] == (
        "context file src/c.js changed mode: 0644 → 0755"
    )


def test_build_argument_instruction_and_cache_mount(base: str, tmp_path: Path) -> None:
    dockerfile = (
        f"FROM {base}\nARG FLAVOUR\nRUN echo $FLAVOUR > /flavour\n"
        "RUN --mount=type=cache,id=one,target=/cache echo a > /cached\n"
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    root = tmp_path / "root"
    causes(root, ctx, "--build-arg", "FLAVOUR=plain")
    changed = causes(root, ctx, "--build-arg", "FLAVOUR=spicy")
    assert changed["linux/amd64 RUN echo $FLAVOUR > /flavour"] == "build argument FLAVOUR changed"
    (ctx / "Dockerfile").write_text(dockerfile.replace("id=one", "id=two"))
    mounted = causes(root, ctx, "--build-arg", "FLAVOUR=spicy")
    assert mounted == {
        "linux/amd64 RUN echo a > /cached": "the cache mount at /cache changed id: 'one' → 'two'"
    }
    # The id from a build argument: the argument is the first thing the step sees change
    # (a declared ARG is in RUN's environment, as in BuildKit).
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nARG FLAVOUR\nRUN echo $FLAVOUR > /flavour\nARG CACHE=one\n"
        "RUN --mount=type=cache,id=$CACHE,target=/cache echo a > /cached\n"
    )
    causes(root, ctx, "--build-arg", "FLAVOUR=spicy")
    by_arg = causes(root, ctx, "--build-arg", "FLAVOUR=spicy", "--build-arg", "CACHE=three")
    step = "linux/amd64 RUN echo a > /cached"
    assert by_arg == {step: "build argument CACHE changed"}


def test_a_secret_reruns_a_step_only_when_its_id_changes(base: str, tmp_path: Path) -> None:
    dockerfile = f"FROM {base}\nRUN --mount=type=secret,id=token test -s /run/secrets/token\n"
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    root = tmp_path / "root"
    secret = tmp_path / "secret"
    secret.write_text("value one")
    causes(root, ctx, "--secret", f"id=token,src={secret}")
    secret.write_text("value two")  # BuildKit's rule: a secret's value is in no key
    assert causes(root, ctx, "--secret", f"id=token,src={secret}") == {}
    (ctx / "Dockerfile").write_text(dockerfile.replace("token", "other"))
    other = causes(root, ctx, "--secret", f"id=other,src={secret}")
    assert other == {
        "linux/amd64 RUN test -s /run/secrets/other":
        "the instruction changed: `RUN test -s /run/secrets/token` → "
        "`RUN test -s /run/secrets/other`"
    }  # fmt: skip
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nRUN --mount=type=secret,id=token,target=/run/s test -s /run/s\n"
    )
    causes(root, ctx, "--secret", f"id=token,src={secret}")
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nRUN --mount=type=secret,id=other,target=/run/s test -s /run/s\n"
    )
    renamed = causes(root, ctx, "--secret", f"id=other,src={secret}")
    assert renamed == {
        "linux/amd64 RUN test -s /run/s": "the secret mount at /run/s changed id: 'token' → 'other'"
    }
    for path in (root / "explain").glob("*.json.gz"):
        assert b"value" not in gzip.decompress(path.read_bytes())


def test_a_base_image_that_moved(base: str, registry: RunningRegistry, tmp_path: Path) -> None:
    ref = registry.ref("explain/base:latest")
    maker = write_context(tmp_path / "maker", f"FROM {base}\nRUN echo 1 > /version\n", {})
    polyarch("build", "--root", str(tmp_path / "maker-root"), "-t", ref, "--push", str(maker))
    ctx = write_context(tmp_path / "ctx", f"FROM {ref}\nRUN cat /version > /seen\n", {})
    root = tmp_path / "root"
    causes(root, ctx)
    (maker / "Dockerfile").write_text(f"FROM {base}\nRUN echo 2 > /version\n")
    polyarch("build", "--root", str(tmp_path / "maker-root"), "-t", ref, "--push", str(maker))
    moved = causes(root, ctx)
    assert list(moved) == ["linux/amd64 RUN cat /version > /seen"]
    assert moved["linux/amd64 RUN cat /version > /seen"].startswith(
        f"the image {ref} moved: sha256:"
    )


def test_explain_lists_why_each_step_ran(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nCOPY a.txt /a\n", {"a.txt": "a"})
    root = tmp_path / "root"
    polyarch("build", "--root", str(root), str(ctx))
    (ctx / "a.txt").write_text("b")
    shown = polyarch("build", "--root", str(root), "--progress", "plain", "--explain", str(ctx))
    assert "#1 why: context file a.txt was edited" in shown.stderr.replace("#2", "#1")
    tail = shown.stderr.split("why steps ran (1 ran, 0 came from the cache):\n")[1]
    assert tail.startswith("  [stage-0 linux/amd64 2/2] COPY a.txt /a\n"
                           "      context file a.txt was edited\n")  # fmt: skip


def _diff(root: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "polyarch", "diff", "--root", str(root), "--format", "json",
         *args], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["same"] is (done.returncode == 0)
    return data


def test_diff_of_builds_with_and_without_source_date_epoch_names_the_times(
    base: str, tmp_path: Path
) -> None:
    """The tool for "why is this build not reproducible": everything that differs is a time."""
    ctx = write_context(
        tmp_path / "ctx",
        f"FROM {base}\nCOPY a.txt /a\nRUN mkdir /made && echo hi > /made/file\n",
        {"a.txt": "a"},
    )
    root = tmp_path / "root"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    pinned = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "-t", "local/r:epoch",
         str(ctx)], capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    polyarch("build", "--root", str(root), "--no-cache", "-t", "local/r:now", str(ctx))
    same = _diff(root, "local/r:epoch", "local/r:epoch")
    assert same["same"] and same["images"][0]["files"] == []
    data = _diff(root, "local/r:epoch", "local/r:now")
    (image,) = data["images"]
    fields = [c["field"] for c in image["config"]]
    assert "created" in fields
    assert all(f == "created" or re.fullmatch(r"history\[\d+\]\.created", f) for f in fields)
    assert image["layers"], "the layers hold the times, so they differ"
    changed = {f["path"]: f for f in image["files"]}
    assert {"/a", "/made", "/made/file"} <= set(changed)
    for change in changed.values():
        assert change["change"] == "changed" and list(change["fields"]) == ["mtime"], change
    assert changed["/a"]["fields"]["mtime"][0] == 1700000000
    text = polyarch("diff", "--root", str(root), "local/r:epoch", "local/r:now", check=False)
    assert text.returncode == 1
    assert "changed /made/file: mtime 2023-11-14T22:13:20Z → " in text.stdout


def test_diff_of_two_platforms_of_one_index(tiny: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN uname -m > /arch\n", {})
    root = tmp_path / "root"
    polyarch("build", "--root", str(root), "--platform", "linux/amd64,linux/arm64", "-t",
             "local/two:1", str(ctx))  # fmt: skip
    data = _diff(root, "--platform", "linux/amd64", "--platform", "linux/arm64", "local/two:1")
    (image,) = data["images"]
    assert image["platform"] == "linux/amd64 vs linux/arm64"
    config = {c["field"]: (c["a"], c["b"]) for c in image["config"]}
    assert config["architecture"] == ("amd64", "arm64")
    files = {f["path"]: f for f in image["files"]}
    assert "content" in files["/arch"]["fields"]
    assert files["/bin/dash"]["change"] == "changed"  # another machine's binary
    assert image["a"].startswith("local/two:1 linux/amd64 (sha256:")
