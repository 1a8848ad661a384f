"""A yarn front end whose `yarn install` uses a cache mount: the rebuild after a change to
package.json with the cache mount warm, against the same rebuild with it cold.

    .venv/bin/python bench/yarn_cache.py [--rounds 3]

Starts a Distribution registry on 127.0.0.1 with the node base image (made from Debian
packages, cached). Each round builds the app in two fresh workspaces, then adds a dependency
to package.json and builds again: in one the cache mount is as the first build left it, in
the other it was emptied (the step cache is the same in both: only `yarn install` runs
again). Packages come from yarn's default registry; no lockfile is committed, so both
rebuilds resolve versions the same way. Prints the medians and the ratio warm/cold.
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
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tests.registry_server import start_plain  # noqa: E402
from tools.base_images import push  # noqa: E402

from polyarch.api import RegistryOptions, Session  # noqa: E402

DOCKERFILE = """\
# syntax=docker/dockerfile:1
FROM {node} AS build
WORKDIR /app
COPY package.json ./
RUN --mount=type=cache,target=/usr/local/share/.cache/yarn \\
    yarn install --non-interactive --no-progress --network-timeout 600000
COPY src/ ./src/
RUN mkdir -p dist && cp src/* dist/
CMD ["ls", "dist"]
"""
DEPENDENCIES = {
    "react": "18.3.1", "react-dom": "18.3.1", "lodash": "4.17.21", "dayjs": "1.11.13",
    "date-fns": "3.6.0", "rxjs": "7.8.1", "moment": "2.30.1", "core-js": "3.38.1",
    "axios": "1.7.7", "zod": "3.23.8",
}  # fmt: skip
ADDED = ("left-pad", "1.3.0")


def write_context(ctx: Path, node: str, extra: bool) -> None:
    (ctx / "src").mkdir(parents=True, exist_ok=True)
    (ctx / "src" / "index.js").write_text("console.log('app');\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(node=node))
    deps = dict(DEPENDENCIES)
    if extra:
        deps[ADDED[0]] = ADDED[1]
    package = {"name": "bench-front", "version": "1.0.0", "private": True, "dependencies": deps}
    (ctx / "package.json").write_text(json.dumps(package, indent=2) + "\n")


def build(root: Path, ctx: Path) -> float:
    cmd = [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--progress", "plain",
           "--ca-certs", "host", "-t", "bench/front:1", str(ctx)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: run tools/dev setup")
    warm: list[float] = []
    cold: list[float] = []
    first: list[float] = []
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry = start_plain(work / "registry")
        try:
            node = registry.ref("base/node:bookworm")
            with Session(RegistryOptions()) as session:
                push("node", ["amd64"], node, session)
            for n in range(args.rounds):
                results: dict[str, float] = {}
                order = ["warm", "cold"] if n % 2 == 0 else ["cold", "warm"]
                for kind in order:
                    ctx, root = work / f"ctx-{kind}-{n}", work / f"root-{kind}-{n}"
                    write_context(ctx, node, extra=False)
                    first.append(build(root, ctx))
                    if kind == "cold":
                        shutil.rmtree(root / "cache-mounts")
                    write_context(ctx, node, extra=True)
                    results[kind] = build(root, ctx)
                    shutil.rmtree(root, ignore_errors=True)
                warm.append(results["warm"])
                cold.append(results["cold"])
        finally:
            registry.stop()
    w, c = statistics.median(warm), statistics.median(cold)
    print(f"yarn front end ({len(DEPENDENCIES)} dependencies), {args.rounds} rounds "
          "(times in seconds)")  # fmt: skip
    print(f"first build            {statistics.median(first):6.2f}")
    print(
        f"after a package.json change: warm cache mount {w:6.2f}  cold {c:6.2f}  "
        f"ratio {w / c:.2f}   ({' '.join(f'{t:.2f}' for t in warm)} / "
        f"{' '.join(f'{t:.2f}' for t in cold)})"
    )


if __name__ == "__main__":
    main()
