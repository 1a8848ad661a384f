"""The corpus (tests/data/corpus): Dockerfiles written after the patterns in wide use, built
by polyarch and run; each image must print what its `expect` file says. The builds fetch
packages (npm, PyPI, Debian) as such Dockerfiles do, with the host's CA bundle for TLS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_against_buildah import case_flags
from tests.integration.test_build import run_image
from tests.registry_server import RunningRegistry

CORPUS = Path(__file__).parent.parent / "data" / "corpus"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


@pytest.fixture(scope="module")
def bases(registry: RunningRegistry, base: str) -> dict[str, str]:
    """The corpus's base images (node, python, golang from Debian packages), pushed."""
    from tools.base_images import push

    from polyarch.api import RegistryOptions, Session

    refs = {"base": base}
    with Session(RegistryOptions()) as session:
        for name in ("node", "python", "golang"):
            refs[name] = registry.ref(f"base/{name}:bookworm")
            push(name, ["amd64"], refs[name], session)
    return refs


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_corpus_builds_and_runs(case: Path, bases: dict[str, str], tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    shutil.copytree(case, ctx, symlinks=True)
    text = (ctx / "Dockerfile").read_text()
    for name, ref in bases.items():
        text = text.replace("{" + name + "}", ref)
    (ctx / "Dockerfile").write_text(text)
    flags = case_flags(case, ctx)
    root = tmp_path / "root"
    env = {**os.environ, "CORPUS_NPM_TOKEN": "t" * 20}
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
         "-t", f"corpus/{case.name}:1", *flags, str(ctx)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    code, output = run_image(root, f"corpus/{case.name}:1", tmp_path / "run")
    assert code == 0, output
    assert output.strip() == (case / "expect").read_text().strip()
    # The second build of the same context is all cache hits (cache mounts do not change keys).
    again = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
         "-t", f"corpus/{case.name}:2", *flags, str(ctx)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "(0 steps run" in again.stdout, again.stdout
