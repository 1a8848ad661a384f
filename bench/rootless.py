"""The seed's example, two platforms, as an ordinary user (rootless) and as root.

    .venv/bin/python bench/rootless.py [--rounds 3]

examples/bench-frontend (as bench/multiplatform.py) for linux/amd64 and linux/arm64: a cold
build (fresh workspace) and a no-op rebuild (the same again), as root and as a user made for
the bench (with a subordinate id range, removed after) that runs polyarch without sudo. Base
images come from Debian packages (tools/base_images.py, cached). Prints medians and the ratio
user / root (goal: within 1.2x, cold and no-op), and checks that both made the same image
(SOURCE_DATE_EPOCH set): every layer entry's path, type, mode, owners and size the same. File
contents are compared and the differing ones named: this Dockerfile's `apt-get` writes the
wall-clock time into its logs, so two builds of it never have the same digest, as root or not
(tests/integration/test_rootless.py holds the digests equal on Dockerfiles that are
reproducible).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/copy.py is named like the stdlib's `copy`: take this folder off the import path first.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tools.bench_frontend import prepare_frontend  # noqa: E402
from tools.users import add_user, as_user, remove_user  # noqa: E402

from polyarch.oci.models import Index, Manifest, parse_document  # noqa: E402
from polyarch.store import OciLayout  # noqa: E402

USER = "polyarch-bench-rl"
EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
NAME = "bench/frontend:1"
BUILD = ["build", "--progress", "plain", "--ca-certs", "host", "--platform",
         "linux/amd64,linux/arm64", "-t", NAME]  # fmt: skip


def timed(run: subprocess.CompletedProcess[str] | None, start: float) -> float:
    if run is not None and run.returncode != 0:
        sys.exit(f"failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - start


def listing(store: Path) -> tuple[list[str], dict[str, str]]:
    """The image's layer entries (platform, layer, path, type, mode, owners, link, size) and
    each file's content digest."""
    layout = OciLayout(store)
    entry = layout.resolve(f"docker.io/{NAME}")
    top = parse_document(layout.read_document(entry), entry.media_type)
    assert isinstance(top, Index)
    heads: list[str] = []
    contents: dict[str, str] = {}
    for descriptor in top.manifests:
        manifest = parse_document(layout.blobs.read_bytes(descriptor.digest),
                                  descriptor.media_type)  # fmt: skip
        assert isinstance(manifest, Manifest) and descriptor.platform is not None
        for n, layer in enumerate(manifest.layers):
            with (
                layout.blobs.open(layer.digest) as raw,
                tarfile.open(fileobj=raw, mode="r|*") as tf,
            ):
                for m in tf:
                    where = f"{descriptor.platform} layer {n} {m.name}"
                    heads.append(f"{where} {m.type!r} {m.mode:o} {m.uid}:{m.gid} {m.linkname} "
                                 f"{m.size} {sorted(m.pax_headers.items())}")  # fmt: skip
                    if m.isfile() and (data := tf.extractfile(m)) is not None:
                        contents[where] = hashlib.sha256(data.read()).hexdigest()
    return heads, contents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be 1 or more")
    if os.geteuid() != 0 or shutil.which("newuidmap") is None:
        sys.exit("needs root (to make the user) and uidmap: run tools/dev setup")
    times: dict[str, list[float]] = {"root cold": [], "user cold": [], "root no-op": [],
                                     "user no-op": []}  # fmt: skip
    add_user(USER)
    data = Path(pwd.getpwnam(USER).pw_dir) / ".local" / "share" / "polyarch"
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # the user reads the context
        registry, ctx = prepare_frontend(work)
        mine = work / "user"  # the user's own, for its metadata file
        mine.mkdir()
        shutil.chown(mine, USER, USER)
        try:
            for n in range(args.rounds):
                root = work / f"root-{n}"
                command = [sys.executable, "-m", "polyarch", *BUILD, "--metadata-file",
                           str(work / "root.json"), "--root", str(root), str(ctx)]  # fmt: skip
                for kind in ("cold", "no-op"):
                    start = time.perf_counter()
                    done = subprocess.run(command, capture_output=True, text=True, check=False,
                                          env={**os.environ, **EPOCH})  # fmt: skip
                    times[f"root {kind}"].append(timed(done, start))
                if n == 0:
                    root_image = listing(root / "store")
                shutil.rmtree(root)
                for kind in ("cold", "no-op"):
                    start = time.perf_counter()
                    done = as_user(USER, [*BUILD, "--metadata-file", str(mine / "user.json"),
                                          str(ctx)], work, env=EPOCH)  # fmt: skip
                    times[f"user {kind}"].append(timed(done, start))
                if n == 0:
                    user_image = listing(data / "store")
                shutil.rmtree(data)
                digests = {json.loads(path.read_text())["containerimage.digest"]
                           for path in (work / "root.json", mine / "user.json")}  # fmt: skip
        finally:
            registry.stop()
            remove_user(USER)
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"seed-shaped front end, two platforms, {args.rounds} round(s) (seconds)")
    for name, value in medians.items():
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:12s} {value:8.2f}   ({runs})")
    for kind in ("cold", "no-op"):
        ratio = medians[f"user {kind}"] / medians[f"root {kind}"]
        print(f"user / root ({kind}): {ratio:.2f}   (goal <= 1.2)")
    if user_image[0] != root_image[0]:
        differ = sorted(set(user_image[0]) ^ set(root_image[0]))
        sys.exit("the user's image is not root's (entries only in one):\n" + "\n".join(differ[:20]))
    changed = sorted(k for k, v in user_image[1].items() if root_image[1].get(k) != v)
    print(f"as user and as root: the same {len(root_image[0])} entries (paths, types, modes, "
          f"owners, sizes); contents differ in {len(changed)} file(s)"
          + (": " + ", ".join(changed) if changed else ""))  # fmt: skip
    print("digests: " + ("the same" if len(digests) == 1 else "differ (by those contents)"))


if __name__ == "__main__":
    main()
