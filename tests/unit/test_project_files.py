"""A project file (polyarch.toml) cannot make a build reach host paths outside the project's
directory without the user's consent on the command line (`--allow fs.read=PATH`, as buildx
bake asks); `--ca-certs` takes PEM certificate bundles only; ADD of a URL that ends in `..`
is refused clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from polyarch.errors import DockerfileError
from polyarch.frontend.convert import ConvertRequest, convert
from polyarch.frontend.dockerfile import load
from polyarch.platform import Platform

HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
SECRET_TEXT = "ssh-rsa-private-material-0123456789"


def check(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyarch", "build", "--check", *args],
                          capture_output=True, text=True, cwd=project)  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (root / "a").write_text("a\n")
    secret = tmp_path / "id_rsa"
    secret.write_text(SECRET_TEXT + "\n")
    return root


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        (f'ca_certs = "{HOST_CA}"', "build.ca_certs"),
        ('context = ".."', "build.context"),
        ('dockerfile = "../id_rsa"', "build.dockerfile"),
        ('secrets = ["id=key,src=../id_rsa"]', "build.secrets"),
        ('ssh = ["default=../id_rsa"]', "build.ssh"),
        ('trace = "../trace.json"', "build.trace"),
        ('cache = { from = ["type=local,src=.."] }', "build.cache.from"),
        ('contexts = { other = "../" }', "build.contexts.other"),
    ],
)  # fmt: skip
def test_a_project_file_cannot_name_host_paths(project: Path, setting: str, key: str) -> None:
    (project / "polyarch.toml").write_text(f"[build]\n{setting}\n")
    refused = check(project)
    assert refused.returncode == 2, refused.stderr
    assert f"polyarch.toml: {key} names " in refused.stderr
    assert "outside the project's directory" in refused.stderr
    assert "--allow fs." in refused.stderr
    assert SECRET_TEXT not in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr


def test_the_user_may_allow_a_path(project: Path) -> None:
    (project / "polyarch.toml").write_text(f'[build]\nca_certs = "{HOST_CA}"\n')
    assert check(project, "--allow", f"fs.read={HOST_CA}").returncode == 0
    assert check(project, "--allow", "fs=*").returncode == 0
    assert check(project, "--allow", "fs.write=*").returncode == 2  # reading is not writing
    # The keyword `host` (the host's public CA bundle) needs no consent.
    (project / "polyarch.toml").write_text('[build]\nca_certs = "host"\n')
    assert check(project).returncode == 0
    # Paths inside the project are fine, and a flag is the user's own choice.
    (project / "polyarch.toml").write_text('[build]\ncontext = "."\ndockerfile = "Dockerfile"\n')
    assert check(project).returncode == 0
    assert check(project, "--ca-certs", HOST_CA).returncode == 0


def test_a_symlink_inside_the_project_does_not_lead_out(project: Path) -> None:
    (project / "innocent.pem").symlink_to(project.parent / "id_rsa")
    (project / "polyarch.toml").write_text('[build]\nca_certs = "innocent.pem"\n')
    refused = check(project)
    assert refused.returncode == 2 and "outside the project's directory" in refused.stderr


def test_ca_certs_takes_certificate_bundles_only(project: Path) -> None:
    for name, text in (
        ("id_rsa", SECRET_TEXT + "\n"),
        ("key.pem", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"
                    "-----END OPENSSH PRIVATE KEY-----\n"),
        ("mixed.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                      "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"),
        ("smuggled.pem", f"-----BEGIN CERTIFICATE-----\n{SECRET_TEXT}\n"
                         "-----END CERTIFICATE-----\n"),
        ("empty.pem", "# only a comment\n"),
    ):  # fmt: skip
        path = project / name
        path.write_text(text)
        refused = check(project, "--ca-certs", str(path))
        assert refused.returncode == 2, name
        assert "is not a PEM certificate bundle" in refused.stderr, name
        assert SECRET_TEXT not in refused.stderr and "MII" not in refused.stderr
    fine = project / "fine.pem"
    fine.write_text("# a comment\n" + Path(HOST_CA).read_text())
    assert check(project, "--ca-certs", str(fine)).returncode == 0


def test_add_of_a_url_ending_in_dot_dot_is_refused_at_its_line() -> None:
    amd64 = Platform.parse("linux/amd64")
    for url in ("http://h/a/..", "http://h/a/%2e%2e", "http://h/x%2f..", "https://h/a%00b"):
        with pytest.raises(DockerfileError) as info:
            convert(ConvertRequest(load(f"FROM scratch\nADD {url} /d/\n"), (amd64,), amd64))
        assert info.value.line == 2 and "names a file that cannot be written" in str(info.value)
    graph = convert(ConvertRequest(load("FROM scratch\nADD http://h/a/. /d/\n"), (amd64,),
                                   amd64))  # fmt: skip
    assert any(v.description == "ADD http://h/a/." for v in graph.vertices.values())
