"""Builders with nodes: a platform built on a node reached over a real OpenSSH server (its own
workspace, pulling on its own), brought home as verified blobs, one index made here; the
context sent by content (nothing sent twice); unreachable and dying nodes, with and without
fallback; a node speaking another protocol version."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from polyarch.nodes.protocol import PROTOCOL_VERSION
from tests.git_server import GitDaemon, SshServer, start_sshd
from tests.integration.test_build import write_context
from tests.integration.test_build_surface import run, tags
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)

DOCKERFILE = 'FROM {base}\nCOPY app.txt /app.txt\nRUN uname -m > /arch\nCMD ["cat", "/arch"]\n'
BOTH = "linux/amd64,linux/arm64"


def env_for(tmp_path: Path, sshd: SshServer | None = None) -> dict[str, str]:
    env = dict(os.environ, POLYARCH_CONFIG_DIR=str(tmp_path / "config"))
    if sshd is not None:
        env["POLYARCH_SSH_COMMAND"] = (
            f"ssh -i {sshd.client_key} -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        )
    return env


def node_command(root: Path) -> str:
    return f"POLYARCH_ROOT={root} {sys.executable} -m polyarch"


def use_arm_node(name: str, endpoint: str, node_root: Path, env: dict[str, str]) -> None:
    """A builder NAME whose node `arm` (linux/arm64) is polyarch at ENDPOINT, with its own
    workspace root; made current."""
    made = run("builder", "create", name, "--node", f"arm={endpoint}", "--platform",
               "linux/arm64", "--node-command", node_command(node_root), "--use",
               env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_a_platform_built_on_an_ssh_node(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path, sshd)
    node_root = tmp_path / "node-root"
    use_arm_node("farm", f"ssh://root@127.0.0.1:{sshd.port}", node_root, env)
    inspected = run("builder", "inspect", "--format", "json", env=env)
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    node = json.loads(inspected.stdout)["nodes"][0]
    assert node["reachable"] and node["native"] == ["linux/amd64"]  # this machine, over SSH
    assert node["runtime"].startswith("runc") and node["free"] > 0
    # Declared linux/arm64, which this machine emulates: said plainly, and alike everywhere.
    assert node["declared"] == [{"platform": "linux/arm64", "state": "emulated"}]

    ctx = write_context(tmp_path / "ctx", DOCKERFILE.format(base=tiny),
                        {"app.txt": "one\n", "docs/unused.txt": "no step takes me\n"})  # fmt: skip
    doctor = run("doctor", "--root", str(tmp_path / "d"), "--builder", "farm", "--format", "json",
                 env=env)  # fmt: skip
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    check = checks[f"node arm (ssh://root@127.0.0.1:{sshd.port})"]
    assert check["level"] == "warn", check
    assert "declared linux/arm64, but the node reports emulating it" in check["detail"]
    planned = run("plan", "--platform", BOTH, str(ctx), env=env)  # the current builder's
    assert planned.returncode == 0, planned.stderr
    assert "linux/arm64: node arm" in planned.stdout, planned.stdout
    assert "(emulated on node arm: declared for it, but the node reports emulating it" in (
        planned.stdout)  # fmt: skip
    assert "1 emulated on node arm" in planned.stdout  # the stage table agrees
    assert "of them under emulation" in planned.stdout
    ref = registry.ref("nodes/app:1")
    root = str(tmp_path / "root")
    built = run("build", "--root", root, "--platform", BOTH, "-t", ref, "--push",
                "--progress", "json", str(ctx), env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    stream = events(built.stderr)
    on_node = {e["platform"] for e in stream if e.get("node") == "arm" and e.get("step")}
    assert on_node == {"linux/arm64"}
    notes = [str(e.get("text")) for e in stream if e["event"] == "note"]
    assert any("linux/arm64 is built on node arm" in n for n in notes)
    # The Dockerfile first, then app.txt when the COPY read it: no other file is sent.
    assert any("context sent (2 files it did not have of the 2 its build read" in n
               for n in notes), notes  # fmt: skip
    held = node_root / "nodes" / "files" / "blobs" / "sha256"
    assert not (held / hashlib.sha256(b"no step takes me\n").hexdigest()).exists()
    assert (held / hashlib.sha256(b"one\n").hexdigest()).exists()
    result = stream[-1]
    arm = result["polyarch.platforms"]["linux/arm64"]  # type: ignore[index]
    # The node built it in its own workspace; the blobs came home verified.
    assert (node_root / "store" / "blobs" / "sha256" / arm["digest"][7:]).is_file()
    assert (Path(root) / "store" / "blobs" / "sha256" / arm["digest"][7:]).is_file()
    assert pushed_entries(registry, "nodes/app:1") == ["amd64", "arm64", "unknown", "unknown"]
    verified = run("verify", "--root", str(tmp_path / "v"), "--platform", BOTH, "--run",
                   'test "$(cat /arch)" = "$(uname -m)"', ref, env=env)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Again, nothing changed: nothing sent, nothing run, here or on the node.
    again = run("build", "--root", root, "--platform", BOTH, "-t", registry.ref("nodes/app:2"),
                "--progress", "json", str(ctx), env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    stream = events(again.stderr)
    assert any("context sent (0 files" in str(e.get("text")) for e in stream)
    assert stream[-1]["polyarch.steps"]["run"] == 0  # type: ignore[index]
    # The same images (unpushed, the index carries no provenance this time).
    assert stream[-1]["polyarch.platforms"] == result["polyarch.platforms"]
    # One file changed: only it is sent.
    (ctx / "app.txt").write_text("two\n")
    third = run("build", "--root", root, "--platform", BOTH, "-t", registry.ref("nodes/app:3"),
                "--progress", "json", str(ctx), env=env)  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert any("context sent (1 files" in str(e.get("text")) for e in events(third.stderr))
    # Why the copy ran again, here and on the node (explained there, against its last build).
    copies = [e for e in events(third.stderr) if e["event"] == "start"
              and e.get("description") == "COPY app.txt /app.txt"]  # fmt: skip
    causes = {(e["platform"], e.get("node", "")): e["cause"] for e in copies}
    assert causes == {("linux/amd64", ""): "context file app.txt was edited",
                      ("linux/arm64", "arm"): "context file app.txt was edited"}  # fmt: skip


def test_an_unreachable_node_falls_back_or_fails(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path, sshd)
    closed = sshd.port + 1 if sshd.port < 65000 else sshd.port - 1
    made = run("builder", "create", "gone", "--node", f"arm=ssh://root@127.0.0.1:{closed}",
               "--platform", "linux/arm64", "--use", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    inspected = run("builder", "inspect", env=env)
    assert inspected.returncode == 1 and "unreachable" in inspected.stdout
    ctx = write_context(tmp_path / "ctx", DOCKERFILE.format(base=tiny), {"app.txt": "x\n"})
    ref = registry.ref("nodes/fallback:1")
    fell_back = run("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "-t", ref,
                    "--push", "--progress", "plain", str(ctx), env=env)  # fmt: skip
    assert fell_back.returncode == 0, fell_back.stderr
    assert "its platforms are built here instead" in fell_back.stderr
    strict_ref = registry.ref("nodes/strict:1")
    strict = run("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "-t",
                 strict_ref, "--push", "--no-fallback", str(ctx), env=env)  # fmt: skip
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert "node arm" in strict.stderr and "--no-fallback" in strict.stderr
    assert tags(registry, "nodes/strict") == []


@pytest.mark.usefixtures("named_semaphores")
def test_a_node_that_dies_mid_build(tiny: str, registry: RunningRegistry, tmp_path: Path) -> None:
    env = env_for(tmp_path)
    # The worker is killed 4 s into the build, while its RUN sleeps.
    dying = f"timeout -s KILL 4 env {node_command(tmp_path / 'node-root')}"
    made = run("builder", "create", "flaky", "--node", "arm=local", "--platform", "linux/arm64",
               "--node-command", dying, "--use", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN sleep 8 && uname -m > /arch\n", {})
    dies_ref = registry.ref("nodes/dies:1")
    strict = run("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "-t",
                 dies_ref, "--push", "--no-fallback", str(ctx), env=env)  # fmt: skip
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert "node arm" in strict.stderr
    assert tags(registry, "nodes/dies") == []  # nothing partial pushed, no tag moved
    rebuilt = run("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "-t",
                  registry.ref("nodes/dies:1"), "--push", "--progress", "plain", str(ctx),
                  env=env)  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "here instead" in rebuilt.stderr and tags(registry, "nodes/dies") == ["1"]
    # The killed worker's step (its container, its overlay) is cleared on the node's next use.
    node_root = tmp_path / "node-root"
    cleared = run("clean", "--root", str(node_root), "nodes/none", env=env)
    assert cleared.returncode == 0, cleared.stderr
    assert str(node_root) not in Path("/proc/mounts").read_text()


def test_ctrl_c_stops_a_nodes_running_step(tiny: str, sshd: SshServer, tmp_path: Path) -> None:
    """Ctrl-C here while a node's step runs: the node's worker sees the connection end and
    stops as a local build stops (its step killed, its container and mounts gone) within 2
    seconds, and the node builds again at once."""
    from tests.integration.test_interrupts import containers, overlay_mounts

    env = env_for(tmp_path, sshd)
    node_root = tmp_path / "node-root"
    scratch = set(Path(tempfile.gettempdir()).glob("polyarch-stages-*"))
    use_arm_node("stop", f"ssh://root@127.0.0.1:{sshd.port}", node_root, env)
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN sleep 300\n", {})
    build = subprocess.Popen(
        [sys.executable, "-m", "polyarch", "build", "--root", str(tmp_path / "root"),
         "--platform", "linux/arm64", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (node_root.exists() and containers(node_root)):
        assert build.poll() is None, build.communicate()[1]
        assert time.monotonic() < deadline, "the node's step never started"
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.monotonic()
    build.send_signal(signal.SIGINT)
    _out, err = build.communicate(timeout=30)
    assert build.returncode == 130 and "Traceback" not in err, err

    def workers() -> list[str]:
        """The node's worker processes (its root is in their environment)."""
        found = subprocess.run(["pgrep", "-f", "polyarch worker"], capture_output=True,
                               text=True).stdout.split()  # fmt: skip
        alive = []
        for pid in found:
            with contextlib.suppress(OSError):
                if str(node_root) in Path(f"/proc/{pid}/environ").read_text(errors="replace"):
                    alive.append(pid)
        return alive

    try:
        while containers(node_root) or overlay_mounts(node_root) or workers():
            assert time.monotonic() - sent < 10, (containers(node_root), workers())
            time.sleep(0.05)
    finally:  # a worker that did not stop is stopped, so that its step leaves nothing behind
        for pid in workers():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGINT)
    took = time.monotonic() - sent
    assert took < 2.0, f"the node's step took {took:.1f} s to stop"
    # Nothing of the interrupted build is left here either.
    assert set(Path(tempfile.gettempdir()).glob("polyarch-stages-*")) == scratch
    again = run("build", "--root", str(tmp_path / "root"), "--platform", "linux/arm64",
                "--progress", "json", str(write_context(tmp_path / "ctx2", f"FROM {tiny}\n"
                                                        "RUN true\n", {})), env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr


def test_a_node_of_another_protocol_version(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    fake = tmp_path / "old-polyarch"
    fake.write_text("#!/bin/sh\nread hello\n"
                    'echo \'{"op": "hello", "version": 99, "polyarch": "9.9.9"}\'\n')  # fmt: skip
    fake.chmod(0o755)
    made = run("builder", "create", "old", "--node", "n=local", "--node-command", str(fake),
               env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    inspected = run("builder", "inspect", "old", env=env)
    assert inspected.returncode == 1
    assert "version 99 (polyarch 9.9.9)" in inspected.stdout
    assert f"speaks version {PROTOCOL_VERSION}" in inspected.stdout


@pytest.fixture
def isolated_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """sshd in a network namespace of its own (a veth pair to this one): a node that cannot
    reach the registries on this machine's 127.0.0.1."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")
    n = os.getpid() % 10000
    ns, outer, inner, net = f"polyarch-node-{n}", f"pa{n}o", f"pa{n}i", f"10.250.{n % 250}"

    def ip(*args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True)

    ip("netns", "add", ns)
    try:
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", ns)
        ip("addr", "add", f"{net}.1/30", "dev", outer)
        ip("link", "set", outer, "up")
        for command in (("addr", "add", f"{net}.2/30", "dev", inner), ("link", "set", inner, "up"),
                        ("link", "set", "lo", "up")):  # fmt: skip
            ip("netns", "exec", ns, "ip", *command)
        server = start_sshd(tmp_path / "sshd", host=f"{net}.2", netns=ns)
        try:
            yield server
        finally:
            server.stop()
    finally:
        ip("netns", "del", ns, check=False)
        ip("link", "del", outer, check=False)


def test_a_node_that_cannot_reach_the_registry_gets_the_bases_from_here(
    tiny: str, registry: RunningRegistry, isolated_sshd: SshServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path, isolated_sshd)
    endpoint = f"ssh://root@{isolated_sshd.host}:{isolated_sshd.port}"
    use_arm_node("iso", endpoint, tmp_path / "node-root", env)
    ctx = write_context(tmp_path / "ctx", DOCKERFILE.format(base=tiny), {"app.txt": "one\n"})
    epoch = ("--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    built = run("build", "--root", str(tmp_path / "root"), "--platform", BOTH, *epoch,
                "-t", registry.ref("nodes/iso:1"), "--push", "--progress", "json", str(ctx),
                env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    stream = events(built.stderr)
    notes = [str(e.get("text")) for e in stream if e["event"] == "note"]
    assert any(f"node arm cannot reach {registry.host}" in n and "is sent from here" in n
               for n in notes)  # fmt: skip
    on_node = [e for e in stream if e.get("node") == "arm" and e["event"] == "done"]
    assert on_node  # the node did build it
    arm = stream[-1]["polyarch.platforms"]["linux/arm64"]["digest"]  # type: ignore[index]
    # Same inputs, same image, wherever it was built: here, the same arm64 image.
    here = run("build", "--root", str(tmp_path / "here"), "--builder", "default", "--platform",
               "linux/arm64", *epoch, "--progress", "json", str(ctx), env=env)  # fmt: skip
    assert here.returncode == 0, here.stderr
    assert events(here.stderr)[-1]["containerimage.digest"] == arm
    # Pushing from a node that cannot reach the registry fails cleanly: no tag is written.
    from_node = run("build", "--root", str(tmp_path / "root"), "--platform", BOTH, *epoch,
                    "-t", registry.ref("nodes/iso-pushed:1"), "--push", "--push-from-nodes",
                    str(ctx), env=env)  # fmt: skip
    assert from_node.returncode == 1 and "Traceback" not in from_node.stderr
    assert "on node arm" in from_node.stderr, from_node.stderr
    assert tags(registry, "nodes/iso-pushed") == []


ONCE = """\
FROM {base} AS bundle
COPY src.txt /src.txt
RUN mkdir -p /out && tr a-z A-Z < /src.txt > /out/bundle.txt && uname -m > /out/built-on \\
    && chown -R 1234:5678 /out
FROM {base}
RUN uname -m > /arch
COPY --from=bundle /out /app
"""


def test_build_once_stages_run_here_and_their_outputs_reach_the_node(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    env = env_for(tmp_path, sshd)
    use_arm_node("once", f"ssh://root@127.0.0.1:{sshd.port}", tmp_path / "node-root", env)
    ctx = write_context(tmp_path / "ctx", ONCE.format(base=tiny), {"src.txt": "bundle me\n"})
    planned = run("plan", "--platform", BOTH, str(ctx), env=env)
    assert planned.returncode == 0, planned.stderr
    assert "build-once stages run here and are sent to the nodes: bundle" in planned.stdout
    epoch = ("--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    root = str(tmp_path / "root")
    built = run("build", "--root", root, "--platform", BOTH, *epoch, "-t",
                registry.ref("nodes/once:1"), "--provenance=mode=min", "--progress", "json",
                str(ctx), env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    stream = events(built.stderr)
    notes = [str(e.get("text")) for e in stream if e["event"] == "note"]
    assert any("node arm: build-once stage bundle sent, built here" in n for n in notes), notes
    # The stage ran once, here; the node ran only the arm64 image's own steps.
    node_stages = {e.get("stage") for e in stream if e.get("node") == "arm" and e.get("step")}
    assert "bundle" not in node_stages and node_stages
    ran_here = [e for e in stream if not e.get("node") and e.get("stage") == "bundle"
                and e["event"] == "done" and "RUN" in str(e.get("description"))]  # fmt: skip
    assert len(ran_here) == 1
    # The node ran the step that does not wait for the stage before the stage reached it.
    sent_at = next(i for i, e in enumerate(stream) if "stage bundle sent" in str(e.get("text")))
    warm = [i for i, e in enumerate(stream) if e.get("node") == "arm" and e["event"] == "done"
            and "uname" in str(e.get("description")) and e.get("cache") == "run"]  # fmt: skip
    assert warm and warm[0] < sent_at, stream
    arm = stream[-1]["polyarch.platforms"]["linux/arm64"]["digest"]  # type: ignore[index]
    # The same arm64 image as the all-local build makes (owners and times of the shipped
    # files kept; the stage built natively on this amd64 machine in both).
    here = run("build", "--root", str(tmp_path / "here"), "--builder", "default", "--platform",
               "linux/arm64", *epoch, "-t", registry.ref("nodes/once:1"),
               "--provenance=mode=min", "--progress", "json", str(ctx), env=env)  # fmt: skip
    assert here.returncode == 0, here.stderr
    assert events(here.stderr)[-1]["polyarch.platforms"]["linux/arm64"]["digest"] == arm  # type: ignore[index]
    # Its provenance too: the stage's base (built here, natively) is among the node's
    # platform's materials, as in the local build.
    provenances = [stored_provenance(Path(where) / "store", arm)
                   for where in (root, tmp_path / "here")]  # fmt: skip
    materials = [p["buildDefinition"]["resolvedDependencies"] for p in provenances]
    assert materials[0] == materials[1] and len(materials[0]) == 2, materials
    # Nothing changed: nothing runs here or on the node, nothing is sent again.
    again = run("build", "--root", root, "--platform", BOTH, *epoch, "-t",
                registry.ref("nodes/once:2"), "--progress", "json", str(ctx), env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    stream = events(again.stderr)
    assert stream[-1]["polyarch.steps"]["run"] == 0  # type: ignore[index]
    assert any("stage bundle sent, built here (0 files" in str(e.get("text")) for e in stream)


def pushed_entries(registry: RunningRegistry, name: str) -> list[str]:
    """The architectures of a pushed index's entries: the images, then their provenance
    (`unknown`, a push's default)."""
    repository, _, tag = name.partition(":")
    accept = {"Accept": "application/vnd.oci.image.index.v1+json"}
    url = f"http://{registry.host}/v2/{repository}/manifests/{tag}"
    return [
        m["platform"]["architecture"] for m in httpx.get(url, headers=accept).json()["manifests"]
    ]


def stored_provenance(store: Path, manifest: str) -> dict[str, Any]:
    """The provenance predicate attached to the image manifest `manifest` in a workspace's
    store (an OCI layout), read from its files."""

    def blob(digest: str) -> Any:
        return json.loads((store / "blobs" / "sha256" / digest[7:]).read_bytes())

    for top in blob_index(store):
        for entry in blob(top).get("manifests", []):
            annotations = entry.get("annotations", {})
            if annotations.get("vnd.docker.reference.digest") != manifest:
                continue
            for layer in blob(entry["digest"])["layers"]:
                statement = blob(layer["digest"])
                if statement["predicateType"] == "https://slsa.dev/provenance/v1":
                    return statement["predicate"]  # type: ignore[no-any-return]
    raise AssertionError(f"no provenance for {manifest} in {store}")


def blob_index(store: Path) -> list[str]:
    index = json.loads((store / "index.json").read_text())
    return [m["digest"] for m in index["manifests"]
            if m["mediaType"] == "application/vnd.oci.image.index.v1+json"]  # fmt: skip


def onbuild_base(
    tiny: str,
    registry: RunningRegistry,
    tmp_path: Path,
    env: dict[str, str],
    copy: str,
    name: str,
) -> str:
    """A linux/arm64 base image pushed as `name`, whose ONBUILD trigger is `COPY {copy}`
    (which the plan here cannot see)."""
    base_ctx = write_context(tmp_path / "base", f"FROM {tiny}\nONBUILD COPY {copy}\n", {})
    base_ref = registry.ref(name)
    pushed = run("build", "--root", str(tmp_path / "base-root"), "--platform", "linux/arm64",
                 "-t", base_ref, "--push", str(base_ctx), env=env)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    return base_ref


def test_a_node_asks_for_what_its_steps_read_even_unforeseen(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    """A base image whose ONBUILD trigger copies *.txt: nothing here can foresee it; the
    node's copy asks for those files when it runs (BuildKit's filesync), and the build
    succeeds the first time, with the files the trigger copies."""
    from tests.integration.test_build import flatten, image

    env = env_for(tmp_path, sshd)
    base_ref = onbuild_base(tiny, registry, tmp_path, env, "*.txt /d/", "nodes/onbuild:1")
    use_arm_node("ob", f"ssh://root@127.0.0.1:{sshd.port}", tmp_path / "node-root", env)
    ctx = write_context(tmp_path / "ctx", f"FROM {base_ref}\nCOPY a.txt /a.txt\n",
                        {"a.txt": "a\n", "b.txt": "b\n", "c.md": "not read\n"})  # fmt: skip
    root = tmp_path / "root"
    built = run("build", "--root", str(root), "--platform", "linux/arm64", "-t", "local/ob:1",
                "--progress", "json", str(ctx), env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    notes = [str(e.get("text")) for e in events(built.stderr) if e["event"] == "note"]
    # The Dockerfile, a.txt and b.txt; c.md is read by no step.
    assert any("context sent (3 files it did not have of the 3 its build read" in n
               for n in notes), notes  # fmt: skip
    layout, manifest, _config = image(root, "local/ob:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert sorted(p.name for p in (tree / "d").iterdir()) == ["a.txt", "b.txt"]
    held = tmp_path / "node-root" / "nodes" / "files" / "blobs" / "sha256"
    assert not (held / hashlib.sha256(b"not read\n").hexdigest()).exists()


def test_a_source_missing_from_the_context_fails_on_a_node_as_here(
    tiny: str, sshd: SshServer, tmp_path: Path
) -> None:
    """A COPY of a file the context does not have: the node's build fails with the error a
    local build gives (typed missing-source on the wire), at the Dockerfile's line."""
    env = env_for(tmp_path, sshd)
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nCOPY a.txt /a\nCOPY gone.txt /g\n",
                        {"a.txt": "a\n"})  # fmt: skip
    here = run("build", "--root", str(tmp_path / "here"), "--platform", "linux/arm64",
               str(ctx), env=env)  # fmt: skip
    use_arm_node("miss", f"ssh://root@127.0.0.1:{sshd.port}", tmp_path / "node-root", env)
    there = run("build", "--root", str(tmp_path / "root"), "--platform", "linux/arm64",
                str(ctx), env=env)  # fmt: skip
    assert here.returncode == there.returncode == 1, there.stderr
    said_here = [line for line in here.stderr.splitlines() if "gone.txt" in line]
    said_there = [line for line in there.stderr.splitlines() if "gone.txt" in line]
    assert said_here and said_there, there.stderr
    assert "3 | >>> COPY gone.txt /g" in there.stderr and "(on node arm)" in there.stderr
    assert said_here[0].split("gone.txt", 1)[1].strip() in said_there[0]


def test_push_from_nodes(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    """--push-from-nodes: the node pushes its platform itself; the index pushed from here is
    the one an all-local build makes (SOURCE_DATE_EPOCH set)."""
    env = {**env_for(tmp_path, sshd), "SOURCE_DATE_EPOCH": "1700000000"}
    node_root = tmp_path / "node-root"
    use_arm_node("pushers", f"ssh://root@127.0.0.1:{sshd.port}", node_root, env)
    ctx = write_context(tmp_path / "ctx", DOCKERFILE.format(base=tiny), {"app.txt": "one\n"})
    refused = run("build", "--root", str(tmp_path / "root"), "--platform", BOTH,
                  "--push-from-nodes", str(ctx), env=env)  # fmt: skip
    assert refused.returncode == 2 and "--push-from-nodes needs --push" in refused.stderr
    ref = registry.ref("nodes/pushed:1")
    root = tmp_path / "root"
    built = run("build", "--root", str(root), "--platform", BOTH, "-t", ref, "--push",
                "--push-from-nodes", "--progress", "json", "--metadata-file",
                str(tmp_path / "pushed.json"), str(ctx), env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    # The push carries buildx's default provenance (mode=min): so does this build, unpushed.
    here = run("build", "--builder", "default", "--root", str(tmp_path / "here"), "--platform",
               BOTH, "-t", ref, "--provenance=mode=min", "--metadata-file",
               str(tmp_path / "here.json"), str(ctx), env=env)  # fmt: skip
    assert here.returncode == 0, here.stderr
    digests = [json.loads((tmp_path / f"{n}.json").read_text())["containerimage.digest"]
               for n in ("pushed", "here")]  # fmt: skip
    assert digests[0] == digests[1]
    stream = events(built.stderr)
    notes = [str(e.get("text")) for e in stream if e["event"] == "note"]
    assert any(f"node arm pushed linux/arm64 by digest to {registry.host}/nodes/pushed" in n
               for n in notes), notes  # fmt: skip
    arm = stream[-1]["polyarch.platforms"]["linux/arm64"]["digest"]  # type: ignore[index]
    # The arm64 layers went from the node to the registry, not through this machine.
    manifest = json.loads((node_root / "store" / "blobs" / "sha256" / arm[7:]).read_bytes())
    last_layer = manifest["layers"][-1]["digest"][7:]
    assert (node_root / "store" / "blobs" / "sha256" / last_layer).is_file()
    assert not (root / "store" / "blobs" / "sha256" / last_layer).exists()
    assert pushed_entries(registry, "nodes/pushed:1") == ["amd64", "arm64", "unknown", "unknown"]
    verified = run("verify", "--root", str(tmp_path / "v"), "--platform", BOTH, "--run",
                   'test "$(cat /arch)" = "$(uname -m)"', ref, env=env)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr


def here_and_on_a_node(
    builder: str,
    sshd: SshServer,
    tmp_path: Path,
    env: dict[str, str],
    ctx: Path,
    flags: list[str],
) -> list[dict[str, object]]:
    """A row of the composition matrix: `ctx` built for linux/arm64 with `flags` here, then
    with that platform on an SSH node (each in a fresh workspace, SOURCE_DATE_EPOCH in `env`):
    both succeed, the second on the node, with the same digest. Returns the node build's
    events."""
    digests, stream = {}, []
    for where in ("here", "node"):
        if where == "node":
            use_arm_node(builder, f"ssh://root@127.0.0.1:{sshd.port}", tmp_path / "node-root",
                         env)  # fmt: skip
        meta = tmp_path / f"{where}.json"
        built = run("build", "--root", str(tmp_path / f"root-{where}"), "--platform",
                    "linux/arm64", *flags, "--metadata-file", str(meta), "--progress", "json",
                    str(ctx), env=env)  # fmt: skip
        assert built.returncode == 0, built.stderr
        stream = events(built.stderr)
        on_node = any(e.get("node") == "arm" and e.get("step") for e in stream)
        assert on_node == (where == "node"), where
        digests[where] = json.loads(meta.read_text())["containerimage.digest"]
    assert digests["here"] == digests["node"]
    return stream


SECRETS = """FROM {base}
RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -c1-64 > /token.sum
RUN --mount=type=secret,id=apikey,env=API_KEY printf %s "$API_KEY" | sha256sum > /key.sum
RUN --mount=type=secret,id=absent,required=false test ! -e /run/secrets/absent
RUN --mount=type=secret,id=token test "$(stat -f -c %T /run/secrets/token)" = tmpfs
"""


def test_secrets_reach_a_nodes_steps_and_nothing_else(
    tiny: str, sshd: SshServer, tmp_path: Path
) -> None:
    """--secret (a file and a variable) with the platform on a node: the node asks this
    machine for each value when its step mounts it; the image is the one a local build makes,
    and neither value is in any byte under the node's workspace or this one's (the step reads
    its secret file from a tmpfs, both ways)."""
    env = {**env_for(tmp_path, sshd), "API_KEY": "key-0d5b3f1e-never-on-disk",
           "SOURCE_DATE_EPOCH": "1700000000"}  # fmt: skip
    token = tmp_path / "token.txt"
    token.write_text("token-8c1f22a9-never-on-disk\n")
    ctx = write_context(tmp_path / "ctx", SECRETS.format(base=tiny), {})
    # With an SBOM and max provenance (which names the secrets by id): the same bytes too.
    flags = ["--secret", f"id=token,src={token}", "--secret", "id=apikey,env=API_KEY",
             "--sbom=true", "--provenance=mode=max"]  # fmt: skip
    stream = here_and_on_a_node("secrets", sshd, tmp_path, env, ctx, flags)
    assert "sha256:" in str(stream[-1]["containerimage.digest"])
    for top in (tmp_path / "node-root", tmp_path / "root-here", tmp_path / "root-node"):
        for path in top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert b"never-on-disk" not in data, path


def test_named_contexts_reach_a_node(
    tiny: str, sshd: SshServer, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    """--build-context with the platform on a node, each kind: a directory and an OCI layout
    of this machine are sent by content, an image is pulled there, a git repository cloned
    there; the image is the one a local build makes."""
    from tests.git_server import git, make_repo

    name = f"named-{tmp_path.name}.git"
    work = make_repo(tmp_path / "work", {"sub/g.txt": "from git\n"},
                     bare_into=git_daemon.base / name)  # fmt: skip
    git("push", "-q", "origin", "main", cwd=work)
    env = {**env_for(tmp_path, sshd), "SOURCE_DATE_EPOCH": "1700000000"}
    libs = tmp_path / "libs"
    (libs / "sub").mkdir(parents=True)
    (libs / "sub" / "lib.txt").write_text("from a directory\n")
    made = write_context(tmp_path / "made", "FROM scratch\nCOPY f /laid.txt\n",
                         {"f": "from a layout\n"})  # fmt: skip
    layout = tmp_path / "layout"
    built = run("build", "--root", str(tmp_path / "root-made"), "--platform", "linux/arm64",
                "--output", f"type=oci,dest={layout},tar=false", str(made), env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nCOPY --from=libs sub/lib.txt /lib.txt\n"
                        "COPY --from=laid /laid.txt /laid.txt\n"
                        "COPY --from=img /usr/bin/env /env\n"
                        "COPY --from=repo sub/g.txt /g.txt\n", {})  # fmt: skip
    flags = [
        "--build-context",
        f"libs={libs}",
        "--build-context",
        f"laid=oci-layout://{layout}@{digest}",
        "--build-context",
        f"img=docker-image://{tiny}",
        "--build-context",
        f"repo={git_daemon.url(name)}#main",
    ]
    stream = here_and_on_a_node("named", sshd, tmp_path, env, ctx, flags)
    notes = [str(e.get("text")) for e in stream if e["event"] == "note"]
    assert any("build context libs sent" in n for n in notes), notes
    assert any("build context laid sent" in n for n in notes), notes


def test_a_node_takes_hits_from_an_imported_cache(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    """--cache-from with the platform on a node that never built it: a local cache directory
    (sent by content) and a registry cache (imported there) give it every step, and the
    image a local build made."""
    env = {**env_for(tmp_path, sshd), "SOURCE_DATE_EPOCH": "1700000000"}
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN uname -m > /arch\n"
                        "RUN echo more > /more\n", {})  # fmt: skip
    cache_dir, ref = tmp_path / "cache", registry.ref("nodes/cache:buildcache")
    for to in (f"type=local,dest={cache_dir}", f"type=registry,ref={ref}"):
        made = run("build", "--root", str(tmp_path / "root-here"), "--platform", "linux/arm64",
                   "--cache-to", to, "--metadata-file", str(tmp_path / "here.json"), str(ctx),
                   env=env)  # fmt: skip
        assert made.returncode == 0, made.stderr
    here = json.loads((tmp_path / "here.json").read_text())["containerimage.digest"]
    for n, source in enumerate((f"type=local,src={cache_dir}", f"type=registry,ref={ref}")):
        use_arm_node(f"cache{n}", f"ssh://root@127.0.0.1:{sshd.port}", tmp_path / f"node-{n}",
                     env)  # fmt: skip
        meta = tmp_path / f"node-{n}.json"
        done = run("build", "--root", str(tmp_path / f"root-{n}"), "--platform", "linux/arm64",
                   "--cache-from", source, "--progress", "json", "--metadata-file", str(meta),
                   str(ctx), env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        stream = events(done.stderr)
        on_node = [e for e in stream if e.get("node") == "arm" and e["event"] == "done"]
        said = [(e.get("description"), e.get("cache"), e.get("text")) for e in on_node]
        assert any(str(e.get("description")).startswith("importing cache") for e in on_node)
        assert not any(e.get("cache") == "run" for e in on_node), said  # every step a hit
        assert json.loads(meta.read_text())["containerimage.digest"] == here


def test_a_cache_export_holds_what_the_nodes_made(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    """--cache-to (local and registry) with one platform here and one on a node: one export,
    made here, holds both platforms' entries (the node's layers brought here), so a fresh
    workspace with only this machine takes every step of both from it, and makes the same
    index."""
    env = {**env_for(tmp_path, sshd), "SOURCE_DATE_EPOCH": "1700000000"}
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN uname -m > /arch\n"
                        "RUN echo more > /more\n", {})  # fmt: skip
    use_arm_node("cacheto", f"ssh://root@127.0.0.1:{sshd.port}", tmp_path / "node-root", env)
    cache_dir, ref = tmp_path / "cache", registry.ref("nodes/exported:buildcache")
    digests = []
    for to in (f"type=local,dest={cache_dir},mode=max", f"type=registry,ref={ref}"):
        meta = tmp_path / "made.json"
        made = run("build", "--root", str(tmp_path / "root-made"), "--platform", BOTH,
                   "--cache-to", to, "--progress", "json", "--metadata-file", str(meta),
                   str(ctx), env=env)  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert any(e.get("node") == "arm" and e.get("step") for e in events(made.stderr))
        digests.append(json.loads(meta.read_text())["containerimage.digest"])
    assert digests[0] == digests[1]
    for n, source in enumerate((f"type=local,src={cache_dir}", f"type=registry,ref={ref}")):
        meta = tmp_path / f"fresh-{n}.json"
        done = run("build", "--builder", "default", "--root", str(tmp_path / f"fresh-{n}"),
                   "--platform", BOTH, "--cache-from", source, "--progress", "json",
                   "--metadata-file", str(meta), str(ctx), env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        stream = events(done.stderr)
        ran = [(e.get("description"), e.get("platform")) for e in stream
               if e["event"] == "done" and e.get("cache") == "run"]  # fmt: skip
        assert not ran, ran  # every step of both platforms, amd64's and the node's arm64
        assert any(e.get("cache") == "imported" for e in stream)
        assert json.loads(meta.read_text())["containerimage.digest"] == digests[0]


SSH_PROBE = """\
FROM --platform=$BUILDPLATFORM {toolbox} AS probe
ENV GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p {port}"
RUN --mount=type=ssh git clone -q ssh://root@127.0.0.1:{port}{repo} /cloned \\
    && test -S "$SSH_AUTH_SOCK"
RUN --mount=type=ssh,id=deploy,target=/tmp/agent,uid=1000,mode=0600 \\
    stat -c '%u %a' /tmp/agent > /deploy-sock \\
    && SSH_AUTH_SOCK=/tmp/agent ssh-add -L | cut -d' ' -f1,2 > /deploy.pub
FROM {tiny}
COPY --from=probe /cloned/code.txt /deploy-sock /deploy.pub /
"""


def test_ssh_agents_reach_a_nodes_steps(
    tiny: str, toolbox: str, sshd: SshServer, agent: str, tmp_path: Path
) -> None:
    """--ssh with the platform's steps on a node (build-once off, so the probe stage runs
    there): the caller's agent (`default`) clones a repository over SSH and an agent started
    here for a key file (`deploy`) lists its key, each reached through channels over the
    build's connection; the image is the one a local build makes, and the private key is in
    no byte under the node's workspace."""
    from tests.git_server import git, make_repo

    bare = sshd.root / f"node-ssh-{tmp_path.name}.git"
    make_repo(tmp_path / "work", {"code.txt": "only over ssh\n"}, bare_into=bare)
    git("push", "-q", "origin", "main", cwd=tmp_path / "work")
    env = {**env_for(tmp_path, sshd), "SSH_AUTH_SOCK": agent, "SOURCE_DATE_EPOCH": "1700000000"}
    dockerfile = SSH_PROBE.format(toolbox=toolbox, tiny=tiny, port=sshd.port, repo=bare)
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    flags = ["--build-once", "off", "--ssh", "default", "--ssh", f"deploy={sshd.client_key}"]
    stream = here_and_on_a_node("agents", sshd, tmp_path, env, ctx, flags)
    assert any(e.get("node") == "arm" and "git clone" in str(e.get("description"))
               for e in stream), "the clone ran on the node"  # fmt: skip
    built = run("build", "--root", str(tmp_path / "root-node"), "--platform", "linux/arm64",
                "--build-once", "off", "--ssh", "default", "--ssh",
                f"deploy={sshd.client_key}", "--output", f"type=local,dest={tmp_path / 'out'}",
                str(ctx), env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "out" / "code.txt").read_text() == "only over ssh\n"
    assert (tmp_path / "out" / "deploy-sock").read_text() == "1000 600\n"
    public = " ".join(Path(f"{sshd.client_key}.pub").read_text().split()[:2])
    assert (tmp_path / "out" / "deploy.pub").read_text() == public + "\n"
    key = sshd.client_key.read_bytes()
    for path in (tmp_path / "node-root").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert key not in path.read_bytes(), path


def test_a_node_pulls_with_a_token_fetched_here(
    tiny: str, registry: RunningRegistry, sshd: SshServer, tmp_path: Path
) -> None:
    """A base image behind a registry that wants a bearer token, credentials only on this
    machine: the node, which has none, asks this machine over the build's session; this
    machine fetches a pull token with its credentials and hands the node the token alone.
    The node builds the platform; every token given covers pulls only."""
    from tests.registry_server import TokenProxy

    proxy = TokenProxy(registry.host, "builder", "pw-4a1f-stays-here")
    try:
        authfile = tmp_path / "auth.json"
        pair = base64.b64encode(b"builder:pw-4a1f-stays-here").decode()
        authfile.write_text(json.dumps({"auths": {proxy.host: {"auth": pair}}}))
        env = {**env_for(tmp_path, sshd), "REGISTRY_AUTH_FILE": str(authfile)}
        base = tiny.replace(registry.host, proxy.host)
        ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN uname -m > /arch\n", {})
        use_arm_node("tokens", f"ssh://root@127.0.0.1:{sshd.port}", tmp_path / "node-root", env)
        built = run("build", "--root", str(tmp_path / "root"), "--platform", "linux/arm64",
                    "--progress", "json", str(ctx), env=env)  # fmt: skip
        assert built.returncode == 0, built.stderr
        stream = events(built.stderr)
        assert any(e.get("node") == "arm" and e.get("step") for e in stream)
        notes = " ".join(str(e.get("text")) for e in stream if e["event"] == "note")
        assert "is sent from here" not in notes  # pulled there, not sent
        assert proxy.served and proxy.issued
        assert all(s.endswith(":pull") for scopes in proxy.issued for s in scopes), proxy.issued
    finally:
        proxy.stop()
