"""The seed's front end, cold, for linux/amd64 and linux/arm64: polyarch side by side with
BuildKit (Debian's dockerd) on the expert-pinned Dockerfile and with buildah; where polyarch's
CPU time goes, by kind; and the build's critical path, read from its trace.

    .venv/bin/python bench/cold.py [--rounds 3] [--peers buildkit,buildah]

examples/frontend (three yarn apps, an exporter binary, nginx with apt-get), its bases from
Debian packages (tools/base_images.py, cached). Each round builds, in turn:
- polyarch on the plain Dockerfile (build-once runs the yarn stages once, natively), fresh
  workspace, traced;
- BuildKit, the engine in Debian's dockerd (a fresh data root each round), on the Dockerfile an
  expert writes for it: the yarn stages pinned with `FROM --platform=$BUILDPLATFORM`, output as
  a tar per platform (the classic image store takes one platform);
- buildah (`build --platform ... --manifest`), the plain Dockerfile, every stage per platform.
RUN steps reach the package registries through the host's CA bundle: polyarch with
`--ca-certs host`, buildah with the bundle mounted, BuildKit from bases that carry it (the bases
plus one layer with the bundle: dockerd has no such option).

Nothing is deleted until the end. On this machine's ext4 (no journal) a file made within a few
minutes of a mass deletion costs many times the kernel time (the inode allocator steps over
recently deleted inodes), which would make whichever build follows a clean-up slower.

The profile: polyarch's CPU time by kind (`otherData.cpu_seconds` of its trace, user+kernel
seconds) against the whole command's (rusage of its process tree): the tools' own processes
natively and under QEMU, unpacking base layers, pulling, committing and compressing layers,
COPY, and polyarch's own Python elsewhere. The critical path walks back from the step that ended
last: each slice's predecessor is the one that ended last before it began (or asked for a slot).
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
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from tests.docker_engine import EngineUnavailable, start_engine  # noqa: E402
from tests.registry_server import RunningRegistry, start_plain  # noqa: E402
from tools.base_images import push  # noqa: E402

from polyarch.api import RegistryOptions, Session  # noqa: E402

EXAMPLE = ROOT / "examples" / "frontend"
CA = "/etc/ssl/certs/ca-certificates.crt"
PLATFORMS = "linux/amd64,linux/arm64"
BASES = {"NODE_IMAGE": "node", "NGINX_IMAGE": "nginx", "EXPORTER_IMAGE": "exporter"}
YARN_STAGES = ("the-header", "the-portal", "ram")


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


def timed(cmd: list[str], **kw: Any) -> tuple[float, float]:
    """Wall time and CPU time (user + kernel, the command and its children) of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run(cmd, **kw)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def prepare(work: Path, peers: set[str]) -> tuple[RunningRegistry, dict[str, str], dict[str, str]]:
    """The registry (the caller stops it) with the bases, and the build arguments naming them:
    as they are, and (for BuildKit) with the host's CA bundle added."""
    run([sys.executable, "-m", "polyarch", "emulators", "install", "--platform", "linux/arm64"])
    registry = start_plain(work / "registry")
    plain: dict[str, str] = {}
    with_ca: dict[str, str] = {}
    try:
        with Session(RegistryOptions()) as session:
            for arg, recipe in BASES.items():
                # buildah runs the yarn stages for arm64 too; the others need amd64 alone
                arches = ["amd64", "arm64"] if recipe != "node" or "buildah" in peers else ["amd64"]
                plain[arg] = registry.ref(f"base/{recipe}:bookworm")
                push(recipe, arches, plain[arg], session)
        if "buildkit" in peers:
            ctx = work / "ca-base"
            ctx.mkdir()
            shutil.copy(CA, ctx / "ca.crt")
            (ctx / "Dockerfile").write_text(
                "ARG BASE\nFROM ${BASE}\nCOPY ca.crt /etc/ssl/certs/ca-certificates.crt\n"
            )
            for arg, ref in plain.items():
                with_ca[arg] = ref.replace("/base/", "/base-ca/")
                platforms = "linux/amd64" if arg == "NODE_IMAGE" else PLATFORMS
                run([sys.executable, "-m", "polyarch", "build", "--root", str(work / "ca-root"),
                     "--progress", "plain", "--platform", platforms, "--build-arg",
                     f"BASE={ref}", "-t", with_ca[arg], "--push", str(ctx)])  # fmt: skip
    except BaseException:
        registry.stop()
        raise
    return registry, plain, with_ca


def pinned(dockerfile: str) -> str:
    """The Dockerfile an expert writes for BuildKit: the yarn stages on the build platform."""
    for stage in YARN_STAGES:
        dockerfile = dockerfile.replace(
            f"FROM ${{NODE_IMAGE}} AS {stage}\n",
            f"FROM --platform=$BUILDPLATFORM ${{NODE_IMAGE}} AS {stage}\n",
        )
    assert dockerfile.count("--platform=$BUILDPLATFORM") == len(YARN_STAGES)
    return dockerfile


