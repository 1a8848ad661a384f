"""What explanations cost: a no-op rebuild with and without `--explain`, and with another
polyarch (`--against PYTHON`, e.g. a checkout from before explanations) for the cost of
keeping the record at all.

    .venv/bin/python bench/explain.py [--rounds 7] [--files 5000] [--against /path/to/python]

Starts a Distribution registry on 127.0.0.1 with the Debian base image (made from Debian
packages, cached), makes a context of `--files` small files copied by one COPY and read by a
RUN, builds it once, then times no-op rebuilds (nothing changed: every step from the cache,
the context's digests from the file-digest table) round-robin, and one rebuild after editing
one file (the record is read and written). Prints medians and ratios; the goal: --explain
costs nothing measurable on a no-op rebuild.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tests.registry_server import start_plain  # noqa: E402
from tools.base_images import push  # noqa: E402

from polyarch.api import RegistryOptions, Session  # noqa: E402

DOCKERFILE = "FROM {base}\nCOPY src/ /src/\nRUN find /src -type f | wc -l > /count\n"


def build(python: str, root: Path, ctx: Path, *extra: str) -> float:
    cmd = [python, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
           *extra, str(ctx)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--against", help="another polyarch's python, for the record's cost")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="polyarch-bench-explain-"))
    registry = start_plain(work / "registry")
    try:
        base = registry.ref("base/debian:bookworm")
        with Session(RegistryOptions()) as session:
            push("debian", ["amd64"], base, session)
        ctx = work / "ctx"
        for i in range(args.files):
            path = ctx / "src" / f"d{i % 50}" / f"f{i}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"file {i}\n")
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base))
        kinds = {"build": (sys.executable, ()), "build --explain": (sys.executable,
                                                                    ("--explain",))}  # fmt: skip
        if args.against:
            kinds["other polyarch"] = (args.against, ())
        roots = {kind: work / f"root-{n}" for n, kind in enumerate(kinds)}
        for kind, (python, extra) in kinds.items():
            build(python, roots[kind], ctx, *extra)  # cold, and a first record
            build(python, roots[kind], ctx, *extra)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind, (python, extra) in kinds.items():
                times[kind].append(build(python, roots[kind], ctx, *extra))
        (ctx / "src" / "d0" / "f0.txt").write_text("edited\n")
        edited = build(sys.executable, roots["build --explain"], ctx, "--explain")
        record = sum(p.stat().st_size for p in (roots["build"] / "explain").glob("*.json.gz"))
        base_median = statistics.median(times["build"])
        print(f"no-op rebuild of a {args.files}-file context, {args.rounds} rounds (median):")
        for kind, values in times.items():
            median = statistics.median(values)
            print(f"  {kind:<16} {median:6.3f} s   ratio to build {median / base_median:.3f}")
        print(f"rebuild after editing one file, with --explain: {edited:.3f} s")
        print(f"the record kept for the target: {record / 1024:.0f} KiB (gzip)")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
