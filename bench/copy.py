"""Copy a multi-platform image between two local registries: polyarch vs `skopeo copy --all`.

    .venv/bin/python bench/copy.py [--rounds 5] [--mib 40]

CNCF Distribution registries are started on 127.0.0.1. A 4-platform image of about --mib
MiB of incompressible layers (one layer shared by all platforms, as images built from one
Dockerfile share them) is pushed to the first. Each round, each tool copies it to a freshly
started target registry (so every blob is really transferred and no cache of an earlier round
helps), the tools taking turns going first. Both run as the commands a user types; times
include process start.
Prints the median time of each and the ratio polyarch/skopeo (goal: <= 1.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib's `copy` module: take its folder off the import path first.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tests.images import write_layout_image  # noqa: E402
from tests.registry_server import start_plain  # noqa: E402

PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=40, help="approximate image size")
    args = parser.parse_args()
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        sys.exit("skopeo is not installed: run tools/dev setup")
    polyarch = [sys.executable, "-m", "polyarch"]
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        # Per platform: the shared layer plus two own layers; sizes add up to about --mib.
        layer_bytes = args.mib * 1024 * 1024 // (1 + 2 * len(PLATFORMS))
        write_layout_image(work / "src", PLATFORMS, name="v1", layer_bytes=layer_bytes, layers=3)
        source = start_plain(work / "reg-a")
        try:
            subprocess.run(
                [skopeo, "copy", "--all", "--dest-tls-verify=false", f"oci:{work / 'src'}:v1",
                 f"docker://{source.ref('bench/src:v1')}"],
                check=True, capture_output=True,
            )  # fmt: skip
            src = source.ref("bench/src:v1")
            times: dict[str, list[float]] = {"polyarch": [], "skopeo": []}
            for n in range(args.rounds):
                order = ["polyarch", "skopeo"] if n % 2 == 0 else ["skopeo", "polyarch"]
                for tool in order:
                    # A fresh target registry: every blob is really transferred, and no
                    # tool profits from what an earlier round left (skopeo's blob-info
                    # cache would otherwise turn uploads into cross-repository mounts).
                    target = start_plain(work / f"reg-{tool}-{n}")
                    dst = target.ref("bench/app:v1")
                    cmd = (
                        [*polyarch, "copy", src, dst]
                        if tool == "polyarch"
                        else [skopeo, "copy", "--all", "--src-tls-verify=false",
                              "--dest-tls-verify=false", f"docker://{src}", f"docker://{dst}"]
                    )  # fmt: skip
                    try:
                        times[tool].append(timed(cmd))
                    finally:
                        target.stop()
                        shutil.rmtree(target.root, ignore_errors=True)
        finally:
            source.stop()
    p_med = statistics.median(times["polyarch"])
    s_med = statistics.median(times["skopeo"])
    print(f"image: {len(PLATFORMS)} platforms, about {args.mib} MiB, {args.rounds} rounds")
    for tool in ("polyarch", "skopeo"):
        runs_text = " ".join(f"{t:.2f}" for t in times[tool])
        print(f"{tool:9s} median {statistics.median(times[tool]):6.2f} s   ({runs_text})")
    print(f"ratio polyarch/skopeo: {p_med / s_med:.2f}  (goal <= 1.00)")


if __name__ == "__main__":
    main()
