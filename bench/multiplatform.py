"""A seed-shaped front end for linux/amd64 and linux/arm64: polyarch vs buildah.

    .venv/bin/python bench/multiplatform.py [--rounds 1]

examples/bench-frontend: two npm stages that install esbuild and bundle an app, and a final
nginx stage that installs a package with apt. Built cold (fresh store each time):
- polyarch for linux/amd64,linux/arm64 (build-once: the npm stages run once, natively);
- `buildah build --isolation chroot --platform linux/amd64,linux/arm64 --manifest ...`
  (every stage for every platform, arm64 under QEMU);
- polyarch for linux/amd64 alone.
Base images (node, nginx; amd64 and arm64) come from Debian packages (tools/base_images.py,
cached). RUN steps reach npm through the host's CA bundle (--ca-certs host for polyarch, the
same bundle mounted for buildah). Prints medians and ratios. Goals: polyarch at least 4x faster
than buildah; its two-platform build at most 1.6x its own single-platform build.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/copy.py is named like the stdlib's `copy`: take this folder off the import path first.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tools.bench_frontend import prepare_frontend  # noqa: E402

CA = "/etc/ssl/certs/ca-certificates.crt"


CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], name: str = "") -> float:
    """Wall time of `cmd`; the CPU time it and its children used is kept under `name`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.setdefault(name, []).append(cpu)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("buildah") is None or os.geteuid() != 0:
        sys.exit("needs root and buildah: run tools/dev setup")
    times: dict[str, list[float]] = {"polyarch 2 platforms": [], "buildah 2 platforms": [],
                                     "polyarch amd64": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry, ctx = prepare_frontend(work)
        try:
            for n in range(args.rounds):
                polyarch = [sys.executable, "-m", "polyarch", "build", "--progress", "plain",
                            "--ca-certs", "host", "-t", "bench/frontend:1"]  # fmt: skip
                times["polyarch 2 platforms"].append(timed(
                    [*polyarch, "--root", str(work / f"p2-{n}"), "--platform",
                     "linux/amd64,linux/arm64", str(ctx)], "polyarch 2 platforms"))  # fmt: skip
                times["polyarch amd64"].append(timed(
                    [*polyarch, "--root", str(work / f"p1-{n}"), "--platform", "linux/amd64",
                     str(ctx)], "polyarch amd64"))  # fmt: skip
                store = work / f"buildah-{n}"
                times["buildah 2 platforms"].append(timed(
                    ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
                     "build", "--isolation", "chroot", "--tls-verify=false", "-q",
                     "--platform", "linux/amd64,linux/arm64", "--manifest", "localhost/bench-mp",
                     "-v", f"{CA}:/run/ca.crt:ro", "--build-arg",
                     "NODE_EXTRA_CA_CERTS=/run/ca.crt", str(ctx)],
                    "buildah 2 platforms"))  # fmt: skip
        finally:
            registry.stop()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"seed-shaped front end, cold, {args.rounds} round(s) (seconds)")
    cores = os.cpu_count() or 1
    for name, value in medians.items():
        cpu = statistics.median(CPU[name])
        runs = " ".join(f"{t:.1f}" for t in times[name])
        print(f"  {name:22s} {value:8.1f}   ({runs})   CPU {cpu:.1f} core-s, "
              f"at least {cpu / cores:.1f} s on {cores} cores")  # fmt: skip
    speedup = medians["buildah 2 platforms"] / medians["polyarch 2 platforms"]
    own = medians["polyarch 2 platforms"] / medians["polyarch amd64"]
    print(f"buildah / polyarch (2 platforms): {speedup:.1f}x   (goal >= 4x)")
    print(f"polyarch 2 platforms / 1 platform: {own:.2f}   (goal <= 1.6)")


if __name__ == "__main__":
    main()
