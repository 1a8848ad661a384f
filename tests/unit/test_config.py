import re
import subprocess
import sys
from pathlib import Path

import pytest

from polyarch.config import ConfigError, effective, parse_config
from polyarch.errors import UsageError
from polyarch.verify import Probe

GOOD = """
[image]
registry = "127.0.0.1:5000"
name = "dx-arch-ui"
base_version = "1.1.0"
[build]
platforms = ["linux/amd64", "linux/arm64"]
ca_certs = "host"
[build.args]
NODE_ENV = "production"
[registries]
insecure = ["registry.lan:5000"]
"""


def test_a_seed_like_file() -> None:
    config = parse_config(GOOD)
    assert config.image == "127.0.0.1:5000/dx-arch-ui"
    assert [str(p) for p in config.platforms] == ["linux/amd64", "linux/arm64"]
    assert config.get("build.args") == {"NODE_ENV": "production"}
    assert config.get("build.dockerfile") == "Dockerfile"  # default


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "[image]\nnmae = 'x'\n",
            "polyarch.toml: unknown key image.nmae (known: base_version, name, registry)",
        ),
        ("[imgae]\n", "unknown section [imgae]"),
        ("[build]\nplatforms = 'linux/amd64'\n", "build.platforms must be an array, not a string"),
        ("[build]\nplatforms = ['linux/sparc']\n", "build.platforms: unknown architecture"),
        ("[build.args]\nX = 1\n", "build.args.X must be a string"),
        ("[image\n", "not valid TOML"),
        ("[registries]\ninsecure = [1]\n", "registries.insecure must be an array of strings"),
    ],
)
def test_errors_name_file_and_key(text: str, fragment: str) -> None:
    with pytest.raises(
        ConfigError,
        match=fragment.replace("[", r"\[")
        .replace("]", r"\]")
        .replace("(", r"\(")
        .replace(")", r"\)"),
    ):
        parse_config(text)


def test_flags_override_and_sources_are_named() -> None:
    config = parse_config(GOOD, "app/polyarch.toml")
    rows = {key: (value, source) for key, value, source in effective(
        config, {"build.platforms": ["linux/s390x"], "image.base_version": None})}  # fmt: skip
    assert rows["build.platforms"] == (["linux/s390x"], "command line")
    assert rows["image.base_version"] == ("1.1.0", "app/polyarch.toml")
    assert rows["build.context"] == (".", "default")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[verify]\ntimeout = -1\n", "verify.timeout must be a positive number of seconds"),
        ("[verify]\ntimeout = true\n", "verify.timeout must be a positive number of seconds"),
        ("[verify]\nhttp = '80/'\n", "verify.http must be an array, not a string"),
        ("[verify]\nhttp = [80]\n", "verify.http must be an array of strings"),
    ],
)
def test_verify_settings_are_checked(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        parse_config(text)


@pytest.mark.parametrize(
    ("spec", "port", "path", "status", "text"),
    [
        ("80/", 80, "/", 200, None),
        ("80", 80, "/", 200, None),
        ("9113/metrics~nginx_up 1", 9113, "/metrics", 200, "nginx_up 1"),
        ("80/ram/=302", 80, "/ram/", 302, None),
        ("80/a?b=c=404~x=y", 80, "/a?b=c", 404, "x=y"),
        ("80/a?b=c", 80, "/a?b=c", 200, None),
    ],
)
def test_http_probe_specs(spec: str, port: int, path: str, status: int, text: str | None) -> None:
    probe = Probe.parse(spec)
    assert (probe.port, probe.path, probe.status, probe.text) == (port, path, status, text)


@pytest.mark.parametrize("spec", ["", "/x", "http/x", "0/", "70000/"])
def test_bad_probe_specs(spec: str) -> None:
    with pytest.raises(UsageError, match="PORT/PATH"):
        Probe.parse(spec)


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyarch", *args], cwd=cwd, capture_output=True, text=True
    )


def test_the_cli_reads_the_project_file_and_flags_win(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "one"], check=True)  # fmt: skip
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=7", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / "polyarch.toml").write_text(GOOD)
    shown = run(tmp_path, "config", "--platform", "linux/s390x").stdout
    rows = {line.split()[0]: line for line in shown.splitlines()[1:]}
    assert (
        '["linux/s390x"]' in rows["build.platforms"] and "command line" in rows["build.platforms"]
    )
    assert "polyarch.toml" in rows["image.name"]
    assert "default" in rows["build.dockerfile"]
    assert f'"127.0.0.1:5000/dx-arch-ui:1.1.0-{sha}"' in rows["image.tag"]
    assert run(tmp_path, "version").stdout.strip() == f"1.1.0-{sha}"
    assert run(tmp_path, "version", "--base-version", "2.0.0").stdout.strip() == f"2.0.0-{sha}"
    # --config names another file; a file that does not exist is an error, not a default.
    other = tmp_path / "other.toml"
    other.write_text("[image]\nbase_version = '3.0.0'\n")
    assert run(tmp_path, "--config", str(other), "version", str(tmp_path)).stdout.strip() == (
        f"3.0.0-{sha}"
    )
    missing = run(tmp_path, "--config", "nope.toml", "version")
    assert missing.returncode == 2 and "--config: no such file nope.toml" in missing.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[build]\nplatfroms = []\n")
    failed = run(tmp_path, "--config", str(broken), "config")
    assert failed.returncode == 1 and "broken.toml: unknown key build.platfroms" in failed.stderr


def test_pushing_without_a_tag_needs_an_image_name(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    failed = run(tmp_path, "build", "--push", ".")
    assert failed.returncode == 2
    assert "no image named: give -t REGISTRY/NAME:TAG, or set [image]" in failed.stderr


def test_a_context_on_the_command_line_brings_its_own_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "polyarch.toml").write_text("[build]\ndockerfile = 'prod.Dockerfile'\n")
    (tmp_path / "prod.Dockerfile").write_text("FROM scratch\nCOPY prod.txt /\n")
    (tmp_path / "prod.txt").write_text("prod\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "Dockerfile").write_text("FROM scratch\nCOPY sub.txt /\n")
    (sub / "sub.txt").write_text("sub\n")
    root = str(tmp_path / "root")
    from_config = run(tmp_path, "build", "--root", root, "--progress", "plain")
    assert from_config.returncode == 0, from_config.stderr
    assert "COPY prod.txt /" in from_config.stderr
    given = run(tmp_path, "build", "--root", root, "--progress", "plain", "sub")
    assert given.returncode == 0, given.stderr
    assert "COPY sub.txt /" in given.stderr
