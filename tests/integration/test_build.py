"""polyarch build with real components: an mmdebstrap base image, Distribution, runc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyarch.layers import apply_layer, open_layer
from polyarch.oci.models import ImageConfig, Index, Manifest, parse_document
from polyarch.reference import Reference
from polyarch.runtime import Executor, ProcessSpec, mount_overlay, unmount
from polyarch.store import OciLayout
from tests.registry_server import RunningRegistry

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("mmdebstrap"),
    reason="building needs root, runc and mmdebstrap (tools/dev setup installs them)",
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "polyarch-root"


def polyarch(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"polyarch {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


def write_context(path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return path


def image(root: Path, name: str) -> tuple[OciLayout, Manifest, ImageConfig]:
    """The image kept as `name` (a pushed one is an index of it and its provenance)."""
    layout = OciLayout(root / "store")
    entry = layout.resolve(str(Reference.parse(name)))
    manifest = parse_document(layout.read_document(entry), entry.media_type)
    if isinstance(manifest, Index):
        (entry,) = manifest.images()
        manifest = parse_document(layout.read_document(entry), entry.media_type)
    assert isinstance(manifest, Manifest)
    config = ImageConfig.parse(layout.blobs.read_bytes(manifest.config.digest))
    return layout, manifest, config


@pytest.fixture
def rootfs() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rootfs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def flatten(layout: OciLayout, manifest: Manifest, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    for layer in manifest.layers:
        with layout.blobs.open(layer.digest) as raw:
            apply_layer(open_layer(raw, layer.media_type), into)  # type: ignore[arg-type]
    return into


def run_image(root: Path, name: str, work: Path) -> tuple[int, str]:
    """Run the image's CMD the way `docker run` would (overlay of its layers, runc)."""
    from polyarch.worker.local.snapshots import SnapshotStore

    layout, manifest, config = image(root, name)
    snapshots = SnapshotStore(root / "snapshots", layout.blobs)
    lowers = [
        str(snapshots.ensure(diff, layer.digest, layer.media_type))
        for layer, diff in zip(manifest.layers, config.diff_ids, strict=True)
    ][::-1]
    for d in ("upper", "work", "merged"):
        (work / d).mkdir(parents=True)
    mount_overlay(lowers, str(work / "upper"), str(work / "work"), str(work / "merged"))
    lines: list[str] = []
    try:
        passwd = (work / "merged" / "etc" / "passwd").read_text().splitlines()
        uid = gid = 0
        for entry in passwd:
            parts = entry.split(":")
            if config.user and parts[0] == config.user:
                uid, gid = int(parts[2]), int(parts[3])
        code = Executor(work / "state").run(
            ProcessSpec(
                args=(*(config.entrypoint or ()), *(config.cmd or ())),
                env=config.env,
                cwd=config.working_dir or "/",
                uid=uid,
                gid=gid,
            ),
            work / "merged",
            work / "bundle",
            lines.append,
        )
    finally:
        unmount(str(work / "merged"))
    return code, "\n".join(lines)


APP = """\
FROM {base}
ARG GREETING=hello
ENV APP=/app PATH=/app/bin:$PATH
WORKDIR /app
COPY files/ ./
COPY --chmod=0755 run.sh bin/run
COPY --chown=1234:1234 <<EOF /app/notes.txt
written by a heredoc for $APP
EOF
RUN useradd -u 1234 -m worker && echo "$GREETING from $(uname -m)" > /app/greeting && rm /etc/issue
USER worker
RUN id -u > /tmp/whoami
CMD ["/app/bin/run"]
EXPOSE 8080
LABEL org.example.app=demo
"""
FILES = {
    "files/a.txt": "hello file\n",
    "files/sub/b.txt": "nested\n",
    "files/sub/ignored.log": "must not be copied\n",
    ".dockerignore": "files/sub/*.log\n",
    "run.sh": '#!/bin/sh\necho "run says: $(cat /app/greeting) as $(id -u)"\n',
}


