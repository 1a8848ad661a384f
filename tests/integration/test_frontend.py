"""The seed's job end to end: examples/frontend released for amd64 and arm64, then cleaned.

`polyarch release` builds the three yarn apps once (build-once), the nginx stage per platform
(arm64 under QEMU), pushes one index, and verifies it: each platform's image runs with its
entrypoint and answers the HTTP probes of the example's polyarch.toml, the Prometheus exporter
included (`nginx_up 1`). Base images come from Debian packages (cached by recipe).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from polyarch.api import RegistryOptions, Session
from tests.integration.helpers import needs_emulation, polyarch
from tests.registry_server import RunningRegistry

pytestmark = needs_emulation
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "frontend"


@pytest.fixture(scope="module")
def bases(registry: RunningRegistry, emulators: None) -> dict[str, str]:
    from tools.base_images import push

    refs = {
        # The yarn stages run once, natively (build-once): amd64 is all they need here.
        "NODE_IMAGE": ("node", ["amd64"], registry.ref("base/node:bookworm")),
        "NGINX_IMAGE": ("nginx", ["amd64", "arm64"], registry.ref("base/nginx:bookworm")),
        "EXPORTER_IMAGE": (
            "exporter", ["amd64", "arm64"], registry.ref("base/nginx-prometheus-exporter:bookworm")
        ),
    }  # fmt: skip
    with Session(RegistryOptions()) as session:
        for recipe, arches, ref in refs.values():
            push(recipe, arches, ref, session)
    return {arg: ref for arg, (_recipe, _arches, ref) in refs.items()}


def test_release_builds_pushes_and_proves_both_platforms(
    bases: dict[str, str], registry: RunningRegistry, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    ref = registry.ref("dx-arch-ui:1.1.0-test")
    args = [a for name, value in bases.items() for a in ("--build-arg", f"{name}={value}")]
    result = polyarch("--config", str(EXAMPLE / "polyarch.toml"), "release", "--root",
                      str(root), "-t", ref, "--progress", "json", *args, timeout=1500)  # fmt: skip
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    for stage in ("the-header", "the-portal", "ram"):
        builds = {e["platform"] for e in events if e["event"] == "start" and e["stage"] == stage}
        assert builds == {"linux/amd64"}, f"{stage} ran on {builds}"  # once, natively
    final = {e["platform"] for e in events
             if e["event"] == "start" and "apt-get install" in e["description"]}  # fmt: skip
    assert final == {"linux/amd64", "linux/arm64"}
    out = result.stdout
    table = out[out.index("PLATFORM") : out.index("PROBE ")].splitlines()
    rows = {line.split()[0]: line for line in table[1:] if line.strip()}
    for platform in ("linux/amd64", "linux/arm64"):
        row = rows[platform]
        assert row.endswith("ok"), row
        assert f"config {platform}" in row and " 5/5 " in row
    assert "qemu-aarch64" in rows["linux/arm64"]
    probes = {line.split()[0]: line for line in out[out.index("PROBE ") :].splitlines()[1:]}
    for label in ("80/ram/~<title>RAM</title>", "80/portal/~<title>Portal</title>",
                  "82/the-header.min.js~TheHeader"):  # fmt: skip
        assert probes[label].count("200, '") == 2, probes[label]
    assert probes["9113/metrics~nginx_up"].count("200, 'nginx_up 1' found") == 2
    assert probes["80/header/the-header.js"].split()[1:] == ["200", "200"]
    # `polyarch clean` takes the project's image and its cache entries away, and says so.
    listed = polyarch("images", "--root", str(root)).stdout
    assert "dx-arch-ui:1.1.0-test" in listed
    cleaned = polyarch("clean", "--root", str(root), ref.rsplit(":", 1)[0]).stdout
    assert f"removed {ref}" in cleaned
    counts = re.search(r"(\d+) images, (\d+) cache entries, (\d+) blobs", cleaned)
    assert counts is not None, cleaned
    assert all(int(n) > 0 for n in counts.groups()), cleaned
    assert "dx-arch-ui" not in polyarch("images", "--root", str(root)).stdout
