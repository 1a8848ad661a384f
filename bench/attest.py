"""What attestations cost: the seed-shaped build (examples/bench-frontend, linux/amd64 and
linux/arm64, pushed) with `--provenance=false` against `--sbom=true --provenance=mode=max`,
cold, then again with nothing changed (where the attestations are nearly all that is left:
both images' layers read for the SBOM, the statements written and pushed). Then the attested
image is verified on both platforms with `verify --attest` (its result kept as a verification
summary on each platform's image) and read back with `verify --require-attested`.

    .venv/bin/python bench/attest.py [--rounds 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tools.bench_frontend import prepare_frontend  # noqa: E402

PLAIN = ["--provenance=false"]
ATTESTED = ["--sbom=true", "--provenance=mode=max"]


def build(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "polyarch", "build", "--progress", "quiet",
                           "--ca-certs", "host", *args], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: run tools/dev setup")
    times: dict[str, list[float]] = {}
    report = ""
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry, ctx = prepare_frontend(work)
        env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
        try:
            for n in range(options.rounds):
                for label, flags in (("no attestations", PLAIN),
                                     ("SBOM + provenance max", ATTESTED)):  # fmt: skip
                    root = work / f"{label[:2]}-{n}"
                    common = ["--platform", "linux/amd64,linux/arm64", "--root", str(root),
                              "-t", registry.ref(f"bench/frontend:{n}"), "--push", *flags,
                              str(ctx)]  # fmt: skip
                    times.setdefault(f"{label}, cold", []).append(build(common, env))
                    times.setdefault(f"{label}, nothing changed", []).append(build(common, env))
            attested = registry.ref(f"bench/frontend:{options.rounds - 1}")
            started = time.perf_counter()
            verify = [
                sys.executable,
                "-m",
                "polyarch",
                "verify",
                "--root",
                str(work / "v"),
                "--attest",
                "--platform",
                "linux/amd64,linux/arm64",
                attested,
            ]
            verified = subprocess.run(verify, capture_output=True, text=True, env=env,
                                      check=False)  # fmt: skip
            times["verify --attest"] = [time.perf_counter() - started]
            required = subprocess.run([sys.executable, "-m", "polyarch", "verify",
                                       "--require-attested", attested], capture_output=True,
                                      text=True, env=env, check=False)  # fmt: skip
            report = (verified.stdout + verified.stderr + required.stdout).strip()
        finally:
            registry.stop()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"seed-shaped front end, linux/amd64 + linux/arm64, pushed, {options.rounds} round(s)")
    for name, value in medians.items():
        runs = " ".join(f"{t:.1f}" for t in times[name])
        print(f"  {name:38s} {value:7.1f} s   ({runs})")
    cold = medians["SBOM + provenance max, cold"] - medians["no attestations, cold"]
    warm = (medians["SBOM + provenance max, nothing changed"]
            - medians["no attestations, nothing changed"])  # fmt: skip
    share = cold / medians["no attestations, cold"]
    print(f"attestations cost: {warm:.2f} s with nothing else to do; {cold:+.1f} s "
          f"({share:+.0%}) on the cold build")  # fmt: skip
    print("verify --attest, then verify --require-attested:")
    print("\n".join(f"  {line}" for line in report.splitlines()))


if __name__ == "__main__":
    main()
