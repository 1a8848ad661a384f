"""The node path's overhead: the seed-shaped build with linux/arm64 routed to an SSH node on
this same machine, against building everything locally.

    .venv/bin/python bench/nodes.py [--rounds 2]

examples/bench-frontend for linux/amd64 and linux/arm64, cold each time (fresh workspaces here
and on the node). The node is this machine behind a real OpenSSH server on 127.0.0.1 (its own
workspace root), so it still emulates arm64: what is measured is what the node path adds
(SSH, the protocol, the context sent by content, the image brought back blob by blob), and a
second build with nothing changed (nothing sent, nothing run). What a real arm64 node saves is
a calculation from the emulated and native times of the same steps, printed last.
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
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tests.git_server import start_sshd  # noqa: E402
from tools.bench_frontend import prepare_frontend  # noqa: E402


def build(args: list[str], env: dict[str, str]) -> tuple[float, list[dict[str, object]]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "polyarch", "build", "--progress", "json",
                           "--ca-certs", "host", *args], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    return seconds, [json.loads(line) for line in done.stderr.splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: run tools/dev setup")
    times: dict[str, list[float]] = {"all local": [], "arm64 on the SSH node": [],
                                     "again, nothing changed": []}  # fmt: skip
    emulated: list[float] = []
    native: list[float] = []
    sent: list[str] = []
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry, ctx = prepare_frontend(work)
        sshd = start_sshd(work / "sshd")
        try:
            env = dict(os.environ, POLYARCH_CONFIG_DIR=str(work / "config"),
                       POLYARCH_SSH_COMMAND=f"ssh -i {sshd.client_key} -o StrictHostKeyChecking="
                       "no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")  # fmt: skip
            for n in range(options.rounds):
                common = ["--platform", "linux/amd64,linux/arm64", "-t", "bench/frontend:1"]
                seconds, stream = build([*common, "--builder", "default", "--root",
                                         str(work / f"local-{n}"), str(ctx)], env)  # fmt: skip
                times["all local"].append(seconds)
                for e in stream:
                    if e.get("event") == "done" and "apt-get" in str(e.get("description")):
                        (emulated if e.get("emulated") else native).append(float(e["seconds"]))  # type: ignore[arg-type]
                node = f"n{n}"
                subprocess.run([sys.executable, "-m", "polyarch", "builder", "create", node,
                                "--node", f"arm=ssh://root@127.0.0.1:{sshd.port}", "--platform",
                                "linux/arm64", "--node-command", f"POLYARCH_ROOT="
                                f"{work / f'node-{n}'} {sys.executable} -m polyarch"],
                               env=env, check=True, capture_output=True)  # fmt: skip
                remote = ["--builder", node, "--root", str(work / f"farm-{n}"), str(ctx)]
                seconds, stream = build([*common, *remote], env)
                times["arm64 on the SSH node"].append(seconds)
                notes = [str(e.get("text")) for e in stream if e.get("event") == "note"]
                sent = sorted({text for text in notes if " sent" in text})
                seconds, _ = build([*common, *remote], env)
                times["again, nothing changed"].append(seconds)
        finally:
            sshd.stop()
            registry.stop()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"seed-shaped front end, linux/amd64 + linux/arm64, cold, {options.rounds} round(s)")
    for name, value in medians.items():
        runs = " ".join(f"{t:.1f}" for t in times[name])
        print(f"  {name:26s} {value:7.1f} s   ({runs})")
    for line in sent:  # what the last node build sent
        print(f"  {line}")
    overhead = medians["arm64 on the SSH node"] / medians["all local"] - 1
    print(f"node path overhead: {overhead:+.0%} (same machine: the node still emulates arm64)")
    if emulated and native:
        e, n = statistics.median(emulated), statistics.median(native)
        print(f"the apt-get step: {e:.1f} s emulated, {n:.1f} s native (x{e / n:.1f}); on a "
              f"native arm64 node the arm64 build would lose about {e - n:.1f} s of "
              "its critical path (calculated, not measured)")  # fmt: skip


if __name__ == "__main__":
    main()
