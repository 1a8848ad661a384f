"""One build, four platforms, RUN steps under QEMU user emulation (binfmt_misc, F flag)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from polyarch.layers import apply_layer, open_layer
from polyarch.oci.models import ImageConfig, Index, Manifest, parse_document
from polyarch.store import OciLayout
from tests.integration.helpers import EMULATED_PLATFORMS as PLATFORMS
from tests.integration.helpers import needs_emulation, polyarch
from tests.registry_server import RunningRegistry

EXPECTED = {
    "linux/amd64": ("x86_64", "amd64"),
    "linux/arm64": ("aarch64", "arm64"),
    "linux/arm/v7": ("armv7l", "armhf"),
    "linux/s390x": ("s390x", "s390x"),
}

pytestmark = needs_emulation


def images(root: Path, name: str) -> tuple[OciLayout, Index]:
    from polyarch.reference import Reference

    layout = OciLayout(root / "store")
    entry = layout.resolve(str(Reference.parse(name)))
    index = parse_document(layout.read_document(entry), entry.media_type)
    assert isinstance(index, Index)
    return layout, index


def test_four_platforms_each_with_its_own_machine(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "shared.txt").write_text("the same on every platform\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny}\nCOPY shared.txt /shared.txt\n"
        "RUN uname -m > /machine && dpkg --print-architecture > /arch\n"
    )
    root = tmp_path / "root"
    ref = registry.ref("multi/arch:1")
    out = tmp_path / "oci-out"
    polyarch("build", "--root", str(root), "--platform", ",".join(PLATFORMS), "-t", ref,
             "--push", "--output", f"type=oci,dest={out},tar=false", str(ctx))  # fmt: skip
    layout, index = images(root, ref)
    exported = OciLayout(out)
    top = exported.resolve("1")
    assert top.media_type == "application/vnd.oci.image.index.v1+json"
    assert top.digest == index.digest
    listed = polyarch("images", "--root", str(root)).stdout
    assert ",".join(PLATFORMS) in listed
    assert [str(d.platform) for d in index.images()] == PLATFORMS
    assert sum(d.is_attestation for d in index.manifests) == 4  # the push's provenance
    copy_layers = set()
    for entry in index.images():
        manifest = parse_document(layout.read_document(entry), entry.media_type)
        assert isinstance(manifest, Manifest)
        config = ImageConfig.parse(layout.blobs.read_bytes(manifest.config.digest))
        assert str(config.platform) == str(entry.platform)
        tree = tmp_path / f"tree-{entry.platform}".replace("/", "-")
        tree.mkdir()
        for layer in manifest.layers:
            with layout.blobs.open(layer.digest) as raw:
                apply_layer(open_layer(raw, layer.media_type), tree)  # type: ignore[arg-type]
        machine, arch = EXPECTED[str(entry.platform)]
        assert (tree / "machine").read_text().strip() == machine
        assert (tree / "arch").read_text().strip() == arch
        copy_layers.add(manifest.layers[1].digest)
    # The COPY layer is the same bytes for every platform: stored (and pushed) once.
    assert len(copy_layers) == 1
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    ours = polyarch("inspect", "--raw", ref).stdout.encode()
    assert raw == ours
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_a_failed_build_never_moves_the_tag(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    ref = registry.ref("multi/safe:1")
    (ctx / "Dockerfile").write_text(f"FROM {tiny}\nRUN echo v1 > /version\n")
    root = tmp_path / "root"
    polyarch("build", "--root", str(root), "--platform", "linux/amd64,linux/arm64", "-t", ref,
             "--push", str(ctx))  # fmt: skip
    before = polyarch("inspect", "--raw", ref).stdout
    # Fails on arm64 only: nothing is pushed, the tag keeps the previous index.
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny}\nRUN echo v2 > /version && test $(uname -m) = x86_64\n"
    )
    failed = polyarch("build", "--root", str(root), "--platform", "linux/amd64,linux/arm64",
                      "-t", ref, "--push", str(ctx), check=False)  # fmt: skip
    assert failed.returncode == 1
    assert "exited with status 1" in failed.stderr
    assert polyarch("inspect", "--raw", ref).stdout == before


def test_build_once_runs_neutral_stages_once_and_checks_their_output(
    tiny: str, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny} AS site\n"
        "RUN mkdir /out && echo '<h1>static</h1>' > /out/index.html && uname -m > /out/built-on\n"
        f"FROM {tiny} AS tool\n"
        "RUN mkdir /out && cp /bin/dash /out/dash\n"
        f"FROM {tiny}\n"
        "COPY --from=site /out /srv/www\n"
        "COPY --from=tool /out/dash /usr/local/bin/dash2\n"
    )
    root = tmp_path / "root"
    result = polyarch("build", "--root", str(root), "--platform", "linux/amd64,linux/arm64",
                      "--progress", "json", "-t", "local/once:1", str(ctx))  # fmt: skip
    events = [json.loads(line) for line in result.stderr.splitlines()]
    site_runs = [e for e in events if e["event"] == "start" and e["stage"] == "site"]
    assert len(site_runs) == 1 and site_runs[0]["platform"] == "linux/amd64"
    notes = [e["text"] for e in events if e["event"] == "note"]
    assert notes == ["/out/dash is an ELF binary: stage tool is built per platform"]
    tool_runs = sorted(e["platform"] for e in events
                       if e["event"] == "start" and e["stage"] == "tool")  # fmt: skip
    assert tool_runs == ["linux/amd64", "linux/arm64"]  # the check ran it on amd64 first
    layout, index = images(root, "local/once:1")
    site_layers = set()
    machines = {}
    for entry in index.manifests:
        manifest = parse_document(layout.read_document(entry), entry.media_type)
        assert isinstance(manifest, Manifest)
        site_layers.add(manifest.layers[1].digest)
        tree = tmp_path / f"t-{entry.platform}".replace("/", "-")
        tree.mkdir()
        for layer in manifest.layers:
            with layout.blobs.open(layer.digest) as raw:
                apply_layer(open_layer(raw, layer.media_type), tree)  # type: ignore[arg-type]
        assert (tree / "srv" / "www" / "built-on").read_text() == "x86_64\n"  # ran natively once
        elf = (tree / "usr" / "local" / "bin" / "dash2").read_bytes()
        machines[str(entry.platform)] = int.from_bytes(elf[18:20], "little")
    assert len(site_layers) == 1  # the same layer in every platform's image
    assert machines == {"linux/amd64": 62, "linux/arm64": 183}  # EM_X86_64, EM_AARCH64
    off = polyarch("build", "--root", str(root), "--platform", "linux/amd64,linux/arm64",
                   "--build-once", "off", "--no-cache", "--progress", "json",
                   "-t", "local/once:2", str(ctx))  # fmt: skip
    events = [json.loads(line) for line in off.stderr.splitlines()]
    assert len([e for e in events if e["event"] == "start" and e["stage"] == "site"]) == 2


def test_a_step_killed_by_sigill_under_emulation_names_the_cause(tiny: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # The shell kills itself the way an unsupported instruction would. It is the step's main
    # process: without an init in front of it, QEMU as PID 1 could not die and the build hung.
    (ctx / "Dockerfile").write_text(f"FROM {tiny}\nRUN kill -ILL $$\n")
    failed = polyarch("build", "--root", str(tmp_path / "root"), "--platform", "linux/arm64",
                      str(ctx), check=False)  # fmt: skip
    assert failed.returncode == 1
    assert "exited with status 132" in failed.stderr
    assert "killed by SIGILL (illegal instruction) while running under QEMU emulation of " \
           "linux/arm64" in failed.stderr  # fmt: skip