def built(root: Path, ctx: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Build and return the typed result (`--metadata-file`), not the text printed."""
    meta = ctx.parent / f"meta-{os.getpid()}-{time.monotonic_ns()}.json"
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(root), "--metadata-file",
         str(meta), *args, str(ctx)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"polyarch build: {result.returncode}\n{result.stderr}")
    data: dict[str, Any] = json.loads(meta.read_text())
    return data


def test_build_push_and_run(
    base: str, registry: RunningRegistry, root: Path, tmp_path: Path, rootfs: Path
) -> None:
    ctx = write_context(tmp_path / "ctx", APP.format(base=base), FILES)
    ref = registry.ref("built/app:v1")
    out = polyarch("build", "--root", str(root), "-t", ref, "--push", str(ctx))
    assert "pushed" in out.stdout
    layout, manifest, config = image(root, ref)
    # The config, as Docker would write it.
    assert config.cmd == ("/app/bin/run",)
    assert config.working_dir == "/app"
    assert config.user == "worker"
    assert config.exposed_ports == ("8080/tcp",)
    assert dict(config.labels) == {"org.example.app": "demo"}
    env = dict(e.split("=", 1) for e in config.env)
    assert env["APP"] == "/app"
    assert env["PATH"].startswith("/app/bin:/usr/local/sbin")
    # The file tree.
    tree = flatten(layout, manifest, rootfs)
    assert (tree / "app" / "a.txt").read_text() == "hello file\n"
    assert (tree / "app" / "sub" / "b.txt").read_text() == "nested\n"
    assert not (tree / "app" / "sub" / "ignored.log").exists()  # .dockerignore
    assert (tree / "app" / "bin" / "run").stat().st_mode & 0o777 == 0o755
    notes = tree / "app" / "notes.txt"
    assert notes.read_text() == "written by a heredoc for /app\n"
    assert (notes.stat().st_uid, notes.stat().st_gid) == (1234, 1234)
    assert (tree / "app" / "a.txt").stat().st_uid == 0  # context files belong to root
    assert (tree / "app" / "greeting").read_text() == "hello from x86_64\n"
    assert (tree / "tmp" / "whoami").read_text() == "1234\n"  # USER applies to RUN
    assert (tree / "home" / "worker").stat().st_uid == 1234
    assert not (tree / "etc" / "issue").exists()  # deleted in a later layer: a whiteout
    # History as BuildKit writes it: metadata steps are empty layers.
    history = json.loads(layout.blobs.read_bytes(manifest.config.digest))["history"]
    empty = [h["created_by"] for h in history if h.get("empty_layer")]
    assert "USER worker" in empty
    assert any(e.startswith("ENV APP=/app") for e in empty)
    assert len(manifest.layers) == len(history) - len(empty)
    # What was pushed is what skopeo reads.
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True,
        capture_output=True,
    ).stdout
    assert raw == layout.read_document(layout.resolve(str(Reference.parse(ref))))
    # And it runs.
    code, output = run_image(root, ref, tmp_path / "run")
    assert code == 0, output
    assert output == "run says: hello from x86_64 as 1234"


def test_cache_hits_and_invalidation(base: str, root: Path, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", APP.format(base=base), FILES)
    first = built(root, ctx, "-t", "local/app:1")
    assert first["polyarch.steps"]["cached"] == 0
    again = built(root, ctx, "-t", "local/app:2")
    assert again["polyarch.steps"]["run"] == 0
    assert first["containerimage.digest"] == again["containerimage.digest"]
    (ctx / "run.sh").write_text("#!/bin/sh\necho changed\n")
    changed = polyarch(
        "build", "--root", str(root), "-t", "local/app:3", "--progress", "json", str(ctx)
    )
    events = [json.loads(line) for line in changed.stderr.splitlines()]
    cached = [e["description"] for e in events if e["event"] == "cached"]
    ran = [e["description"] for e in events if e["event"] == "start" and e["step"]]
    assert cached == ["WORKDIR /app", "COPY files/ ./"]
    assert ran[0] == "COPY run.sh bin/run"
    assert len(ran) == 4


def test_build_args_and_no_cache(base: str, root: Path, tmp_path: Path, rootfs: Path) -> None:
    ctx = write_context(tmp_path / "ctx", APP.format(base=base), FILES)
    args = ["--build-arg", "GREETING=hi", "--no-cache"]
    polyarch("build", "--root", str(root), "-t", "local/app:hi", *args, str(ctx))
    layout, manifest, _ = image(root, "local/app:hi")
    greeting = flatten(layout, manifest, rootfs) / "app" / "greeting"
    assert greeting.read_text() == "hi from x86_64\n"


def test_failing_step_names_the_line_and_keeps_the_store_consistent(
    base: str, root: Path, tmp_path: Path
) -> None:
    dockerfile = (
        f"FROM {base}\nRUN echo preparing > /p\nRUN echo 'about to fail' && exit 7\n"
        "RUN echo never\n"
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    result = polyarch("build", "--root", str(root), "-t", "local/fail:1", str(ctx), check=False)
    assert result.returncode == 1
    assert "Dockerfile:3: RUN echo 'about to fail' && exit 7 exited with status 7" in result.stderr
    assert "| about to fail" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((root / "tmp").iterdir())  # nothing left mounted or half-written
    assert not list((root / "store" / ".ingest").iterdir())
    # Fixing the step reuses what succeeded before it.
    (ctx / "Dockerfile").write_text(dockerfile.replace("exit 7", "true"))
    fixed = built(root, ctx, "-t", "local/fail:1")
    assert fixed["polyarch.steps"]["cached"] == 1


@pytest.mark.usefixtures("named_semaphores")
def test_kill_mid_build_then_rebuild(base: str, root: Path, tmp_path: Path, rootfs: Path) -> None:
    dockerfile = f"FROM {base}\nRUN echo one > /one\nRUN sleep 30 && echo two > /two\n"
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    command = [sys.executable, "-m", "polyarch", "build", "--root", str(root)]
    command += ["-t", "local/kill:1", "--progress", "json", str(ctx)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        event = json.loads(line)
        if event["event"] == "start" and event["description"].startswith("RUN sleep"):
            break
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (ctx / "Dockerfile").write_text(dockerfile.replace("sleep 30", "sleep 0"))
    rebuilt = built(root, ctx, "-t", "local/kill:1")
    assert rebuilt["polyarch.steps"]["cached"] == 1  # the step that finished before the kill
    layout, manifest, _ = image(root, "local/kill:1")
    tree = flatten(layout, manifest, rootfs)
    assert (tree / "one").read_text() == "one\n"
    assert (tree / "two").read_text() == "two\n"
    assert not list((root / "tmp").iterdir())


def test_docker_archive_loads_and_runs_in_docker(
    base: str, root: Path, tmp_path: Path, docker_engine: str
) -> None:
    ctx = write_context(tmp_path / "ctx", APP.format(base=base), FILES)
    archive = tmp_path / "app.tar"
    polyarch("build", "--root", str(root), "-t", "local/archive:1", "--output",
             f"type=docker,dest={archive}", str(ctx))  # fmt: skip
    docker = ["/usr/bin/docker", "-H", docker_engine]
    with archive.open("rb") as f:
        loaded = subprocess.run([*docker, "load"], stdin=f, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert "local/archive:1" in loaded.stdout
    run = subprocess.run([*docker, "run", "--rm", "--network", "none", "local/archive:1"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "run says: hello from x86_64 as 1234"


def test_onbuild_triggers_run_in_the_child(
    base: str, registry: RunningRegistry, root: Path, tmp_path: Path, rootfs: Path
) -> None:
    parent_ref = registry.ref("built/onbuild-base:1")
    parent = write_context(
        tmp_path / "parent",
        f"FROM {base}\nONBUILD COPY marker.txt /from-trigger.txt\nONBUILD RUN echo ran > /ran\n",
        {},
    )
    polyarch("build", "--root", str(root), "-t", parent_ref, "--push", str(parent))
    child = write_context(
        tmp_path / "child", f"FROM {parent_ref}\nRUN cat /ran\n", {"marker.txt": "child's\n"}
    )
    polyarch("build", "--root", str(root), "-t", "local/child:1", str(child))
    layout, manifest, _config = image(root, "local/child:1")
    tree = flatten(layout, manifest, rootfs)
    assert (tree / "from-trigger.txt").read_text() == "child's\n"
    assert (tree / "ran").read_text() == "ran\n"
    config = json.loads(layout.blobs.read_bytes(manifest.config.digest))
    assert "OnBuild" not in config["config"]  # triggers are not inherited further


def test_add_from_url_with_checksum(base: str, root: Path, tmp_path: Path, rootfs: Path) -> None:
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    payload = b"downloaded content\n"
    (served / "file.txt").write_bytes(payload)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[misc]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file.txt"
        good = "sha256:" + hashlib.sha256(payload).hexdigest()
        ctx = write_context(
            tmp_path / "ctx",
            f"FROM {base}\nADD --checksum={good} {url} /data/\nADD {url} /renamed.txt\n",
            {},
        )
        polyarch("build", "--root", str(root), "-t", "local/add:1", str(ctx))
        layout, manifest, _ = image(root, "local/add:1")
        tree = flatten(layout, manifest, rootfs)
        assert (tree / "data" / "file.txt").read_bytes() == payload
        assert (tree / "data" / "file.txt").stat().st_mode & 0o777 == 0o600
        assert (tree / "renamed.txt").read_bytes() == payload
        bad = write_context(
            tmp_path / "bad", f"FROM {base}\nADD --checksum=sha256:{'0' * 64} {url} /x\n", {}
        )
        result = polyarch("build", "--root", str(root), str(bad), check=False)
        assert result.returncode == 1
        assert "Dockerfile:2:" in result.stderr and "checksum mismatch" in result.stderr
    finally:
        server.shutdown()


def test_add_extracts_local_archives(base: str, root: Path, tmp_path: Path, rootfs: Path) -> None:
    import io
    import tarfile

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for suffix, mode in (("tar.gz", "w:gz"), ("tar.xz", "w:xz"), ("tar.bz2", "w:bz2")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            data = f"inside {suffix}\n".encode()
            info = tarfile.TarInfo(f"pkg/{suffix}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        (ctx / f"bundle.{suffix}").write_bytes(buf.getvalue())
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nADD bundle.tar.gz bundle.tar.xz bundle.tar.bz2 /opt/\n"
        "COPY bundle.tar.gz /copied/\n"
    )
    polyarch("build", "--root", str(root), "-t", "local/archives:1", str(ctx))
    layout, manifest, _ = image(root, "local/archives:1")
    tree = flatten(layout, manifest, rootfs)
    for suffix in ("tar.gz", "tar.xz", "tar.bz2"):
        assert (tree / "opt" / "pkg" / f"{suffix}.txt").read_text() == f"inside {suffix}\n"
    assert (tree / "copied" / "bundle.tar.gz").is_file()  # COPY never extracts


def test_independent_stages_run_in_parallel(base: str, root: Path, tmp_path: Path) -> None:
    dockerfile = (
        f"FROM {base} AS left\nRUN sleep 2 && echo left > /left\n"
        f"FROM {base} AS right\nRUN sleep 2 && echo right > /right\n"
        f"FROM {base}\nCOPY --from=left /left /l\nCOPY --from=right /right /r\n"
    )
    ctx = write_context(tmp_path / "ctx", dockerfile, {})
    result = polyarch(
        "build",
        "--root",
        str(root),
        "--jobs",
        "2",
        "--progress",
        "json",
        "-t",
        "local/par:1",
        str(ctx),
    )
    events = [json.loads(line) for line in result.stderr.splitlines()]
    spans = {}
    for e in events:
        if str(e.get("description", "")).startswith("RUN sleep 2"):
            spans.setdefault(e["stage"], {})[e["event"]] = e["time"]
    left, right = spans["left"], spans["right"]
    # Each started before the other finished: they ran at the same time.
    assert left["start"] < right["done"] and right["start"] < left["done"]


def test_ca_bundle_and_proxy_reach_run_steps_but_no_layer(
    base: str, root: Path, tmp_path: Path, rootfs: Path
) -> None:
    bundle = tmp_path / "corporate-ca.pem"
    # One real certificate (--ca-certs takes PEM certificates only): the host bundle's first.
    host = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    end = "-----END CERTIFICATE-----\n"
    bundle.write_text(host[host.index("-----BEGIN CERTIFICATE-----") : host.index(end) + len(end)])
    ctx = write_context(
        tmp_path / "ctx",
        f'FROM {base}\nRUN cat "$SSL_CERT_FILE" > /seen-ca && echo "$NODE_EXTRA_CA_CERTS" '
        '> /ca-path && echo "$HTTP_PROXY" > /seen-proxy\n',
        {},
    )
    polyarch("build", "--root", str(root), "-t", "local/ca:1", "--ca-certs", str(bundle),
             "--build-arg", "HTTP_PROXY=http://proxy.internal:3128", str(ctx))  # fmt: skip
    layout, manifest, config = image(root, "local/ca:1")
    tree = flatten(layout, manifest, rootfs)
    assert (tree / "seen-ca").read_text() == bundle.read_text()
    assert (tree / "ca-path").read_text() == "/run/polyarch-ca/ca-certificates.crt\n"
    assert (tree / "seen-proxy").read_text() == "http://proxy.internal:3128\n"
    assert not (tree / "run" / "polyarch-ca").exists()
    raw = layout.blobs.read_bytes(manifest.config.digest).decode()
    assert "proxy.internal" not in raw  # the value is in no config field and no history
    assert "polyarch-ca" not in raw
    assert not any(e.startswith(("SSL_CERT_FILE", "HTTP_PROXY")) for e in config.env)


def test_copy_snapshotter_gives_the_same_tree(base: str, tmp_path: Path) -> None:
    """Where overlayfs cannot be mounted, copies are used: the image must be the same."""
    import hashlib
    import stat as st_

    ctx = write_context(tmp_path / "ctx", APP.format(base=base), FILES)
    trees = {}
    for mode in ("overlay", "copy"):
        root = tmp_path / f"root-{mode}"
        subprocess.run(
            [sys.executable, "-m", "polyarch", "build", "--root", str(root), "-t",
             "local/snap:1", str(ctx)],
            check=True, capture_output=True, env={**os.environ, "POLYARCH_SNAPSHOTTER": mode},
        )  # fmt: skip
        layout, manifest, _ = image(root, "local/snap:1")
        into = flatten(layout, manifest, tmp_path / f"tree-{mode}")
        entries = {}
        for path in sorted(into.rglob("*")):
            info = path.lstat()
            kind = st_.S_IFMT(info.st_mode)
            content = (
                os.readlink(path) if st_.S_ISLNK(info.st_mode)
                else hashlib.sha256(path.read_bytes()).hexdigest() if st_.S_ISREG(info.st_mode)
                else None
            )  # fmt: skip
            entries[str(path.relative_to(into))] = (kind, st_.S_IMODE(info.st_mode),
                                                    info.st_uid, info.st_gid, content)  # fmt: skip
        trees[mode] = entries
    assert trees["overlay"] == trees["copy"]


def test_source_date_epoch_gives_the_same_digest_in_fresh_roots(base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", APP.format(base=base), FILES)
    digests = []
    for n in range(2):
        done = built(tmp_path / f"root-{n}", ctx, "--no-cache", "-t", "local/repro:1",
                     env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})  # fmt: skip
        digests.append(done["containerimage.digest"])
        os.utime(ctx / "run.sh")  # a touched file changes nothing: times are clamped
    assert digests[0] == digests[1]


def test_a_relative_root_runs_steps(base: str, tmp_path: Path) -> None:
    """--root relative to the current directory: the runtime, with a directory of its own,
    still finds each step's root filesystem."""
    write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo ran > /ran\n", {})
    done = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", "rel-root", "ctx"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rel-root" / "store").is_dir()


