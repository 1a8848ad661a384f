"""One platform, one example: polyarch vs `buildah build --isolation chroot`.

    .venv/bin/python bench/single.py [--rounds 3]

Starts a Distribution registry on 127.0.0.1 with the Debian base image (made from Debian
packages, cached), then builds the same example (a few COPY and RUN steps, like the seed's
final stage) for linux/amd64:
- cold: a fresh polyarch root / a fresh buildah store each round (base image pulled each time);
- warm: the same build again with nothing changed (polyarch's cache; buildah with --layers);
- peak memory of polyarch building an image with a 1 GiB layer (goal: under 300 MB).
Prints medians and ratios polyarch/buildah. Goals: cold ratio <= 1.0; no-change rebuild < 2 s.
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
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tests.registry_server import start_plain  # noqa: E402
from tools.base_images import push  # noqa: E402

from polyarch.api import RegistryOptions, Session  # noqa: E402

EXAMPLE = """\
FROM {base}
ENV APP=/srv/app
WORKDIR /srv/app
COPY site/ ./site/
RUN for i in $(seq 1 500); do echo "page $i" > site/page-$i.html; done && gzip -k site/*.html
COPY conf/ /etc/app/
RUN sed -i 's/localhost/0.0.0.0/' /etc/app/app.conf && mkdir -p /var/log/app
CMD ["cat", "/etc/app/app.conf"]
"""
BIG = "FROM {base}\nRUN head -c 1073741824 /dev/urandom > /big.bin\n"


def context(work: Path, base: str, dockerfile: str) -> Path:
    ctx = work / f"ctx-{abs(hash(dockerfile))}"
    if ctx.exists():
        return ctx
    (ctx / "site").mkdir(parents=True)
    (ctx / "conf").mkdir()
    for i in range(50):
        (ctx / "site" / f"asset-{i}.js").write_text(f"console.log({i});\n" * 200)
    (ctx / "conf" / "app.conf").write_text("listen localhost:8080\n")
    (ctx / "Dockerfile").write_text(dockerfile.format(base=base))
    return ctx


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def polyarch(root: Path, ctx: Path) -> list[str]:
    return [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
            "-t", "bench/app:1", str(ctx)]  # fmt: skip


def buildah(store: Path, ctx: Path, layers: bool) -> list[str]:
    return ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"), "build",
            "--isolation", "chroot", "--tls-verify=false", "-q", f"--layers={str(layers).lower()}",
            "-t", "localhost/bench:1", str(ctx)]  # fmt: skip


def peak_memory_mb(cmd: list[str]) -> float:
    """Peak RSS of the command's largest process, measured in a fresh child interpreter."""
    probe = (
        "import resource, subprocess, sys;"
        f"subprocess.run({cmd!r}, check=True, capture_output=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if shutil.which("buildah") is None or os.geteuid() != 0:
        sys.exit("needs root and buildah: run tools/dev setup")
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry = start_plain(work / "registry")
        try:
            base = registry.ref("base/debian:bookworm")
            with Session(RegistryOptions()) as session:
                push("debian", ["amd64"], base, session)
            ctx = context(work, base, EXAMPLE)
            cold: dict[str, list[float]] = {"polyarch": [], "buildah": []}
            warm: dict[str, list[float]] = {"polyarch": [], "buildah": []}
            for n in range(args.rounds):
                root, store = work / f"root-{n}", work / f"buildah-{n}"
                order = ["polyarch", "buildah"] if n % 2 == 0 else ["buildah", "polyarch"]
                for tool in order:
                    if tool == "polyarch":
                        cold[tool].append(timed(polyarch(root, ctx)))
                        warm[tool].append(timed(polyarch(root, ctx)))
                    else:
                        cold[tool].append(timed(buildah(store, ctx, layers=True)))
                        warm[tool].append(timed(buildah(store, ctx, layers=True)))
                shutil.rmtree(root, ignore_errors=True)
                storage = ["--root", str(store / "root"), "--runroot", str(store / "run")]
                subprocess.run(
                    ["buildah", *storage, "rm", "--all"], check=False, capture_output=True
                )
                shutil.rmtree(store, ignore_errors=True)
            memory = None
            if not args.skip_memory:
                big = context(work, base, BIG)
                memory = peak_memory_mb(polyarch(work / "root-big", big))
        finally:
            registry.stop()
    print(f"example for linux/amd64, {args.rounds} rounds (times in seconds)")
    for label, data in (("cold", cold), ("warm", warm)):
        p, b = statistics.median(data["polyarch"]), statistics.median(data["buildah"])
        runs = " / ".join(" ".join(f"{t:.2f}" for t in data[k]) for k in ("polyarch", "buildah"))
        print(f"{label:5s} polyarch {p:6.2f}  buildah {b:6.2f}  ratio {p / b:.2f}   ({runs})")
    no_change = statistics.median(warm["polyarch"])
    print(f"no-change rebuild: {no_change:.2f} s (goal < 2 s)")
    if memory is not None:
        print(f"peak memory building a 1 GiB layer: {memory:.0f} MB (goal < 300 MB)")


if __name__ == "__main__":
    main()
