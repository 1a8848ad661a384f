"""The node side: `polyarch worker`, started over SSH for one build, serving the protocol on
its stdin and stdout (anything else the process would print goes to stderr).

It keeps context files by digest under its workspace (`ROOT/nodes/files`), so a file sent once
is never sent again; builds one platform into its own store with its own step cache (a rebuild
that changes nothing runs nothing); and hands the result's documents and blobs back by digest.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from polyarch import __version__
from polyarch.digest import Digest
from polyarch.errors import BuildError, DockerfileError, PolyarchError
from polyarch.export.outputs import RegistryOutput
from polyarch.graph.ops import ContextSource
from polyarch.nodes.builders import DEFAULT
from polyarch.nodes.protocol import (
    PROTOCOL_VERSION,
    payload_chunks,
    receive,
    send,
    send_file,
)
from polyarch.nodes.session import NodeSession, node_session
from polyarch.progress import Event
from polyarch.store.blobs import ContentStore

if TYPE_CHECKING:
    from polyarch.api import Session

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # --ca-certs host, on the node


@contextlib.contextmanager
def protocol_streams() -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """stdin and stdout for the protocol; fd 1 then points at stderr so that nothing else
    (a child process, a stray print) can corrupt the stream."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield sys.stdin.buffer, out
    finally:
        out.close()


def serve(inp: BinaryIO, out: BinaryIO, root: Path) -> int:
    from polyarch import doctor  # noqa: PLC0415
    from polyarch.api import RegistryOptions, Session, machine_platform  # noqa: PLC0415
    from polyarch.runtime import binfmt  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    # Interrupted as a local build is, even when started with SIGINT ignored (in the
    # background of a shell): see NodeSession.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hello = receive(inp, "the client")
    if hello.get("op") != "hello":
        send(out, {"op": "error", "message": "expected hello"})
        return 2
    machine = machine_platform()
    emulated = [str(p) for p in binfmt.registered(machine)]
    runtime = doctor.runtime()
    answer = {"op": "hello", "version": PROTOCOL_VERSION, "polyarch": __version__,
              "native": [str(machine)], "emulated": emulated,
              "runtime": runtime.detail + ("" if runtime.level == "ok" else f" ({runtime.level})"),
              "free": shutil.disk_usage(_existing(root)).free}  # fmt: skip
    send(out, answer)
    if hello.get("version") != PROTOCOL_VERSION:
        return 2
    workspace = Workspace(root)
    files = ContentStore(root / "nodes" / "files")
    # Not in the workspace's scratch (a build clears that when it starts); a worker killed
    # earlier left its own, cleared here.
    contexts = root / "nodes" / "contexts"
    contexts.mkdir(parents=True, exist_ok=True)
    for old in contexts.iterdir():
        pid = old.name.split("-")[1] if old.name.count("-") >= 2 else ""
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(dir=contexts, prefix=f"ctx-{os.getpid()}-"))
    try:
        with Session(RegistryOptions.from_environment()) as session:
            while True:
                message = receive(inp, "the client")
                op = message["op"]
                if op == "bye":
                    return 0
                if op == "context":
                    _context(inp, out, files, message, scratch)
                elif op == "layout":  # a base image or a stage's output, as an OCI layout
                    index = int(message["index"])
                    into = {"stage": "stages", "named": "named", "cache": "caches"}.get(
                        str(message.get("kind")), "layouts")  # fmt: skip
                    _context(inp, out, files, message, scratch, f"{into}/{index}")
                elif op == "reach":
                    unreachable = {host: why for host in message["registries"]
                                   if (why := session.client.unreachable(str(host)))}  # fmt: skip
                    send(out, {"op": "reach", "unreachable": unreachable})
                elif op == "build":
                    writing = threading.Lock()
                    with node_session(inp, out, writing) as calls:
                        # Tokens for registries it has no credentials for: from the client.
                        session.client.token_provider = calls.token
                        try:
                            last = _build(message, scratch, root, session, calls)
                        finally:
                            session.client.token_provider = None
                        calls.finish(last)
                elif op == "get":
                    digest = Digest.parse(str(message["digest"]))
                    blobs = workspace.layout.blobs
                    if not blobs.has(digest):
                        send(out, {"op": "error", "message": f"no blob {digest} on this node"})
                        continue
                    with blobs.open(digest) as f:
                        send_file(out, {"op": "blob", "digest": str(digest)}, f,
                                  blobs.size(digest))  # fmt: skip
                else:
                    send(out, {"op": "error", "message": f"unknown op {op!r}"})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _context(
    inp: BinaryIO,
    out: BinaryIO,
    files: ContentStore,
    message: dict[str, Any],
    scratch: Path,
    into: str = "context",
) -> None:
    entries: list[dict[str, Any]] = message["entries"]
    need = sorted({e["digest"] for e in entries if e["type"] == "file"
                   and not files.has(Digest.parse(e["digest"]))})  # fmt: skip
    send(out, {"op": "need", "digests": need})
    for _ in need:
        blob = receive(inp, "the client")
        digest = Digest.parse(str(blob["digest"]))
        files.ingest(payload_chunks(inp, int(blob["size"]), "the client"), digest,
                     int(blob["size"]))  # fmt: skip
    context = scratch / into
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    inside = context.resolve()
    for entry in entries:
        rel = str(entry["path"])
        if rel.startswith("/") or ".." in rel.split("/"):
            raise BuildError(f"context path {rel!r} leaves the context")
        target = context / rel
        # Never through a symlink the listing made earlier: everything lands inside.
        if not target.parent.resolve().is_relative_to(inside) or target.is_symlink():
            raise BuildError(f"context path {rel!r} goes through a symlink")
        if entry["type"] == "dir":
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, int(entry["mode"]) & 0o7777)
        elif entry["type"] == "symlink":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(str(entry["target"]))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files.path(Digest.parse(entry["digest"])), target)
            os.chmod(target, int(entry["mode"]) & 0o7777)
            os.utime(target, ns=(int(entry["mtime"]), int(entry["mtime"])))
    send(out, {"op": "context-ready", "received": len(need)})


