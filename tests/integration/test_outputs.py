"""The outputs a buildx user reaches for, each read back by another tool: the final stage's
files (`type=local`, `type=tar`, per platform), OCI and docker archives (tarballs, also on
stdout), zstd layers (skopeo reads them), and `--load` into Debian's dockerd (`docker run` of
what was loaded). Real builds (Debian base, runc)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_build import polyarch, write_context
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def test_local_output_writes_the_final_stage_files(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN rm /etc/issue && echo built > "
                        "/built\nCOPY --chmod=0755 tool /usr/local/bin/tool\n",
                        {"tool": "#!/bin/sh\n"})  # fmt: skip
    out = tmp_path / "out"
    (out / "keep").parent.mkdir(parents=True)
    (out / "keep").write_text("mine\n")
    polyarch("build", "--root", str(tmp_path / "root"), "-o", f"type=local,dest={out}", str(ctx))
    assert (out / "built").read_text() == "built\n"
    assert (out / "usr" / "local" / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert (out / "etc" / "passwd").exists()  # the base image's files too
    assert not (out / "etc" / "issue").exists()  # deleted by a step: not there
    assert (out / "keep").read_text() == "mine\n"  # merged into what was there
    # The path shorthand is the same output.
    short = tmp_path / "short"
    polyarch("build", "--root", str(tmp_path / "root"), "-o", str(short), str(ctx))
    assert (short / "built").read_text() == "built\n"


def test_local_and_tar_outputs_of_several_platforms(tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nARG TARGETARCH\nCOPY app-$TARGETARCH "
                        "/app\n", {"app-amd64": "x86\n", "app-arm64": "arm\n"})  # fmt: skip
    root = str(tmp_path / "root")
    both = "linux/amd64,linux/arm64"
    out = tmp_path / "out"
    polyarch("build", "--root", root, "--platform", both, "-o", f"type=local,dest={out}",
             str(ctx))  # fmt: skip
    assert (out / "linux_amd64" / "app").read_text() == "x86\n"
    assert (out / "linux_arm64" / "app").read_text() == "arm\n"
    archive = tmp_path / "files.tar"
    polyarch("build", "--root", root, "--platform", both, "-o", f"type=tar,dest={archive}",
             str(ctx))  # fmt: skip
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
        assert names == ["linux_amd64", "linux_amd64/app", "linux_arm64", "linux_arm64/app"]
        member = tar.extractfile("linux_arm64/app")
        assert member is not None and member.read() == b"arm\n"
    # `-o -`: the tar on stdout, and nothing else there.
    streamed = subprocess.run([sys.executable, "-m", "polyarch", "build", "--root", root,
                               "--platform", "linux/amd64", "-o", "-", str(ctx)],
                              capture_output=True, timeout=300)  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr
    with tarfile.open(fileobj=io.BytesIO(streamed.stdout)) as tar:
        assert tar.getnames() == ["app"]


def test_oci_and_docker_archives_are_files(base: str, tmp_path: Path, skopeo: str) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo hi > /hi\n", {})
    root = str(tmp_path / "root")
    archive = tmp_path / "image.tar"
    polyarch("build", "--root", root, "-t", "local/arch:1", "-o", f"type=oci,dest={archive}",
             str(ctx))  # fmt: skip
    assert archive.is_file()
    inspected = json.loads(
        subprocess.run(
            [skopeo, "inspect", f"oci-archive:{archive}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert inspected["Architecture"] == "amd64" and len(inspected["Layers"]) >= 2
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    annotations = index["manifests"][0]["annotations"]
    assert annotations["org.opencontainers.image.ref.name"] == "1"
    assert annotations["io.containerd.image.name"].endswith("local/arch:1")
    streamed = subprocess.run([sys.executable, "-m", "polyarch", "build", "--root", root, "-t",
                               "local/arch:1", "-o", "type=docker,dest=-", str(ctx)],
                              capture_output=True, timeout=300)  # fmt: skip
    assert streamed.returncode == 0, streamed.stderr
    with tarfile.open(fileobj=io.BytesIO(streamed.stdout)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["local/arch:1"]


def test_zstd_layers_on_a_registry_and_in_an_oci_archive(
    base: str, registry: RunningRegistry, tmp_path: Path, skopeo: str
) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo zstd > /z\n", {})
    root = str(tmp_path / "root")
    ref = registry.ref("outputs/zstd:1")
    polyarch("build", "--root", root, "-t", ref, "-o", "type=registry,compression=zstd",
             str(ctx))  # fmt: skip

    def raw_of(where: str) -> dict[str, Any]:
        done = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", where],
                              capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    # An index of the image and its provenance (a push's default), made for the zstd
    # manifest: the attestation names the image that was pushed, not the gzip one kept here.
    index = raw_of(f"docker://{ref}")
    image, attestation = index["manifests"]
    assert attestation["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    repository = ref.rsplit(":", 1)[0]
    statement = raw_of(f"docker://{repository}@{attestation['digest']}")
    assert statement["subject"]["digest"] == image["digest"]
    raw = raw_of(f"docker://{repository}@{image['digest']}")
    kinds = [layer["mediaType"] for layer in raw["layers"]]
    assert kinds[-1] == ZSTD  # the build's own layer
    assert kinds[0] == GZIP  # the base image's keeps its compression without force
    # skopeo reads the zstd layers whole (it checks every blob's digest as it copies).
    subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{ref}",
                    f"dir:{tmp_path / 'copied'}"], capture_output=True, check=True)  # fmt: skip
    forced = tmp_path / "forced.tar"
    polyarch("build", "--root", root, "-t", ref, "-o",
             f"type=oci,dest={forced},compression=zstd,compression-level=9,force-compression=true",
             str(ctx))  # fmt: skip
    layers = json.loads(
        subprocess.run(
            [skopeo, "inspect", "--raw", f"oci-archive:{forced}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {layer["mediaType"] for layer in layers["layers"]} == {ZSTD}
    # The same content: the config (diff_ids) did not change.
    assert layers["config"]["digest"] == raw["config"]["digest"]


def test_load_into_the_docker_engine(base: str, docker_engine: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f'FROM {base}\nRUN echo loaded > /msg\n'
                        'CMD ["cat", "/msg"]\n', {})  # fmt: skip
    env = {**os.environ, "DOCKER_HOST": docker_engine}
    built = subprocess.run([sys.executable, "-m", "polyarch", "build", "--root",
                            str(tmp_path / "root"), "-t", "local/loaded:1", "--load", str(ctx)],
                           capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "loaded into the local engine" in built.stdout
    ran = subprocess.run(["docker", "-H", docker_engine, "run", "--rm", "--network", "none",
                          "local/loaded:1"], capture_output=True, text=True)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "loaded\n"
    two = write_context(tmp_path / "two", "FROM scratch\nCOPY a /a\n", {"a": "a"})
    several = subprocess.run([sys.executable, "-m", "polyarch", "build", "--root",
                              str(tmp_path / "root"), "--platform", "linux/amd64,linux/arm64",
                              "-t", "local/loaded:2", "--load", str(two)],
                             capture_output=True, text=True, env=env)  # fmt: skip
    assert several.returncode == 1 and "Traceback" not in several.stderr
    assert "keeps one platform per image" in several.stderr  # Debian's dockerd: classic store


def test_load_without_an_engine_says_so(tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a /a\n", {"a": "a"})
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"}
    failed = subprocess.run([sys.executable, "-m", "polyarch", "build", "--root",
                             str(tmp_path / "root"), "--load", str(ctx)],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert failed.returncode == 1
    assert "--load: no container engine at unix://" in failed.stderr
    assert "Traceback" not in failed.stderr
