"""The CI-matrix path: one runner per platform builds and pushes by digest with a metadata file;
`index create --from-metadata` makes one index of them; `verify` checks it runs everywhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.integration.test_build import write_context
from tests.integration.test_build_surface import run, tags
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


def test_one_runner_per_platform_then_one_index(
    tiny: str, registry: RunningRegistry, tmp_path: Path
) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {tiny}\nRUN uname -m > /arch\n"
                        'CMD ["cat", "/arch"]\n', {})  # fmt: skip
    repo = registry.ref("matrix/app")
    metadata: dict[str, Path] = {}
    for platform in ("linux/amd64", "linux/arm64"):
        # Each "runner" has its own workspace, as separate CI machines would.
        arch = platform.split("/")[1]
        metadata[arch] = tmp_path / f"{arch}.json"
        done = run("build", "--root", str(tmp_path / f"runner-{arch}"), "--platform", platform,
                   "-o", f"type=registry,name={repo},push-by-digest=true",
                   "--metadata-file", str(metadata[arch]), str(ctx))  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert tags(registry, "matrix/app") == []  # nothing tagged until the index
    digests = {a: json.loads(p.read_text())["containerimage.digest"] for a, p in metadata.items()}

    done = run("index", "create", f"{repo}:1.0", "--from-metadata", str(metadata["amd64"]),
               "--from-metadata", str(metadata["arm64"]))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert tags(registry, "matrix/app") == ["1.0"]
    accept = {"Accept": "application/vnd.oci.image.index.v1+json"}

    def manifests(reference: str) -> list[dict[str, object]]:
        url = f"http://{registry.host}/v2/matrix/app/manifests/{reference}"
        return httpx.get(url, headers=accept).json()["manifests"]  # type: ignore[no-any-return]

    # Each runner pushed an index of its image and its provenance (buildx's default); the
    # index made of them lists the images, then their attestations.
    images = {}
    for arch, digest in digests.items():
        entries = manifests(digest)
        assert [m["platform"]["os"] for m in entries] == ["linux", "unknown"]  # type: ignore[index]
        images[arch] = entries[0]["digest"]
    index = manifests("1.0")
    got = {m["platform"]["architecture"]: m["digest"] for m in index}  # type: ignore[index]
    assert [m["platform"]["os"] for m in index] == ["linux", "linux", "unknown", "unknown"]  # type: ignore[index]
    assert {k: v for k, v in got.items() if k != "unknown"} == images
    assert {m["annotations"]["vnd.docker.reference.digest"] for m in index[2:]} == set(  # type: ignore[index]
        images.values()
    )

    # Each platform's image runs and reports its own machine.
    verified = run("verify", "--root", str(tmp_path / "verify"), "--platform",
                   "linux/amd64,linux/arm64", "--run", "test \"$(cat /arch)\" = \"$(uname -m)\"",
                   f"{repo}:1.0")  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A bare digest is taken from DST's repository; a metadata file that is not one is refused.
    again = run("index", "create", f"{repo}:digests", digests["amd64"], digests["arm64"])
    assert again.returncode == 0, again.stderr
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"containerimage.digest": 1}')
    refused = run("index", "create", f"{repo}:x", "--from-metadata", str(bogus))
    assert refused.returncode != 0
    assert "no containerimage.digest" in refused.stderr and "Traceback" not in refused.stderr
