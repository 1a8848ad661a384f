"""`polyarch verify` against a real registry: what it catches, and running every platform."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from polyarch.api import RegistryOptions, Session
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.verify import SETTLED, PlatformResult, Probe, RunSpec, _ask, watch
from tests.integration.helpers import needs_emulation, polyarch, remove_tree
from tests.registry_server import RunningRegistry

pytestmark = needs_emulation
BOTH = "linux/amd64,linux/arm64"


@pytest.fixture(scope="module")
def picky(
    tiny: str, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An image for amd64 and arm64 whose entrypoint fails on anything but x86_64."""
    ctx = tmp_path_factory.mktemp("picky")
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny}\n"
        'ENTRYPOINT ["/bin/sh", "-c", "test $(uname -m) = x86_64 || '
        '{ echo no support for $(uname -m); exit 3; }"]\n'
    )
    ref = registry.ref("verify/picky:1")
    root = tmp_path_factory.mktemp("picky-root")
    polyarch("build", "--root", str(root), "--platform", BOTH, "-t", ref, "--push", str(ctx))
    yield ref
    remove_tree(root)


def test_every_platform_runs_its_own_machine(picky: str, tmp_path: Path) -> None:
    result = polyarch("verify", "--root", str(tmp_path), "--platform", BOTH, "--run",
                      "uname -m; test -x /bin/sh", picky)  # fmt: skip
    lines = result.stdout.splitlines()
    amd64 = next(line for line in lines if line.startswith("linux/amd64"))
    arm64 = next(line for line in lines if line.startswith("linux/arm64"))
    assert "config linux/amd64" in amd64 and "native" in amd64 and amd64.endswith("ok")
    assert "config linux/arm64" in arm64 and "qemu-aarch64" in arm64 and arm64.endswith("ok")
    assert "blobs" in arm64


def test_an_entrypoint_that_fails_on_one_architecture(picky: str, tmp_path: Path) -> None:
    result = polyarch("verify", "--root", str(tmp_path), "--platform", BOTH, picky, check=False)
    assert result.returncode == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert rows["linux/amd64"].endswith("ok")
    assert rows["linux/arm64"].endswith("FAIL")
    assert "FAIL linux/arm64: the entrypoint exited with status 3 (qemu-aarch64)" in result.stderr
    assert "no support for aarch64" in result.stderr


