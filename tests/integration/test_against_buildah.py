"""The same Dockerfiles built by polyarch and by buildah must give the same image.

Each case under tests/data/compare is built by both (buildah with `--isolation chroot`), both
images are exported as OCI layouts, their layers applied in order, and the results compared:
paths, types, modes, owners, link targets and file contents, and the config fields a user
sees (Env, Entrypoint, Cmd, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal,
Healthcheck). Heredocs are not compared: Debian's buildah 1.28 does not support them (polyarch's
own integration tests cover them). A case may hold a `flags` file (flags both tools take, such
as --secret) and a `buildah-differs` file (paths where buildah 1.28 is known to differ from
BuildKit, with why; polyarch does as BuildKit).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyarch.layers import apply_layer, open_layer
from polyarch.oci.models import Manifest, parse_document
from polyarch.store import OciLayout
from tests.integration.helpers import remove_tree

CASES = sorted((Path(__file__).parent.parent / "data" / "compare").iterdir())
CONFIG_FIELDS = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Labels", "ExposedPorts",
                 "Volumes", "StopSignal", "Healthcheck")  # fmt: skip
# Written by the runtime, not by the Dockerfile: each tool handles these mount points itself.
RUNTIME_PATHS = {"etc/hosts", "etc/resolv.conf", "etc/hostname", "run/.containerenv"}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("buildah") or not shutil.which("runc"),
    reason="needs root, buildah and runc",
)


@pytest.fixture(scope="module")
def buildah_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """One buildah store for all cases: the base image is pulled into it once."""
    root = tmp_path_factory.mktemp("buildah")
    yield ["--storage-driver", "vfs", "--root", str(root / "root"), "--runroot", str(root / "run")]
    remove_tree(root)


def render(case: Path, base: str, into: Path) -> Path:
    shutil.copytree(case, into, symlinks=True)
    dockerfile = into / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("{base}", base))
    return into


def tree(layout_dir: Path, name: str, into: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    layout = OciLayout(layout_dir)
    entry = layout.resolve(name)
    manifest = parse_document(layout.read_document(entry), entry.media_type)
    assert isinstance(manifest, Manifest)
    into.mkdir()
    for layer in manifest.layers:
        with layout.blobs.open(layer.digest) as raw:
            apply_layer(open_layer(raw, layer.media_type), into)  # type: ignore[arg-type]
    files: dict[str, Any] = {}
    for path in sorted(into.rglob("*")):
        rel = str(path.relative_to(into))
        if rel in RUNTIME_PATHS:
            continue
        st = path.lstat()
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            what: Any = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = None
        files[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
    config = json.loads(layout.blobs.read_bytes(manifest.config.digest))["config"]
    return files, config


def case_flags(case: Path, ctx: Path) -> list[str]:
    """Flags both tools take (a case's `flags` file, one per line; {ctx} is its directory)."""
    flags_file = case / "flags"
    if not flags_file.is_file():
        return []
    return [line.replace("{ctx}", str(ctx)) for line in flags_file.read_text().splitlines()]


def build_with_buildah(ctx: Path, flags: list[str], name: str, out: Path,
                       storage: list[str], env: dict[str, str] | None = None) -> None:  # fmt: skip
    """buildah's image of `ctx`, exported as the OCI layout `out` (tag 1)."""
    built = subprocess.run(
        ["buildah", *storage, "build", "--isolation", "chroot", "--tls-verify=false", "-q",
         "--format", "docker",  # buildah drops HEALTHCHECK from OCI configs; BuildKit keeps it
         "-t", f"localhost/cmp-{name}:1", *flags, str(ctx)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    subprocess.run(
        ["buildah", *storage, "push", "--tls-verify=false", "--format", "v2s2",
         f"localhost/cmp-{name}:1", f"oci:{out}:1"],
        check=True, capture_output=True,
    )  # fmt: skip


def assert_same_image(case: Path, ours: Path, theirs: Path, work: Path) -> None:
    """The two layouts' images (tag 1) have the same files and the same config fields, but
    for what the case's `buildah-differs` lists (where buildah differs from BuildKit)."""
    our_files, our_config = tree(ours, "1", work / "our-tree")
    their_files, their_config = tree(theirs, "1", work / "their-tree")
    differs = case / "buildah-differs"
    for line in differs.read_text().splitlines() if differs.is_file() else []:
        if line.strip() and not line.startswith("#"):
            their_files.pop(line.strip(), None)
    only_ours = sorted(set(our_files) - set(their_files))
    only_theirs = sorted(set(their_files) - set(our_files))
    differ = {p: (our_files[p], their_files[p]) for p in sorted(set(our_files) & set(their_files))
              if our_files[p] != their_files[p]}  # fmt: skip
    assert (only_ours, only_theirs, differ) == ([], [], {})
    for name in CONFIG_FIELDS:
        mine, other = our_config.get(name), their_config.get(name)
        if name == "Labels" and other:
            other = {k: v for k, v in other.items() if k != "io.buildah.version"} or None
        if name == "Env":
            # BuildKit replaces a redefined variable in place; buildah moves it to the end.
            # polyarch does as BuildKit: compare the variables, not their order.
            mine = dict(e.split("=", 1) for e in mine or [])
            other = dict(e.split("=", 1) for e in other or [])
        assert (name, mine or None) == (name, other or None)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_same_image_as_buildah(
    base: str, case: Path, tmp_path: Path, buildah_storage: list[str]
) -> None:
    ctx = render(case, base, tmp_path / "ctx")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    flags = case_flags(case, ctx)
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(tmp_path / "root"),
         "--progress", "plain", "-t", f"cmp/{case.name}:1", "--output",
         f"type=oci,dest={ours},tar=false", *flags, str(ctx)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    build_with_buildah(ctx, flags, case.name, theirs, buildah_storage)
    assert_same_image(case, ours, theirs, tmp_path)
