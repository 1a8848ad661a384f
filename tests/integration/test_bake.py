"""`polyarch bake` building real targets against the test registry: two targets for two
platforms pushed, a matrix, a `target:` context between targets, `--set`, a Compose file, and
the filesystem entitlements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.helpers import needs_emulation
from tests.registry_server import RunningRegistry

pytestmark = needs_emulation
INDEX = {"Accept": "application/vnd.oci.image.index.v1+json, "
                   "application/vnd.oci.image.manifest.v1+json"}  # fmt: skip


def bake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "polyarch", "bake", "--root", str(cwd.parent / "root"),
         "--progress", "plain", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def platforms_of(registry: RunningRegistry, repository: str, tag: str) -> set[str]:
    index = httpx.get(f"http://{registry.host}/v2/{repository}/manifests/{tag}",
                      headers=INDEX).json()  # fmt: skip
    # The images (a push also carries their provenance, as `unknown/unknown` entries).
    return {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]
            if m["platform"]["os"] != "unknown"}  # fmt: skip


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def test_two_targets_for_two_platforms_pushed_as_two_indexes(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    project = write(tmp_path / "project", {
        "docker-bake.hcl": f'''
variable "REGISTRY" {{ default = "{registry.host}" }}
variable "VERSION" {{ default = "1.0" }}
group "default" {{ targets = ["app", "worker"] }}
target "_common" {{
  platforms = ["linux/amd64", "linux/arm64"]
  args = {{ BASE = "{tiny}" }}
}}
target "app" {{
  inherits = ["_common"]
  dockerfile = "app.Dockerfile"
  tags = ["${{REGISTRY}}/bake/app:${{VERSION}}"]
}}
target "worker" {{
  inherits = ["_common"]
  dockerfile = "worker.Dockerfile"
  tags = ["${{REGISTRY}}/bake/worker:${{VERSION}}"]
}}
''',
        "app.Dockerfile": "ARG BASE\nFROM $BASE\nRUN uname -m > /app\n",
        "worker.Dockerfile": "ARG BASE\nFROM $BASE\nRUN uname -m > /worker\n",
    })  # fmt: skip
    printed = json.loads(bake(project, "--print").stdout)
    assert printed["group"]["default"]["targets"] == ["app", "worker"]
    assert printed["target"]["app"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert printed["target"]["worker"]["tags"] == [f"{registry.host}/bake/worker:1.0"]
    done = bake(project, "--push", "--metadata-file", str(tmp_path / "meta.json"))
    for name in ("app", "worker"):
        assert platforms_of(registry, f"bake/{name}", "1.0") == {"linux/amd64", "linux/arm64"}
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert set(meta) == {"app", "worker"}
    assert meta["app"]["image.name"] == f"{registry.host}/bake/app:1.0"
    assert "target app: built sha256:" in done.stdout


def test_matrix_set_and_a_target_context(tiny: str, registry: RunningRegistry,
                                         tmp_path: Path) -> None:  # fmt: skip
    project = write(tmp_path / "project", {
        "docker-bake.hcl": f'''
target "base" {{
  dockerfile-inline = <<EOT
FROM {tiny}
RUN echo from-base > /base.txt
EOT
}}
target "app" {{
  name = "app-${{flavour}}"
  matrix = {{ flavour = ["plain", "spicy"] }}
  contexts = {{ base = "target:base" }}
  args = {{ FLAVOUR = flavour }}
  dockerfile = "app.Dockerfile"
  tags = ["{registry.host}/bake/matrix:${{flavour}}"]
}}
''',
        "app.Dockerfile": "FROM base\nARG FLAVOUR\nRUN cat /base.txt > /seen && echo $FLAVOUR "
                          "> /flavour\n",
    })  # fmt: skip
    printed = json.loads(bake(project, "--print", "app").stdout)
    assert printed["group"]["app"]["targets"] == ["app-plain", "app-spicy"]
    assert printed["target"]["base"]["output"] == [{"type": "cacheonly"}]
    out = tmp_path / "out"
    bake(project, "app", "--set", "app-spicy.args.FLAVOUR=very-spicy",
         "--set", f"app-plain.output=type=local,dest={out}/plain",
         "--set", f"app-*y.output=type=local,dest={out}/spicy",
         "--allow", f"fs.write={out}")  # fmt: skip
    assert (out / "plain" / "seen").read_text() == "from-base\n"  # base's output, not pushed
    assert (out / "plain" / "flavour").read_text() == "plain\n"
    assert (out / "spicy" / "flavour").read_text() == "very-spicy\n"
    catalog = httpx.get(f"http://{registry.host}/v2/_catalog").json()["repositories"]
    assert not any("base" in r and r.startswith("bake/") for r in catalog)


def test_shared_steps_run_once_across_targets(tiny: str, tmp_path: Path) -> None:
    stage = f"FROM {tiny} AS deps\nRUN sleep 2 && echo deps > /deps\n"
    project = write(tmp_path / "project", {
        "docker-bake.hcl": 'group "default" { targets = ["one", "two"] }\n'
                           'target "one" { dockerfile = "one.Dockerfile" }\n'
                           'target "two" { dockerfile = "two.Dockerfile" }\n',
        "one.Dockerfile": stage + f"FROM {tiny}\nCOPY --from=deps /deps /one\n",
        "two.Dockerfile": stage + f"FROM {tiny}\nCOPY --from=deps /deps /two\n",
    })  # fmt: skip
    bake(project, "--metadata-file", str(tmp_path / "meta.json"))
    meta = json.loads((tmp_path / "meta.json").read_text())
    runs = {name: meta[name]["polyarch.steps"]["run"] for name in ("one", "two")}
    # Each target runs its COPY; the deps stage's RUN runs once for both.
    assert sorted(runs.values()) == [1, 2], runs


def test_a_compose_file_builds_its_services(tiny: str, registry: RunningRegistry,
                                            tmp_path: Path) -> None:  # fmt: skip
    project = write(tmp_path / "project", {
        "compose.yaml": f'''
services:
  web:
    image: {registry.host}/bake/web:${{TAG:-dev}}
    build:
      context: ./web
      args:
        - GREETING=hello
      x-bake:
        platforms: [linux/amd64, linux/arm64]
  db:
    image: postgres
''',
        "web/Dockerfile": f"FROM {tiny}\nARG GREETING\nRUN echo $GREETING > /greeting\n",
    })  # fmt: skip
    printed = json.loads(bake(project, "--print").stdout)
    assert list(printed["target"]) == ["web"]
    assert printed["target"]["web"]["context"] == "web"
    assert printed["target"]["web"]["tags"] == [f"{registry.host}/bake/web:dev"]
    assert printed["target"]["web"]["args"] == {"GREETING": "hello"}
    subprocess_env = {**os.environ, "TAG": "1.2"}
    done = subprocess.run(
        [sys.executable, "-m", "polyarch", "bake", "--root", str(tmp_path / "root"), "--push",
         "--progress", "plain"], cwd=project, capture_output=True, text=True, timeout=900,
        env=subprocess_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert platforms_of(registry, "bake/web", "1.2") == {"linux/amd64", "linux/arm64"}


def test_paths_outside_need_an_entitlement(tiny: str, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", {"Dockerfile": f"FROM {tiny}\nRUN true\n"})
    project = write(tmp_path / "project", {
        "docker-bake.hcl": 'target "default" { context = "../outside" }\n'})  # fmt: skip
    refused = bake(project, check=False)
    assert refused.returncode == 1
    assert "Read access to path ../outside" in refused.stderr
    assert "Pass '--allow=fs.read=../outside' to grant them." in refused.stderr
    assert "Traceback" not in refused.stderr
    bake(project, "--allow", "fs.read=../outside")
    assert (outside / "Dockerfile").exists()


def test_release_of_a_bake_project_tags_every_target_or_none(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    """polyarch.toml names the bake file: release builds, pushes by digest and verifies each
    target, and moves the tags only when every one passed."""
    project = write(tmp_path / "project", {
        "polyarch.toml": '[bake]\nfiles = ["docker-bake.hcl"]\ntargets = ["app", "job"]\n',
        "docker-bake.hcl": f'''
variable "JOB_EXIT" {{ default = "0" }}
target "_common" {{ platforms = ["linux/amd64", "linux/arm64"] }}
target "app" {{
  inherits = ["_common"]
  dockerfile-inline = "FROM {tiny}\\nCMD [\\"sh\\", \\"-c\\", \\"uname -m\\"]\\n"
  tags = ["{registry.host}/bake/rel-app:1"]
}}
target "job" {{
  inherits = ["_common"]
  dockerfile-inline = "FROM {tiny}\\nCMD [\\"sh\\", \\"-c\\", \\"exit ${{JOB_EXIT}}\\"]\\n"
  tags = ["{registry.host}/bake/rel-job:1"]
}}
''',
    })  # fmt: skip

    keys = {"COSIGN_PASSWORD": "bake-release"}
    subprocess.run([sys.executable, "-m", "polyarch", "sign", "--generate-key"], cwd=tmp_path,
                   env={**os.environ, **keys}, check=True, capture_output=True)  # fmt: skip
    signing = ("--sign-key", str(tmp_path / "cosign.key"), "--sign-new-bundle-format")

    def release(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "polyarch", "release", "--root", str(tmp_path / "root"),
             "--progress", "plain", *signing], cwd=project, capture_output=True, text=True,
            timeout=900, env={**os.environ, **keys, **env},
        )  # fmt: skip

    bad = release({"JOB_EXIT": "3"})
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "not released: every target's tags left as they were" in bad.stderr
    assert "signed" not in bad.stdout  # what failed is not signed
    missing = httpx.get(f"http://{registry.host}/v2/bake/rel-app/manifests/1", headers=INDEX)
    assert missing.status_code == 404  # app passed, but job failed: no tag moved
    good = release({})
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"released {registry.host}/bake/rel-app:1" in good.stdout
    assert f"released {registry.host}/bake/rel-job:1" in good.stdout
    assert good.stdout.count("signed image sha256:") == 2  # each target's index, and
    assert good.stdout.count("signed linux/") == 4  # each platform's image
    for name in ("rel-app", "rel-job"):
        checked = subprocess.run(
            [sys.executable, "-m", "polyarch", "verify", "--no-run", "--key",
             str(tmp_path / "cosign.pub"), f"{registry.host}/bake/{name}:1"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert checked.returncode == 0 and "signed by" in checked.stdout, checked.stderr
    assert platforms_of(registry, "bake/rel-job", "1") == {"linux/amd64", "linux/arm64"}
