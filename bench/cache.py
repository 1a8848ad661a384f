"""The seed-shaped front end on a fresh workspace with the build cache imported from a registry,
against the cold build; and buildah 1.28's --cache-to/--cache-from on the same workload.

    .venv/bin/python bench/cache.py [--rounds 2]

examples/bench-frontend for linux/amd64 and linux/arm64 (as bench/multiplatform.py). Each round:
- polyarch cold (a fresh workspace);
- polyarch cold exporting the cache (`--cache-to type=registry,ref=...,mode=max`), for the cost
  of the export;
- polyarch on a fresh workspace with `--cache-from` that export (a CI runner that starts empty);
- polyarch again on the cold build's workspace, nothing changed (the no-op rebuild);
- buildah cold with `--layers --cache-to REPO`, then buildah on a fresh store with
  `--layers --cache-from REPO`.
Prints medians and ratios. Goals: the warm-from-registry build at least 10x faster than cold,
within 2x of the no-op rebuild, and ahead of buildah's; the export adds at most 10% to a cold
build.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tools.bench_frontend import prepare_frontend  # noqa: E402

CA = "/etc/ssl/certs/ca-certificates.crt"
PLATFORMS = "linux/amd64,linux/arm64"


EXPORT_SECONDS: list[float] = []


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    # The export's own time, from its progress line ("#- DONE 1.2s (N entries, M layers)").
    lines = done.stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#- exporting cache") and i + 1 < len(lines):
            found = re.search(r"DONE ([0-9.]+)s", lines[i + 1])
            if found:
                EXPORT_SECONDS.append(float(found.group(1)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-buildah", action="store_true")
    args = parser.parse_args()
    if shutil.which("buildah") is None or os.geteuid() != 0:
        sys.exit("needs root and buildah: run tools/dev setup")
    names = ("polyarch cold", "polyarch cold + export", "polyarch from registry cache",
             "polyarch no-op rebuild", "buildah cold + export",
             "buildah from registry cache")  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry, ctx = prepare_frontend(work)
        try:
            polyarch = [sys.executable, "-m", "polyarch", "build", "--progress", "plain",
                        "--ca-certs", "host", "-t", "bench/frontend:1", "--platform",
                        PLATFORMS]  # fmt: skip
            for n in range(args.rounds):
                cache = registry.ref(f"cache/polyarch-{n}:buildcache")
                times["polyarch cold"].append(
                    timed([*polyarch, "--root", str(work / f"cold-{n}"), str(ctx)])
                )
                times["polyarch cold + export"].append(timed(
                    [*polyarch, "--root", str(work / f"export-{n}"), "--cache-to",
                     f"type=registry,ref={cache},mode=max", str(ctx)]))  # fmt: skip
                times["polyarch from registry cache"].append(timed(
                    [*polyarch, "--root", str(work / f"import-{n}"), "--cache-from", cache,
                     str(ctx)]))  # fmt: skip
                times["polyarch no-op rebuild"].append(
                    timed([*polyarch, "--root", str(work / f"cold-{n}"), str(ctx)])
                )
                for d in ("cold", "export", "import"):
                    shutil.rmtree(work / f"{d}-{n}", ignore_errors=True)
                if args.skip_buildah:
                    continue
                repo = registry.ref(f"cache/buildah-{n}")
                for label, flag, store in (
                    ("buildah cold + export", "--cache-to", "b1"),
                    ("buildah from registry cache", "--cache-from", "b2"),
                ):
                    path = work / f"{store}-{n}"
                    times[label].append(timed(
                        ["buildah", "--root", str(path / "root"), "--runroot", str(path / "run"),
                         "build", "--isolation", "chroot", "--tls-verify=false", "-q", "--layers",
                         flag, repo, "--platform", PLATFORMS, "--manifest",
                         f"localhost/bench-cache-{store}", "-v", f"{CA}:/run/ca.crt:ro",
                         "--build-arg", "NODE_EXTRA_CA_CERTS=/run/ca.crt", str(ctx)]))  # fmt: skip
                    subprocess.run(["buildah", "--root", str(path / "root"), "--runroot",
                                    str(path / "run"), "rm", "--all"], capture_output=True,
                                   check=False)  # fmt: skip
                    shutil.rmtree(path, ignore_errors=True)
        finally:
            registry.stop()
    medians = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"seed-shaped front end, {PLATFORMS}, {args.rounds} round(s) (seconds)")
    for name, value in medians.items():
        runs = " ".join(f"{t:.1f}" for t in times[name])
        print(f"  {name:30s} {value:7.1f}   ({runs})")
    cold, warm = medians["polyarch cold"], medians["polyarch from registry cache"]
    print(f"cold / from registry cache: {cold / warm:.1f}x   (goal >= 10x)")
    noop = medians["polyarch no-op rebuild"]
    print(f"from registry cache / no-op rebuild: {warm / noop:.1f}x   (goal <= 2x)")
    if "buildah from registry cache" in medians:
        theirs = medians["buildah from registry cache"]
        print(f"buildah from cache / polyarch from cache: {theirs / warm:.1f}x   (goal > 1)")
    export = statistics.median(EXPORT_SECONDS) if EXPORT_SECONDS else float("nan")
    print(
        f"the export itself (mode=max): {export:.2f} s, {100 * export / cold:.1f}% of a cold "
        f"build   (goal <= 10%; rounds: {' '.join(f'{t:.2f}' for t in EXPORT_SECONDS)})"
    )


if __name__ == "__main__":
    main()