def test_a_binary_for_another_machine_fails_its_platform(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    """The host's x86-64 dash copied into every platform's image: it would run on an amd64
    host, and under QEMU's binfmt even in the arm64 image; the machine-type check catches it."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM --platform=linux/amd64 {tiny} AS host\n"
        f"FROM {tiny}\n"
        "COPY --from=host /bin/dash /usr/local/bin/hostdash\n"
    )
    ref = registry.ref("verify/leak:1")
    polyarch("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "--build-once",
             "off", "-t", ref, "--push", str(ctx))  # fmt: skip
    result = polyarch("verify", "--root", str(tmp_path / "v"), "--no-run", "--platform", BOTH,
                      ref, check=False)  # fmt: skip
    assert result.returncode == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert rows["linux/amd64"].endswith("ok") and "ELF machine types" in rows["linux/amd64"]
    assert rows["linux/arm64"].endswith("FAIL")
    assert ("FAIL linux/arm64: binaries for another machine in the linux/arm64 image: "
            "/usr/local/bin/hostdash (x86-64 (64-bit))") in result.stderr  # fmt: skip
    allowed = polyarch("verify", "--root", str(tmp_path / "v"), "--no-run", "--no-arch-check",
                       "--platform", BOTH, ref)  # fmt: skip
    assert allowed.returncode == 0


def test_a_missing_platform_is_reported(picky: str, tmp_path: Path) -> None:
    result = polyarch("verify", "--root", str(tmp_path), "--no-run", "--platform",
                      "linux/amd64,linux/s390x", picky, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "FAIL linux/s390x: missing from the index (it has: linux/amd64, linux/arm64)" in (
        result.stderr
    )


def test_an_arm64_entry_pointing_at_an_amd64_image(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    """The classic mistake of hand-made manifest lists: the right tag, the wrong machine code."""
    with Session(RegistryOptions()) as session:
        top = session.client.get_manifest(Reference.parse(tiny)).document
        assert isinstance(top, Index)
        amd64 = top.image_for(Platform.parse("linux/amd64"))
        assert amd64 is not None
        ref = Reference.parse(registry.ref("verify/mixed:1"))
        session.copy(f"{tiny.rsplit(':', 1)[0]}@{amd64.digest}", str(ref.with_digest(amd64.digest)))
        attestation = Descriptor(
            amd64.media_type, amd64.digest, amd64.size,
            platform=Platform.of("unknown", "unknown"),
            annotations={"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": str(amd64.digest)},
        )  # fmt: skip
        index = Index.create(
            [
                Descriptor(amd64.media_type, amd64.digest, amd64.size, platform=amd64.platform),
                Descriptor(
                    amd64.media_type,
                    amd64.digest,
                    amd64.size,
                    platform=Platform.parse("linux/arm64"),
                ),
                attestation,
            ]
        )
        session.client.put_manifest(ref, index.raw, index.media_type)
    result = polyarch("verify", "--root", str(tmp_path), "--no-run", str(ref), check=False)
    assert result.returncode == 1
    assert "1 attestation entries (not platforms)" in result.stdout
    assert (
        "FAIL linux/arm64: the index says linux/arm64, the image's config says linux/amd64"
        in result.stderr
    )
    assert "FAIL linux/amd64" not in result.stderr


def test_a_blob_missing_from_the_registry(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    ref = Reference.parse(registry.ref("verify/holes:1"))
    with Session(RegistryOptions()) as session:
        session.copy(tiny, str(ref), platforms=[Platform.parse("linux/arm64")])
        index = session.client.get_manifest(ref).document
        assert isinstance(index, Index)
        manifest = session.client.get_manifest(ref.with_digest(index.manifests[0].digest))
        assert isinstance(manifest.document, Manifest)
        layer = manifest.document.layers[0]
    # Distribution deletes a blob from one repository when asked (storage.delete.enabled).
    deleted = httpx.delete(f"http://{ref.registry}/v2/{ref.repository}/blobs/{layer.digest}")
    assert deleted.status_code == 202
    result = polyarch("verify", "--root", str(tmp_path), str(ref), check=False)
    assert result.returncode == 1
    assert f"FAIL linux/arm64: blob {layer.digest} is missing from the registry" in result.stderr


def test_probes_reach_a_server_in_its_own_network_namespace(tmp_path: Path) -> None:
    """The probe enters the server's network namespace: nothing is published on the host."""
    (tmp_path / "index.html").write_text("<title>probe me</title>\n")
    server = subprocess.Popen(
        ["unshare", "--net", "sh", "-c",
         "ip link set lo up 2>/dev/null || true; exec python3 -m http.server 8931 "
         "--bind 127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        want = Probe.parse("8931/index.html~probe me")
        deadline = time.monotonic() + 20
        answer = _ask(server.pid, want)
        while not want.accepts(answer) and time.monotonic() < deadline:
            time.sleep(0.2)
            answer = _ask(server.pid, want)
        assert want.accepts(answer)
        assert answer.shown() == "status 200, body: <title>probe me</title>"
        absent = Probe.parse("8931/~absent")
        assert not absent.accepts(_ask(server.pid, absent))
        missing = _ask(server.pid, Probe.parse("8931/nothing-here"))
        assert missing.status == 404 and missing.final
        assert missing.shown().startswith("status 404, body: <!DOCTYPE HTML>")
        # From the host's own network, the port is not there.
        with pytest.raises(httpx.ConnectError):
            httpx.get("http://127.0.0.1:8931/", timeout=2)
    finally:
        server.kill()
        server.wait()


_SERVER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = sys.argv[2].encode()
        self.send_response(int(sys.argv[1]))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("served", self.path, flush=True)
http.server.HTTPServer(("127.0.0.1", 8932), Handler).serve_forever()
"""


class _Server:
    """A server in a network namespace of its own, followed as verify follows a container."""

    def __init__(self, status: int, body: str) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", 'ip link set lo up 2>/dev/null || true; '
             'exec python3 -c "$0" "$@"', _SERVER, str(status), body],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def poll(self) -> int | None:
        return self.proc.poll()

    def pid(self) -> int | None:
        return self.proc.pid

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def test_a_server_serving_the_wrong_body_fails_at_once_with_what_it_said() -> None:
    """The server is up and answers 200 without the wanted text: asking until the timeout
    would only give the same answer, so the probe fails after SETTLED answers alike."""
    result = PlatformResult("linux/amd64")
    spec = RunSpec(probes=(Probe.parse("8932/health~healthy"),), timeout=600)
    with _Server(200, "<h1>Welcome to nginx!</h1>\n\n<p>default page</p>\n") as server:
        watch(server, spec, "native", result, lambda: "  | the output")
    assert result.run.startswith("entrypoint serving the wrong answer (native, ")
    assert result.failures == [
        "8932/health: wanted status 200 with 'healthy', received status 200, body: "
        f"<h1>Welcome to nginx!</h1> | <p>default page</p> ({SETTLED} times in a row)"
        "\n  | the output"
    ]
    received = "status 200, body: <h1>Welcome to nginx!</h1> | <p>default page</p>"
    assert result.probes == {"8932/health~healthy": f"FAIL ({received})"}


def test_a_server_answering_5xx_is_taken_as_still_starting() -> None:
    """A 503 (an upstream not ready yet) is asked again until the time is out, and the
    failure says what came last."""
    result = PlatformResult("linux/amd64")
    spec = RunSpec(probes=(Probe.parse("8932/"),), timeout=4)
    with _Server(503, "warming up") as server:
        watch(server, spec, "native", result, lambda: "  (no output)")
    assert result.run == "entrypoint timed out (native, 4 s)"
    assert result.failures == [
        "8932/: no good answer within 4 s (wanted status 200, last received: status 503, "
        "body: warming up)\n  (no output)"
    ]


def test_what_each_platform_printed_is_shown_on_request(picky: str, tmp_path: Path) -> None:
    result = polyarch("verify", "--root", str(tmp_path), "--platform", BOTH, "--run",
                      "echo hello from $(uname -m)", "--show-output", picky)  # fmt: skip
    assert "linux/amd64 printed:\n  | hello from x86_64\n" in result.stdout
    assert "linux/arm64 printed:\n  | hello from aarch64" in result.stdout
    quiet = polyarch("verify", "--root", str(tmp_path), "--platform", BOTH, "--run",
                     "echo hello from $(uname -m)", picky)  # fmt: skip
    assert "hello from" not in quiet.stdout


def test_a_release_that_fails_its_checks_leaves_the_tag_alone(
    tiny: str, registry: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    ref = registry.ref("verify/release:stable")
    root = tmp_path / "root"
    monkeypatch.setenv("COSIGN_PASSWORD", "release-key")
    polyarch("sign", "--generate-key", cwd=str(tmp_path))
    (ctx / "Dockerfile").write_text(f'FROM {tiny}\nENTRYPOINT ["/bin/sh", "-c", "exit 0"]\n')
    good = polyarch("release", "--root", str(root), "--platform", BOTH, "-t", ref,
                    "--sign-key", str(tmp_path / "cosign.key"), str(ctx))  # fmt: skip
    assert f"released {ref}" in good.stdout
    # What the release proved and who released it stay with the image: a verification
    # summary per platform (a referrer), a signature, and buildx's default provenance.
    assert good.stdout.count("attached the verification summary") == 2
    assert "signed image sha256:" in good.stdout
    polyarch("verify", "--require-attested", "--key", str(tmp_path / "cosign.pub"), ref)
    listed = polyarch("inspect", ref).stdout
    assert listed.count("https://slsa.dev/provenance/v1") == 2
    assert listed.count("https://slsa.dev/verification_summary/v1") == 2
    before = polyarch("inspect", "--raw", ref).stdout
    # The next version's entrypoint fails on arm64: pushed by digest, checked, not released.
    (ctx / "Dockerfile").write_text(
        f'FROM {tiny}\nENTRYPOINT ["/bin/sh", "-c", "test $(uname -m) = x86_64"]\n'
    )
    bad = polyarch("release", "--root", str(root), "--platform", BOTH, "-t", ref, str(ctx),
                   check=False)  # fmt: skip
    assert bad.returncode == 1
    assert f"not released: {ref} left as they were" in bad.stderr
    assert polyarch("inspect", "--raw", ref).stdout == before
    pinned = next(line.split()[1] for line in bad.stdout.splitlines()
                  if line.startswith("pushed "))  # fmt: skip
    assert "@sha256:" in pinned
    assert polyarch("inspect", "--raw", pinned).stdout != before  # there, by digest only
    failed = json.loads(polyarch("inspect", "--verification", "--platform", "linux/arm64",
                                 pinned).stdout)  # fmt: skip
    assert failed["verificationResult"] == "FAILED"
    assert "signed" not in bad.stdout  # a release that failed is not signed
