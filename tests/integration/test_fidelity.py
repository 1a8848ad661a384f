"""What BuildKit does that polyarch now does alike: the RUN steps' /etc/hosts, COPY wildcards
that match nothing, and the build checks (`build --check`, and the warnings of a build) with
base images from a real registry. Real builds (Debian base, runc)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.integration.test_build import flatten, image, polyarch, write_context
from tests.registry_server import RunningRegistry

needs_builds = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


@needs_builds
def test_run_steps_get_buildkits_hosts_file(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    dockerfile = (
        f"FROM {base}\n"
        "RUN cat /etc/hosts > /hosts-seen && hostname -f > /fqdn\n"
        "RUN getent hosts buildkitsandbox | tr -s ' ' > /resolved\n"
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    polyarch("build", "--root", str(root), "-t", "local/hosts:1", "--add-host",
             "myhost:1.2.3.4", "--add-host", "v6=fd00::1", str(ctx))  # fmt: skip
    layout, manifest, _config = image(root, "local/hosts:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert (tree / "hosts-seen").read_text() == (
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        "1.2.3.4\tmyhost\nfd00::1\tv6\n"
    )
    # The sandbox's name resolves, so tools that derive a name from it work (apache2's ssl);
    # its canonical name is the line's first, as under BuildKit.
    assert (tree / "fqdn").read_text() == "localhost\n"
    assert (tree / "resolved").read_text().split() == ["127.0.0.1", "localhost", "buildkitsandbox"]
    # The file was mounted for the steps, never written into a layer.
    assert (
        not (tree / "etc" / "hosts").exists()
        or "myhost" not in (tree / "etc" / "hosts").read_text()
    )


@needs_builds
def test_add_host_is_part_of_the_step_and_checked(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN cat /etc/hosts > /h\n", {})
    polyarch("build", "--root", str(root), "-t", "local/h:1", str(ctx))
    again = polyarch("build", "--root", str(root), "-t", "local/h:2", "--add-host",
                     "db:10.0.0.7", "--progress", "json", str(ctx))  # fmt: skip
    events = [json.loads(line) for line in again.stderr.splitlines()]
    ran = [e["description"] for e in events if e["event"] == "done"]
    assert "RUN cat /etc/hosts > /h" in ran  # another hosts file: the step runs again
    tree = flatten(*image(root, "local/h:2")[:2], tmp_path / "tree")
    assert "10.0.0.7\tdb\n" in (tree / "h").read_text()
    bad = polyarch("build", "--root", str(root), "--add-host", "db:not-an-ip", str(ctx),
                   check=False)  # fmt: skip
    assert bad.returncode == 2 and "want HOST:IP" in bad.stderr


@needs_builds
def test_copy_wildcards_that_match_nothing_copy_nothing(base: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    dockerfile = (
        f"FROM {base}\nWORKDIR /app\n"
        "COPY package.json yarn.lock* package-lock.json* ./\n"
        "COPY nothing-here* /never/\n"
    )
    files = {"package.json": "{}\n", "package-lock.json": "{}\n"}
    ctx = write_context(tmp_path / "ctx", dockerfile, files)
    polyarch("build", "--root", str(root), "-t", "local/wild:1", str(ctx))
    tree = flatten(*image(root, "local/wild:1")[:2], tmp_path / "tree")
    assert sorted(p.name for p in (tree / "app").iterdir()) == ["package-lock.json",
                                                                 "package.json"]  # fmt: skip
    assert not (tree / "never").exists()  # BuildKit creates no destination for nothing
    # A source without a wildcard must exist.
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY yarn.lock ./\n")
    failed = polyarch("build", "--root", str(root), str(ctx), check=False)
    assert failed.returncode == 1
    assert "Dockerfile:2:" in failed.stderr and "yarn.lock" in failed.stderr


def _single_manifest(registry: RunningRegistry, base: str, name: str) -> str:
    """The amd64 image of `base` alone (a manifest, not an index) under `name`."""
    index = json.loads(polyarch("inspect", "--raw", base).stdout)
    [entry] = [m for m in index["manifests"] if m["platform"]["architecture"] == "amd64"]
    target = registry.ref(name)
    polyarch("copy", f"{base.rsplit(':', 1)[0]}@{entry['digest']}", target)
    return target


def test_check_reads_the_base_images_config_without_pulling_layers(
    base: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    single = _single_manifest(registry, base, "single/debian:amd64")
    dockerfile = (
        f"FROM {single} as build\nCMD run-me\nENV HOME_DIR=$HOME/x\n"
        "FROM scratch\nCOPY --from=build /etc/hostname /h\n"
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    result = polyarch("build", "--check", "--root", str(root), "--platform", "linux/arm64",
                      str(ctx), check=False)  # fmt: skip
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert out.startswith("Check complete, 4 warnings have been found!\n")
    assert (
        "WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/" in out
    )
    assert "WARNING: JSONArgsRecommended" in out
    # The Debian image's environment has PATH only: $HOME is undefined.
    assert "Usage of undefined variable '$HOME'\n" in out
    assert f'Base image {single} was pulled with platform "linux/amd64", expected ' \
           '"linux/arm64" for current build' in out  # fmt: skip
    assert f"{ctx / 'Dockerfile'}:1\n--------------------\n   1 | >>> FROM {single} as build" in out
    # Configs only: no layer was pulled for a check.
    blobs = list((root / "store" / "blobs" / "sha256").iterdir())
    assert blobs and all(p.stat().st_size < 64 * 1024 for p in blobs)
    as_json = polyarch("build", "--call", "check,format=json,ignorestatus=true", "--root",
                       str(root), "--platform", "linux/arm64", str(ctx), check=False)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert sorted(w["ruleName"] for w in doc["warnings"]) == [
        "FromAsCasing", "InvalidBaseImagePlatform", "JSONArgsRecommended", "UndefinedVar"
    ]  # fmt: skip
    assert doc["warnings"][0]["location"]["ranges"][0]["start"]["line"] == 1


def test_check_says_the_error_after_the_warnings(tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM scratch AS BadName\nMAINTAINER me\nBADCMD\n", {})
    result = polyarch("build", "--check", str(ctx), check=False)
    assert result.returncode == 1
    assert result.stdout.startswith("Check complete, 2 warnings have been found!\n")
    assert "StageNameCasing" in result.stdout and "MaintainerDeprecated" in result.stdout
    assert "unknown instruction: BADCMD" in result.stdout
    assert "Traceback" not in result.stderr
    clean = write_context(tmp_path / "clean", "FROM scratch\nCOPY a /a\n", {"a": "x"})
    ok = polyarch("build", "--check", str(clean))
    assert ok.stdout == "Check complete, no warnings found.\n"


@needs_builds
def test_a_builds_warnings_reach_json_progress_and_error_true_stops_it(
    base: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    ctx = write_context(tmp_path / "ctx", f"FROM {base} as b\nRUN true\n", {})
    result = polyarch("build", "--root", str(root), "--progress", "json", str(ctx))
    events = [json.loads(line) for line in result.stderr.splitlines()]
    [warning] = [e["warning"] for e in events if "warning" in e]
    assert warning["rule"] == "FromAsCasing" and warning["line"] == 1
    assert warning["url"] == "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    (ctx / "Dockerfile").write_text(f"# check=error=true\nFROM {base} as b\nRUN true\n")
    stopped = polyarch("build", "--root", str(root), str(ctx), check=False)
    assert stopped.returncode == 1
    assert "lint violation found for rules: FromAsCasing" in stopped.stderr


@needs_builds
def test_build_wide_run_settings(base: str, tmp_path: Path) -> None:
    """--network, --ulimit, --shm-size reach every RUN step; -f - reads the Dockerfile from
    stdin; --no-cache-filter runs one stage anew."""
    import subprocess
    import sys

    root = tmp_path / "root"
    dockerfile = (
        f"FROM {base} AS prep\nRUN date +%s%N > /stamp\n"
        f"FROM {base}\n"
        "RUN cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /net\n"
        "RUN ulimit -n > /nofile && df -k /dev/shm | tail -1 | tr -s ' ' | cut -d' ' -f2 > /shm\n"
        "RUN --network=default cat /proc/net/dev | tail -n +3 | wc -l > /own-net\n"
        "COPY --from=prep /stamp /stamp\n"
    )
    ctx = write_context(tmp_path / "ctx", "", {})
    (ctx / "Dockerfile").unlink()
    command = [sys.executable, "-m", "polyarch", "build", "--root", str(root), "-f", "-",
               "-t", "local/settings:1", "--network", "none", "--ulimit", "nofile=1024:2048",
               "--shm-size", "128m", str(ctx)]  # fmt: skip
    done = subprocess.run(command, input=dockerfile, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    tree = flatten(*image(root, "local/settings:1")[:2], tmp_path / "tree")
    assert (tree / "net").read_text().split() == ["lo"]
    assert int((tree / "own-net").read_text()) > 1  # a step's own --network wins
    assert (tree / "nofile").read_text() == "1024\n"
    assert (tree / "shm").read_text() == f"{128 * 1024}\n"
    first = (tree / "stamp").read_text()
    again = subprocess.run(
        [*command[:-1], "--no-cache-filter", "prep", str(ctx)],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    tree2 = flatten(*image(root, "local/settings:1")[:2], tmp_path / "tree2")
    assert (tree2 / "stamp").read_text() != first  # the prep stage ran again
