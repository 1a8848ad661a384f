"""Hashing a large build context: polyarch's context source against `tar | gzip -1`.

    .venv/bin/python bench/context.py [--files 50000] [--rounds 3]

Makes a tree of small files (a front end's node_modules is like this), then times what a
build does before it can decide that `COPY . /app` is cached or not: select the sources (after
.dockerignore) and digest them. Cold: no file digest known; unchanged: a second build with
nothing changed (digests reused by inode, size, mtime and ctime); one changed: a file edited.
The baseline is `tar -c . | gzip -1 > /dev/null` of the same tree (reading every byte once, as
any builder that sends its context must). Then whole builds of `FROM scratch` + `COPY . /app/`
(digest, copy and layer): cold, unchanged, one file changed. Prints medians.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/copy.py is named like the stdlib's `copy`: take this folder off the import path first.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "src"))

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from polyarch.layers import Root  # noqa: E402
from polyarch.patterns import IgnoreMatcher  # noqa: E402
from polyarch.worker.local.context import ContextHasher  # noqa: E402
from polyarch.worker.local.filecopy import select_sources  # noqa: E402


def make_tree(root: Path, files: int) -> None:
    per_dir = 100
    for i in range(files):
        d = root / "node_modules" / f"pkg-{i // per_dir}" / "lib"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.js").write_text(f"module.exports = {i};\n" * (1 + i % 20))
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")


def digest(tree: Path, db: Path) -> float:
    started = time.perf_counter()
    matcher = IgnoreMatcher([".git"])
    with Root(tree) as root:
        selected = select_sources(root, ["."], matcher)
        ContextHasher(db).digest(root, selected, matcher)
    return time.perf_counter() - started


def tar_gzip(tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(f"tar -C {tree} -c . | gzip -1 > /dev/null", shell=True, check=True)
    return time.perf_counter() - started


def build(tree: Path, root: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "polyarch", "build", "--root", str(root),
                    "--progress", "plain", str(tree)], check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctx-bench-") as work:
        tree = Path(work) / "ctx"
        tree.mkdir()
        make_tree(tree, args.files)
        times: dict[str, list[float]] = {"cold": [], "unchanged": [], "one changed": [],
                                         "tar | gzip -1": []}  # fmt: skip
        for n in range(args.rounds):
            db = Path(work) / f"files-{n}.db"
            times["cold"].append(digest(tree, db))
            times["unchanged"].append(digest(tree, db))
            victim = tree / "node_modules" / "pkg-3" / "lib" / "f300.js"
            victim.write_text(victim.read_text() + f"// edit {n}\n")
            times["one changed"].append(digest(tree, db))
            times["tar | gzip -1"].append(tar_gzip(tree))
            root = Path(work) / f"root-{n}"
            (tree / "Dockerfile").write_text("FROM scratch\nCOPY . /app/\n")
            times.setdefault("build cold", []).append(build(tree, root))
            times.setdefault("build unchanged", []).append(build(tree, root))
            victim.write_text(victim.read_text() + f"// again {n}\n")
            times.setdefault("build one changed", []).append(build(tree, root))
            (tree / "Dockerfile").unlink()
            os.sync()
    base = statistics.median(times["tar | gzip -1"])
    print(f"{args.files} files, {args.rounds} rounds (medians)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<18} {median:6.2f} s   ({median / base:5.1f}x tar | gzip -1)")


if __name__ == "__main__":
    main()