def _named_contexts(named: object, scratch: Path) -> dict[str, str]:
    """The client's `--build-context`s as this node takes them: what it sent (`named/INDEX`,
    a directory or an OCI layout with its tag or digest), or a value as it is (an image, a
    git repository)."""
    if not isinstance(named, dict):
        raise BuildError("the client sent named contexts that are not a mapping")
    out: dict[str, str] = {}
    for name, entry in named.items():
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or kind not in ("dir", "layout", "as-is"):
            raise BuildError(f"the client sent a named context polyarch cannot read: {name!r}")
        if kind == "as-is":
            out[name] = str(entry["value"])
            continue
        where = scratch / "named" / str(int(entry["index"]))
        suffix = str(entry.get("suffix", ""))
        if not re.fullmatch(r"(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?", suffix):
            raise BuildError(f"the client sent named context {name!r} with {suffix!r}")
        out[name] = str(where) if kind == "dir" else f"oci-layout://{where}{suffix}"
    return out


def _cache_from(entries: object, scratch: Path) -> tuple[str, ...]:
    """The client's `--cache-from`s as this node takes them: a local cache it sent
    (`caches/INDEX`), or a registry cache as it is (imported from here, lazily)."""
    if not isinstance(entries, list):
        raise BuildError("the client sent caches that are not a list")
    out = []
    for entry in entries:
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind == "as-is":
            out.append(str(entry["spec"]))
        elif kind == "local":
            where = scratch / "caches" / str(int(entry["index"]))
            out.append(",".join([*map(str, entry.get("rest", ())), f"src={where}"]))
        else:
            raise BuildError(f"the client sent a cache polyarch cannot read: {entry!r}")
    return tuple(out)


def _stage_name(name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9._-]{0,127}", name):
        raise BuildError(f"the client sent a stage named {name!r}, which no stage can be")
    return name