def test_source_date_epoch_from_the_environment_is_a_build_argument(
    base: str, tmp_path: Path
) -> None:
    """As buildx: SOURCE_DATE_EPOCH set in the environment is the build argument of that name
    (an `ARG SOURCE_DATE_EPOCH` sees it) unless --build-arg gives another."""
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nARG SOURCE_DATE_EPOCH\n"
                        "RUN echo \"$SOURCE_DATE_EPOCH\" > /epoch\n", {})  # fmt: skip
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    for given, expected in (((), "1700000000"), (("--build-arg", "SOURCE_DATE_EPOCH=5"), "5")):
        out = tmp_path / f"out-{expected}"
        built(tmp_path / "root", ctx, *given, "--output", f"type=local,dest={out}", env=env)
        assert (out / "epoch").read_text() == expected + "\n"


@pytest.mark.parametrize("flag", ["--metadata-file", "--iidfile"])
def test_a_result_file_that_cannot_be_written_is_refused_first(flag: str, tmp_path: Path) -> None:
    """Checked before the build: a long build does not end with a result it cannot write."""
    ctx = write_context(tmp_path / "ctx", "FROM scratch\nCOPY a /a\n", {"a": "a\n"})
    done = subprocess.run(
        [sys.executable, "-m", "polyarch", "build", "--root", str(tmp_path / "root"), flag,
         str(tmp_path / "no-such-dir" / "out.json"), str(ctx)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{flag}" in done.stderr and "no directory" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "root").exists()
