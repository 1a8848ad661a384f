import base64
import json
from pathlib import Path

import pytest

from polyarch.errors import CredentialError
from polyarch.registry.credentials import (
    ANONYMOUS,
    Credential,
    DockerConfigCredentials,
    default_config_path,
    run_helper,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeHelpers:
    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def __call__(self, program: str, stdin: str) -> tuple[int, str, str]:
        self.calls.append((program, stdin))
        return self.answers[program]


def test_auths_entries() -> None:
    creds = DockerConfigCredentials(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
                "reg.example.com:5000": {"username": "u", "password": "p"},
                "https://other.example.com/v2/": {"identitytoken": "refresh"},
            }
        }
    )
    assert creds.get("docker.io") == Credential("hubuser", "hubpass")
    assert creds.get("registry-1.docker.io") == Credential("hubuser", "hubpass")
    assert creds.get("reg.example.com:5000") == Credential("u", "p")
    assert creds.get("other.example.com").identity_token == "refresh"


def test_no_fallback_to_another_host() -> None:
    creds = DockerConfigCredentials({"auths": {"reg.example.com": {"auth": b64("u:p")}}})
    assert creds.get("reg.example.com:5000") is ANONYMOUS
    assert creds.get("evil.reg.example.com") is ANONYMOUS
    assert creds.get("example.com") is ANONYMOUS


def test_password_may_contain_colons() -> None:
    creds = DockerConfigCredentials({"auths": {"h": {"auth": b64("u:pa:ss")}}})
    assert creds.get("h") == Credential("u", "pa:ss")


@pytest.mark.parametrize("auth", ["not-base64!", b64("nocolon")])
def test_malformed_auth_is_an_error(auth: str) -> None:
    creds = DockerConfigCredentials({"auths": {"h": {"auth": auth}}})
    with pytest.raises(CredentialError, match="auths"):
        creds.get("h")


def test_cred_helper_for_host() -> None:
    helpers = FakeHelpers(
        {"docker-credential-ecr": (0, json.dumps({"Username": "AWS", "Secret": "tok"}), "")}
    )
    creds = DockerConfigCredentials(
        {"credHelpers": {"1234.dkr.ecr.example.com": "ecr"}, "auths": {}}, runner=helpers
    )
    assert creds.get("1234.dkr.ecr.example.com") == Credential("AWS", "tok")
    assert helpers.calls == [("docker-credential-ecr", "1234.dkr.ecr.example.com")]
    assert creds.get("other.example.com") is ANONYMOUS
    assert len(helpers.calls) == 1


def test_helper_not_found_means_anonymous() -> None:
    helpers = FakeHelpers(
        {"docker-credential-pass": (1, "credentials not found in native keychain\n", "")}
    )
    creds = DockerConfigCredentials({"credHelpers": {"h": "pass"}}, runner=helpers)
    assert creds.get("h") is ANONYMOUS


def test_helper_failure_is_an_error_not_a_fallback() -> None:
    helpers = FakeHelpers({"docker-credential-pass": (1, "", "gpg: decryption failed")})
    creds = DockerConfigCredentials(
        {"credHelpers": {"h": "pass"}, "auths": {"h": {"auth": b64("u:p")}}}, runner=helpers
    )
    with pytest.raises(CredentialError, match="decryption failed"):
        creds.get("h")


def test_helper_that_cannot_run_is_an_error() -> None:
    creds = DockerConfigCredentials({"credHelpers": {"h": "surely-not-installed-xyz"}})
    with pytest.raises(CredentialError, match="not installed"):
        creds.get("h")


def test_creds_store_then_auths() -> None:
    helpers = FakeHelpers(
        {"docker-credential-desktop": (1, "credentials not found in native keychain", "")}
    )
    creds = DockerConfigCredentials(
        {"credsStore": "desktop", "auths": {"h": {"auth": b64("u:p")}}}, runner=helpers
    )
    assert creds.get("h") == Credential("u", "p")
    assert creds.get("docker.io") is ANONYMOUS
    assert helpers.calls[-1] == ("docker-credential-desktop", "https://index.docker.io/v1/")


def test_identity_token_from_helper() -> None:
    helpers = FakeHelpers(
        {"docker-credential-x": (0, json.dumps({"Username": "<token>", "Secret": "rt"}), "")}
    )
    creds = DockerConfigCredentials({"credsStore": "x"}, runner=helpers)
    assert creds.get("h") == Credential(identity_token="rt")


def test_helper_names_cannot_escape() -> None:
    creds = DockerConfigCredentials({"credHelpers": {"h": "../../bin/sh"}})
    with pytest.raises(CredentialError, match="invalid credential helper"):
        creds.get("h")


def test_real_helper_program_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "docker-credential-testing"
    helper.write_text(
        '#!/bin/sh\nread server\necho "{\\"Username\\":\\"u-$server\\",\\"Secret\\":\\"s\\"}"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert run_helper("docker-credential-testing", "reg.test\n")[0] == 0
    creds = DockerConfigCredentials({"credHelpers": {"reg.test": "testing"}})
    assert creds.get("reg.test") == Credential("u-reg.test", "s")


def test_load_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"h": {"auth": b64("u:p")}}}))
    assert DockerConfigCredentials.load(path).get("h") == Credential("u", "p")
    with pytest.raises(CredentialError, match="does not exist"):
        DockerConfigCredentials.load(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(CredentialError, match="not valid JSON"):
        DockerConfigCredentials.load(path)


def test_default_config_path() -> None:
    assert default_config_path({"REGISTRY_AUTH_FILE": "/a.json"}) == Path("/a.json")
    assert default_config_path({"DOCKER_CONFIG": "/d"}) == Path("/d/config.json")
    assert default_config_path({}).name == "config.json"
