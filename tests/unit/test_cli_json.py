"""Commands scripts read take `--format json`: one JSON document on stdout, the same facts as
the table; and buildx flags polyarch does not take get a pointer, not "no such option"."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_cli_frontend import polyarch


def test_images_emulators_config_and_doctor_print_json(tmp_path: Path) -> None:
    images = polyarch("images", "--root", str(tmp_path / "root"), "--format", "json")
    assert images.returncode == 0 and json.loads(images.stdout) == []

    emulators = polyarch("emulators", "--platform", "linux/amd64,linux/s390x", "--format", "json")
    assert emulators.returncode == 0, emulators.stderr
    found = json.loads(emulators.stdout)
    assert [e["platform"] for e in found] == ["linux/amd64", "linux/s390x"]
    assert all(e["state"] in ("native", "emulated", "missing") for e in found)

    (tmp_path / "polyarch.toml").write_text('[build]\nplatforms = ["linux/arm64"]\n')
    config = polyarch("config", "--format", "json", cwd=tmp_path)
    assert config.returncode == 0, config.stderr
    settings = json.loads(config.stdout)
    assert settings["build.platforms"]["value"] == ["linux/arm64"]
    assert settings["build.platforms"]["from"].endswith("polyarch.toml")

    doctor = polyarch("doctor", "--root", str(tmp_path / "root"), "--format", "json")
    checks = json.loads(doctor.stdout)
    assert {"name", "level", "detail", "fix"} <= set(checks[0])
    assert doctor.returncode == (1 if any(c["level"] == "fail" for c in checks) else 0)


def test_buildx_flags_get_a_pointer(tmp_path: Path) -> None:
    squash = polyarch("build", "--squash", str(tmp_path))
    assert squash.returncode == 2 and "--squash: polyarch keeps each step's layer" in squash.stderr
    # attestation flags are taken (checked before the Dockerfile is read)
    vuln = polyarch("build", "--attest", "type=vuln", str(tmp_path))
    assert vuln.returncode == 2 and "type=provenance and type=sbom" in vuln.stderr
    (tmp_path / "Dockerfile").write_text("FRM x\n")
    provenance = polyarch("build", "--provenance=false", "--root", str(tmp_path / "r"),
                          str(tmp_path))  # fmt: skip
    assert "--provenance" not in provenance.stderr and "unknown instruction" in provenance.stderr
