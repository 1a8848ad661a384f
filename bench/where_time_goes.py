"""Where the seed-shaped build's time goes, read from its trace (`polyarch build --trace`).

    .venv/bin/python bench/where_time_goes.py [--svg docs/trace.svg]

examples/bench-frontend for linux/amd64 and linux/arm64, cold (a fresh workspace), traced.
Prints the wall time, then the time of the slices by kind: base-image pulls, steps run
natively, steps run under emulation, cache hits; and the steps that took longest, each with
its platform, stage and whether it was emulated. With --svg, draws the trace as the README's
picture (tools/trace_svg.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from tools.bench_frontend import prepare_frontend  # noqa: E402
from tools.trace_svg import render  # noqa: E402


def summarise(trace: dict[str, Any], wall: float) -> list[str]:
    events = trace["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    slices = [e for e in events if e.get("ph") == "X"]
    kinds: dict[str, float] = {}
    for s in slices:
        args = s.get("args", {})
        if s["cat"] == "io":
            kind = "pulls and cache transfers"
        elif args.get("cache") in ("local", "imported"):
            kind = "cache hits"
        else:
            kind = "steps run under emulation" if args.get("emulated") else "steps run natively"
        kinds[kind] = kinds.get(kind, 0.0) + s["dur"] / 1e6
    lines = [f"wall time {wall:.1f} s; slice time by kind (slices overlap: platforms and "
             "stages run side by side):"]  # fmt: skip
    for kind, seconds in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {kind:28s} {seconds:7.1f} s")
    lines.append("longest steps:")
    for s in sorted(slices, key=lambda s: -s["dur"])[:8]:
        args = s.get("args", {})
        mark = " (emulated)" if args.get("emulated") else ""
        waited = f", waited {args['waited_s']:.1f} s for a slot" if args.get("waited_s") else ""
        lines.append(f"  {s['dur'] / 1e6:6.1f} s  [{processes.get(s['pid'], '?')} "
                     f"{args.get('stage', '')}] {s['name'][:60]}{mark}{waited}")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, help="draw the trace as an SVG here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: run tools/dev setup")
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry, ctx = prepare_frontend(work)
        try:
            trace_file = work / "trace.json"
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "polyarch", "build", "--progress", "plain", "--ca-certs",
                 "host", "--root", str(work / "root"), "--platform", "linux/amd64,linux/arm64",
                 "--trace", str(trace_file), "-t", "bench/frontend:1", str(ctx)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            wall = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"the build failed:\n{done.stderr[-3000:]}")
            trace = json.loads(trace_file.read_text())
        finally:
            registry.stop()
    print("seed-shaped front end, linux/amd64 + linux/arm64, cold, traced")
    print("\n".join(summarise(trace, wall)))
    if args.svg is not None:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(render(trace))
        print(f"wrote {args.svg}")


if __name__ == "__main__":
    main()