def _build(
    message: dict[str, Any],
    scratch: Path,
    root: Path,
    session: Session,
    calls: NodeSession,
) -> dict[str, Any]:
    """One platform's build (or warm-up); returns the message that ends it (its result, or
    the error), for the session to send once its calls are closed."""
    from polyarch.api import BuildOptions, build_image, warm_image  # noqa: PLC0415
    from polyarch.platform import Platform  # noqa: PLC0415

    context = scratch / "context"
    if message.get("dockerfile_text") is not None:  # a Dockerfile from outside the context
        dockerfile = scratch / "dockerfile" / "Dockerfile"
        dockerfile.parent.mkdir(exist_ok=True)
        dockerfile.write_text(str(message["dockerfile_text"]), encoding="utf-8")
    else:
        dockerfile = context / str(message["dockerfile"])
        if ".." in str(message["dockerfile"]).split("/"):
            return {"op": "error", "message": "the Dockerfile path leaves the context"}

    def progress(event: Event) -> None:
        with calls.writing:
            send(calls.out, {"op": "event", **event.to_json()})

    try:
        # Base images it cannot pull, and build-once stages the client built (they replace
        # those stages here), sent as layouts: named contexts.
        layouts, stages = scratch / "layouts", scratch / "stages"
        contexts = {str(ref): f"oci-layout://{layouts / str(int(index))}"
                    for ref, index in dict(message.get("base_layouts", {})).items()}  # fmt: skip
        for name, index in dict(message.get("stage_layouts", {})).items():
            contexts[_stage_name(name)] = f"oci-layout://{stages / str(int(index))}:stage"
        # A warm-up: these stages are still being built by the client; run what does not
        # wait for them.
        pending = frozenset(map(_stage_name, message.get("pending", ())))
        for name in pending:
            contexts[name] = f"oci-layout://{scratch / 'pending' / name}:stage"
        contexts = {**_named_contexts(message.get("named_contexts", {}), scratch), **contexts}
        options = BuildOptions(
            context=context,
            dockerfile=dockerfile,
            platforms=(Platform.parse(str(message["platform"])),),
            build_args=dict(message.get("build_args", {})),
            target=message.get("target"),
            labels=dict(message.get("labels", {})),
            no_cache=bool(message.get("no_cache")),
            root=root,
            jobs=int(message.get("jobs", 1)),
            build_once=message.get("build_once", "auto"),
            ca_certs=HOST_CA_BUNDLE if message.get("ca_certs") else None,
            allow=frozenset(message.get("allow", ())),
            annotations=tuple(message.get("annotations", ())),
            step_timeout=message.get("step_timeout"),
            add_hosts=tuple(message.get("add_hosts", ())),
            network=str(message.get("network", "default")),
            ulimits=tuple(message.get("ulimits", ())),
            shm_size=int(message.get("shm_size", 0)),
            no_cache_filter=tuple(message.get("no_cache_filter", ())),
            emulator_install=bool(message.get("emulator_install", True)),
            explain_as=str(message.get("explain_as", "")),
            builder=DEFAULT,  # a node builds itself, never through its own builders' nodes
            contexts=contexts,
            cache_from=_cache_from(message.get("cache_from", ()), scratch),
            secret_sources=calls.secrets(message.get("secrets", ())),
            ssh_sources=calls.agents(message.get("ssh", ())),
            # --push-from-nodes: pushed from here by digest, with this machine's credentials.
            outputs=(RegistryOutput(tuple(map(str, message["push"])), push_by_digest=True),)
            if message.get("push") else (),
        )  # fmt: skip
        if pending:
            ran = warm_image(session, options, pending, progress=progress)
            return {"op": "warmed", "steps_run": ran}
        report = build_image(session, options, progress=progress)
    except BuildError as exc:
        line = exc.location.rpartition(":")[2]
        return {"op": "error", "message": exc.message, "stage": exc.stage,
                "platform": exc.platform, "kind": exc.kind,
                "line": int(line) if line.isdigit() else None}  # fmt: skip
    except DockerfileError as exc:
        return {"op": "error", "message": exc.message, "line": exc.line}
    except PolyarchError as exc:
        return {"op": "error", "message": str(exc)}
    result = report.result
    # What the build took from the main context: the client checks it sent all of that.
    taken = sorted({path for vertex in (result.graph.vertices.values() if result.graph else ())
                    if isinstance(vertex.op, ContextSource) and vertex.op.name == "context"
                    for path in vertex.op.includes})  # fmt: skip
    answer: dict[str, Any] = {
        "op": "result", "descriptor": result.descriptor.to_json(),
        "steps_run": result.steps_run, "steps_cached": result.steps_cached,
        "seconds": result.seconds, "context_paths": taken,
    }  # fmt: skip
    mode = message.get("cache_export")
    if mode is not None:  # --cache-to: the client exports what every node made, once
        if mode not in ("min", "max"):
            return {"op": "error", "message": f"cache export mode {mode!r} is not min or max"}
        keys = result.cache_keys if mode == "max" else result.image_keys
        answer["cache_records"] = _cache_records(root, keys)
    return answer


def _cache_records(root: Path, keys: Iterable[str]) -> list[dict[str, Any]]:
    """The step cache's entries of `keys`, as an export writes them, each with whether this
    node holds its layer (one taken lazily from an imported cache is not here; the export
    keeps it when its store has the layer)."""
    from polyarch.remotecache.exchange import records_for  # noqa: PLC0415
    from polyarch.solver.cache import SqliteCache  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    workspace = Workspace(root)
    cache = SqliteCache(workspace.cache_db)
    try:
        records = records_for(keys, cache.entries(), time.time())
    finally:
        cache.close()
    blobs = workspace.layout.blobs
    return [{**r.to_json(), "held": r.layer is None or blobs.has(r.layer.digest, r.layer.size)}
            for r in records]  # fmt: skip


def _existing(path: Path) -> Path:
    """The path, or its nearest existing ancestor (a new user's data directory is made by
    the first build, not by a look at the free space)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
