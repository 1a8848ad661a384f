"""Every flag of `docker buildx build` (buildx's commands/build.go, v0.2x) is taken by
`polyarch build`: honoured, or refused with a pointer to what to do instead; never "No such
option". The Dockerfile is broken on purpose, so a flag that is taken shows as the build
reaching the Dockerfile ("unknown instruction"), and a refused one stops before it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from polyarch.cli import cli

# (the flag as a user types it, with a value where it takes one)
HONOURED = [
    ["--add-host", "db:10.0.0.1"], ["--allow", "security.insecure"],
    ["--annotation", "k=v"], ["--build-arg", "A=1"], ["--cache-from", "type=local,src=/tmp"],
    ["--build-context", "x=."], ["-f", "-"], ["--file", "{ctx}/Dockerfile"], ["--iidfile", "iid"],
    ["--label", "a=b"], ["--load"], ["--network", "none"], ["--no-cache-filter", "build"],
    ["-o", "type=local,dest=out"], ["--output", "type=tar,dest=-"],
    ["--platform", "local"], ["--platform", "linux/amd64,linux/arm64"], ["-q"], ["--quiet"],
    ["--secret", "id=s,env=HOME"], ["--shm-size", "128m"], ["--ssh", "default"],
    ["-t", "example.com/a:1"], ["--tag", "example.com/a:1"], ["--target", "x"],
    ["--ulimit", "nofile=1024:2048"], ["--provenance=false"], ["--call", "build"],
    ["--no-cache"], ["--progress", "plain"], ["--progress", "rawjson"],
    ["--progress", "none"], ["--pull"], ["--metadata-file", "meta.json"],
    ["--builder", "default"], ["--rm"], ["--force-rm"], ["--compress"],
    ["--cache-to", "type=local,dest=cache-out"], ["--sbom=true"], ["--attest", "type=sbom"],
    ["--provenance", "mode=max"], ["--attest", "type=provenance,mode=min,version=v0.2"],
]  # fmt: skip
REFUSED = [
    ["--cgroup-parent", "x"], ["--resource", "memory=2g"], ["--memory", "2g"], ["-m", "2g"],
    ["--memory-swap", "1g"], ["--cpu-shares", "2"], ["-c", "2"], ["--cpu-period", "100"],
    ["--cpu-quota", "50"], ["--cpuset-cpus", "0-1"], ["--cpuset-mems", "0"],
    ["--policy", "filename=p.rego"], ["--isolation", "default"], ["--security-opt", "x"],
    ["--squash"], ["--print", "outline"],
]  # fmt: skip
CHECKED = [["--check"], ["--call", "check"], ["--call", "check,format=json"]]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FRM broken\n")
    return tmp_path


def run(context: Path, flag: list[str]) -> tuple[int, str]:
    runner = CliRunner()
    args = ["build", *(f.format(ctx=context) for f in flag), "--root", str(context / "root"),
            str(context)]  # fmt: skip
    result = runner.invoke(cli, args, input="FRM broken\n", catch_exceptions=True)
    text = result.output + (str(result.exception) if result.exception else "")
    return result.exit_code, text


@pytest.mark.parametrize("flag", HONOURED, ids=lambda f: " ".join(f))
def test_every_buildx_flag_is_taken(context: Path, flag: list[str]) -> None:
    _code, text = run(context, flag)
    assert "No such option" not in text
    assert "unknown instruction: FRM" in text or "pushing needs a name" in text, text


@pytest.mark.parametrize("flag", REFUSED, ids=lambda f: " ".join(f))
def test_the_others_are_refused_with_a_pointer(context: Path, flag: list[str]) -> None:
    code, text = run(context, flag)
    assert code != 0
    assert "No such option" not in text
    assert "unknown instruction" not in text  # refused before anything is read
    name = {"-m": "--memory", "-c": "--cpu-shares"}.get(flag[0], flag[0].split("=")[0])
    assert f"{name}: " in text, text


@pytest.mark.parametrize("flag", CHECKED, ids=lambda f: " ".join(f))
def test_check_reports_the_broken_dockerfile(context: Path, flag: list[str]) -> None:
    code, text = run(context, flag)
    assert code == 1
    assert "unknown instruction: FRM" in text