def build_args(args: dict[str, str]) -> list[str]:
    return [a for name, value in args.items() for a in ("--build-arg", f"{name}={value}")]


def polyarch_round(work: Path, ctx: Path, bases: dict[str, str]) -> tuple[float, float, Path]:
    work.mkdir()
    trace = work / "trace.json"
    wall, used = timed([sys.executable, "-m", "polyarch", "build", "--root", str(work / "root"),
                        "--progress", "plain", "--ca-certs", "host", "--platform", PLATFORMS,
                        "--trace", str(trace), "-t", "bench/frontend:cold", *build_args(bases),
                        str(ctx)])  # fmt: skip
    return wall, used, trace


def buildkit_round(work: Path, ctx: Path, bases: dict[str, str]) -> tuple[float, float]:
    try:
        engine = start_engine(work)
    except EngineUnavailable as exc:
        sys.exit(f"{exc} (tools/dev setup installs it)")
    try:
        env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_HOST": engine.host}
        # Debian's docker CLI takes one platform a build: both at once on one engine, whose
        # solver runs the steps the two share (the pinned yarn stages) once, as a
        # multi-platform build would. dockerd's CPU time is read from its process.
        before = _tree_seconds(engine.process.pid)
        clients = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        builds = [subprocess.Popen([engine.client, "build", "--network", "host", "--platform",
                                    platform, "-f", str(ctx / "Dockerfile.pinned"),
                                    *build_args(bases),
                                    "--output", f"type=tar,dest={work / f'out-{n}.tar'}",
                                    str(ctx)], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
                  for n, platform in enumerate(PLATFORMS.split(","))]  # fmt: skip
        for build in builds:
            out, _ = build.communicate()
            if build.returncode != 0:
                sys.exit(f"BuildKit failed:\n{out[-3000:]}")
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = (after.ru_utime - clients.ru_utime) + (after.ru_stime - clients.ru_stime)
        return wall, client + _tree_seconds(engine.process.pid) - before
    finally:
        engine.stop()


def _tree_seconds(pid: int) -> float:
    """CPU seconds of a live process and the children it reaped (user + kernel, cumulative)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / ticks


def buildah_round(work: Path, ctx: Path, bases: dict[str, str]) -> tuple[float, float]:
    if shutil.which("buildah") is None:
        sys.exit("needs buildah: run tools/dev setup")
    return timed(["buildah", "--root", str(work / "root"), "--runroot", str(work / "run"),
                  "build", "--isolation", "chroot", "--tls-verify=false", "-q", "--platform",
                  PLATFORMS, "--manifest", "localhost/bench-cold", "-v",
                  f"{CA}:/etc/ssl/certs/ca-certificates.crt:ro", *build_args(bases),
                  str(ctx)])  # fmt: skip


def profile(trace: dict[str, Any], command_seconds: float) -> list[tuple[str, float, float]]:
    """(kind, user, kernel) rows of polyarch's CPU time, the whole command's in the last row."""
    spent = trace["otherData"]["cpu_seconds"]
    measured, charged = spent["measured"], spent["charged"]
    rows: list[tuple[str, float, float]] = []
    names = {"run native": "tools, native (RUN steps)",
             "run emulated": "tools under QEMU (RUN steps)", "unpack": "unpack base layers",
             "pull": "pull (download, hash, store)", "commit": "commit layers (diff, tar, hash)",
             "compress": "compress layers", "copy": "COPY"}  # fmt: skip
    for kind, label in names.items():
        user = measured.get(kind, [0, 0])[0] + charged.get(kind, [0, 0])[0]
        kernel = measured.get(kind, [0, 0])[1] + charged.get(kind, [0, 0])[1]
        rows.append((label, user, kernel))
    own = spent["total"]["self"]
    rest = [own[i] - sum(v[i] for v in measured.values()) for i in (0, 1)]
    rows.append(("polyarch's own Python elsewhere", rest[0], rest[1]))
    accounted = sum(u + k for _, u, k in rows)
    rows.append(("other processes (runtime calls, start-up)", command_seconds - accounted, 0.0))
    return rows


OWN = ("unpack base layers", "pull (download, hash, store)", "commit layers (diff, tar, hash)",
       "compress layers", "COPY", "polyarch's own Python elsewhere")  # fmt: skip


def critical_path(trace: dict[str, Any]) -> list[str]:
    events = trace["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    slices = [e for e in events if e.get("ph") == "X" and e["dur"] > 0]
    if not slices:
        return []

    def end(s: dict[str, Any]) -> int:
        return int(s["ts"] + s["dur"])

    current = max(slices, key=end)
    chain = [current]
    while True:
        # what it waited for: the slice that ended last before it ran (one of its own
        # platform's when that ended as late, within 0.1 s)
        before = [s for s in slices if end(s) <= current["ts"] + 50_000 and end(s) < end(current)]
        if not before:
            break
        latest = max(before, key=end)
        mine = [s for s in before if s["pid"] == current["pid"] and end(s) >= end(latest) - 100_000]
        current = max(mine, key=end) if mine else latest
        chain.append(current)
    lines = []
    previous = 0
    for s in reversed(chain):
        args = s["args"]
        if s["ts"] - previous > 200_000:  # no slice: polyarch's own work or a wait
            lines.append(f"  {previous / 1e6:6.1f} - {s['ts'] / 1e6:6.1f} s  (between slices)")
        mark = " (emulated)" if args.get("emulated") else ""
        lines.append(f"  {s['ts'] / 1e6:6.1f} - {end(s) / 1e6:6.1f} s  "
                     f"[{processes.get(s['pid'], '?')} {args.get('stage', '')}] "
                     f"{s['name'][:56]}{mark}")  # fmt: skip
        previous = end(s)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--peers", default="buildkit,buildah")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (buildah, dockerd): run as root")
    peers = {p for p in args.peers.split(",") if p}
    walls: dict[str, list[float]] = {"polyarch": [], **{p: [] for p in sorted(peers)}}
    cpus: dict[str, list[float]] = {k: [] for k in walls}
    profiles: list[list[tuple[str, float, float]]] = []
    traces: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="polyarch-bench-") as tmp:
        work = Path(tmp)
        registry, plain, with_ca = prepare(work, peers)
        try:
            ctx = work / "ctx"
            shutil.copytree(EXAMPLE, ctx, ignore=shutil.ignore_patterns("polyarch.toml"))
            (ctx / "Dockerfile.pinned").write_text(pinned((ctx / "Dockerfile").read_text()))
            for n in range(args.rounds):
                wall, used, trace_path = polyarch_round(work / f"polyarch-{n}", ctx, plain)
                trace = json.loads(trace_path.read_text())
                walls["polyarch"].append(wall)
                cpus["polyarch"].append(used)
                profiles.append(profile(trace, used))
                traces.append(trace)
                if "buildkit" in peers:
                    (work / f"buildkit-{n}").mkdir()
                    wall, used = buildkit_round(work / f"buildkit-{n}", ctx, with_ca)
                    walls["buildkit"].append(wall)
                    cpus["buildkit"].append(used)
                if "buildah" in peers:
                    wall, used = buildah_round(work / f"buildah-{n}", ctx, plain)
                    walls["buildah"].append(wall)
                    cpus["buildah"].append(used)
                print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in
                                                       walls.items()), flush=True)  # fmt: skip
        finally:
            registry.stop()
            for store in work.glob("buildah-*"):
                subprocess.run(["buildah", "--root", str(store / "root"), "--runroot",
                                str(store / "run"), "rm", "--all"], capture_output=True,
                               check=False)  # fmt: skip
    report(args.rounds, walls, cpus, profiles, traces)


def report(rounds: int, walls: dict[str, list[float]], cpus: dict[str, list[float]],
           profiles: list[list[tuple[str, float, float]]],
           traces: list[dict[str, Any]]) -> None:  # fmt: skip
    print(f"\nexamples/frontend, cold, {PLATFORMS}, {rounds} round(s), medians")
    print(f"  {'':10s} {'wall':>8s} {'CPU':>9s}   rounds")
    for name, values in walls.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:10s} {statistics.median(values):7.1f}s {statistics.median(cpus[name]):7.1f}"
              f"cs   ({runs})")  # fmt: skip
    mine = statistics.median(walls["polyarch"])
    for peer, values in walls.items():
        if peer != "polyarch":
            print(f"  {peer} / polyarch: {statistics.median(values) / mine:.2f}x")
    middle = sorted(range(len(profiles)), key=lambda i: walls["polyarch"][i])[len(profiles) // 2]
    print(f"\npolyarch's CPU time by kind (round {middle + 1}; user + kernel core-seconds)")
    rows = profiles[middle]
    for label, user, kernel in rows:
        print(f"  {label:44s} {user + kernel:6.1f}  ({user:.1f} user, {kernel:.1f} kernel)")
    own = sum(u + k for label, u, k in rows if label in OWN)
    print(f"  {'polyarch own (the kinds above that are its)':44s} {own:6.1f}")
    print(f"  {'the whole command':44s} {cpus['polyarch'][middle]:6.1f}")
    print("\ncritical path (walked back from the step that ended last)")
    for line in critical_path(traces[middle]):
        print(line)


if __name__ == "__main__":
    main()
