"""What the seed-shaped benchmarks share: QEMU for arm64, a registry on 127.0.0.1 holding the
node and nginx base images (amd64 and arm64, from tools/base_images.py), and
examples/bench-frontend copied with its FROMs pointing there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.registry_server import RunningRegistry, start_plain

from polyarch.api import RegistryOptions, Session
from tools.base_images import push

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bench-frontend"


def prepare_frontend(work: Path) -> tuple[RunningRegistry, Path]:
    """The arm64 emulator registered, the registry (the caller stops it) and the example's
    copy under `work`."""
    subprocess.run([sys.executable, "-m", "polyarch", "emulators", "install", "--platform",
                    "linux/arm64"], check=True, capture_output=True)  # fmt: skip
    registry = start_plain(work / "registry")
    try:
        with Session(RegistryOptions()) as session:
            for name in ("node", "nginx"):
                push(name, ["amd64", "arm64"], registry.ref(f"base/{name}:bookworm"), session)
        ctx = work / "ctx"
        shutil.copytree(EXAMPLE, ctx)
        dockerfile = ctx / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text().replace("127.0.0.1:5000", registry.host))
    except BaseException:
        registry.stop()
        raise
    return registry, ctx
