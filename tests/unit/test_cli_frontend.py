import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def polyarch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyarch", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text(
        "FROM --platform=$BUILDPLATFORM node:20 AS js\nRUN yarn build\n"
        "FROM nginx:alpine\nCOPY --from=js /dist /html\nRUN echo $TARGETARCH\n"
    )
    return tmp_path


def test_parse_json_and_text(project: Path) -> None:
    out = json.loads(polyarch("parse", "--format", "json", str(project)).stdout)
    assert [n["cmd"] for n in out] == ["FROM", "RUN", "FROM", "COPY", "RUN"]
    assert out[3]["flags"] == ["--from=js"]
    text = polyarch("parse", "-f", str(project / "Dockerfile")).stdout
    assert "COPY" in text and '["/dist", "/html"]' in text


def test_plan_text_and_json(project: Path) -> None:
    result = polyarch(
        "plan", "--platform", "linux/amd64,linux/arm64", "--build-platform", "linux/amd64",
        str(project),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "js       once for 2 targets  linux/amd64" in result.stdout
    assert "emulated (qemu-aarch64)" in result.stdout
    assert "TARGETARCH is used" in result.stdout
    data = json.loads(
        polyarch(
            "plan", "--platform", "linux/amd64,linux/arm64", "--format", "json", str(project)
        ).stdout
    )
    assert [s["once"] for s in data["stages"] if s["stage"] == "js"] == [True]
    assert data["warnings"][0]["line"] == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a\nRUNN x\n", "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"),
        ("FROM a\nCOPY --nope a b\n", "Dockerfile:2: unknown flag: --nope"),
        ("FROM a\nRUN <<EOF\n", "Dockerfile:2: unterminated heredoc 'EOF'"),
        ("ARG x\n", "Dockerfile:1: no FROM instruction"),
        ("FROM a\nRUN\n", "Dockerfile:2: RUN requires at least one argument"),
    ],
)
def test_errors_name_the_line_and_show_it(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "Dockerfile").write_text(text)
    line = int(expected.split(":")[1])
    for command in ("parse", "plan"):
        result = polyarch(command, str(tmp_path))
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        first, *rest = result.stderr.splitlines()
        assert first.startswith("error: ") and expected in first
        # Then the Dockerfile around it, the failing line marked, as buildx shows it.
        marked = [r for r in rest if ">>>" in r]
        assert len(marked) == 1
        assert marked[0].split("|")[0].strip() == str(line)
        assert text.splitlines()[line - 1] in marked[0]


def test_missing_dockerfile(tmp_path: Path) -> None:
    result = polyarch("plan", str(tmp_path))
    assert result.returncode == 1 and "Dockerfile: no such file" in result.stderr


def test_plan_target_and_build_args(project: Path) -> None:
    result = polyarch("plan", "--target", "js", "--build-arg", "UNUSED=1", str(project))
    assert result.returncode == 0
    assert "target: js" in result.stdout
    assert "build arguments not consumed by any ARG: UNUSED" in result.stdout


def test_a_reader_that_goes_away_is_no_internal_error(tmp_path: Path) -> None:
    """Ctrl-C while whoever read polyarch's output is gone (a killed pipeline): nothing to
    say and nowhere to say it; it ends as a pipeline expects (141, as a shell reports
    SIGPIPE), with no internal-error log."""
    import signal
    import time

    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where an internal-error log would go
    proc = subprocess.Popen(  # waits for a Dockerfile on stdin
        [sys.executable, "-m", "polyarch", "build", "-f", "-", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 141
    assert not (tmp_path / "polyarch-errors").exists()
