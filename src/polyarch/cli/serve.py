"""The node side: `polyarch worker`, started over SSH for one build, serving the protocol on
its stdin and stdout (anything else the process would print goes to stderr).

It keeps context files by digest under its workspace (`ROOT/nodes/files`), so a file sent once
is never sent again, and asks for the context's files as its steps read them (the session,
`nodes/session.py`); builds one platform into its own store with its own step cache (a rebuild
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
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from polyarch import __version__
from polyarch.attest.spec import AttestSpec
from polyarch.digest import Digest
from polyarch.errors import BuildError, DockerfileError, PolyarchError
from polyarch.export.outputs import RegistryOutput
from polyarch.nodes.builders import DEFAULT
from polyarch.nodes.protocol import (
    PROTOCOL_VERSION,
    NodeError,
    payload_chunks,
    receive,
    send,
    send_file,
)
from polyarch.nodes.session import NodeSession, node_session
from polyarch.nodes.trees import NodeContext, needed, written
from polyarch.nodes.wire import (
    Answer,
    BlobHead,
    BuildAsk,
    BuildDone,
    CacheSource,
    Failure,
    Get,
    HeldRecord,
    HelloAnswer,
    NamedEntry,
    Need,
    Reach,
    Ready,
    Tree,
    Unreachable,
    Warmed,
)
from polyarch.progress import Event
from polyarch.store.blobs import ContentStore

if TYPE_CHECKING:
    from polyarch.api import BuildOptions, Session

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
    """The node's end of one connection: hello, then the client's requests until `bye`."""
    from polyarch.api import RegistryOptions, Session  # noqa: PLC0415

    # Interrupted as a local build is, even when started with SIGINT ignored (in the
    # background of a shell): see NodeSession.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hello = receive(inp, "the client")
    if hello.get("op") != "hello":
        send(out, Failure("expected hello", "protocol").to_json())
        return 2
    send(out, _hello(root).to_json())
    if hello.get("version") != PROTOCOL_VERSION:
        return 2
    scratch = _scratch(root)
    try:
        with Session(RegistryOptions.from_environment()) as session:
            node = _Node(inp, out, root, scratch, session)
            while (message := receive(inp, "the client"))["op"] != "bye":
                node.answer(message)
            return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _hello(root: Path) -> HelloAnswer:
    """What this node is: its platforms (native, and emulated through binfmt_misc), runtime
    and free space."""
    from polyarch import doctor  # noqa: PLC0415
    from polyarch.api import machine_platform  # noqa: PLC0415
    from polyarch.runtime import binfmt  # noqa: PLC0415

    machine = machine_platform()
    emulated = [str(p) for p in binfmt.registered(machine)]
    runtime = doctor.runtime()
    return HelloAnswer(
        PROTOCOL_VERSION, __version__, (str(machine),), tuple(emulated),
        runtime.detail + ("" if runtime.level == "ok" else f" ({runtime.level})"),
        shutil.disk_usage(_existing(root)).free,
    )  # fmt: skip


def _scratch(root: Path) -> Path:
    """This worker's directory for what it is sent: not in the workspace's scratch (a build
    clears that when it starts); one a worker killed earlier left is cleared here."""
    contexts = root / "nodes" / "contexts"
    contexts.mkdir(parents=True, exist_ok=True)
    for old in contexts.iterdir():
        pid = old.name.split("-")[1] if old.name.count("-") >= 2 else ""
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=contexts, prefix=f"ctx-{os.getpid()}-"))


class _Node:
    """The requests of one connection, each answered in turn."""

    def __init__(
        self, inp: BinaryIO, out: BinaryIO, root: Path, scratch: Path, session: Session
    ) -> None:
        from polyarch.store.workspace import Workspace  # noqa: PLC0415

        self.inp, self.out, self.root, self.scratch, self.session = inp, out, root, scratch, session
        self.workspace = Workspace(root)
        self.files = ContentStore(root / "nodes" / "files")
        # The main context: the Dockerfile sent first, the rest as the build's steps ask;
        # and the `--build-context` directories, by the index the client gives them.
        self.context = NodeContext(self.files, scratch / "context")
        self.named: dict[int, NodeContext] = {}

    def answer(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op in ("context", "layout"):  # the context's start, or a tree kept by index
            tree = Tree.from_json(message, "the client")
            received = _tree(self.inp, self.out, self.files, tree)
            if tree.kind == "context":
                self.context.fresh(tree.entries)
            else:
                written(tree.entries, self.files, self.scratch / tree.place)
            send(self.out, Ready(received).to_json())
        elif op == "reach":
            hosts = Reach.from_json(message, "the client's reach request").registries
            client = self.session.client
            unreachable = {host: why for host in hosts if (why := client.unreachable(host))}
            send(self.out, Unreachable(unreachable).to_json())
        elif op == "build":
            self._build(message)
        elif op == "get":
            self._blob(Get.from_json(message, "the client").digest)
        else:
            send(self.out, Failure(f"unknown op {op!r:.40}", "protocol").to_json())

    def _build(self, message: dict[str, Any]) -> None:
        contexts = {"context": self.context, **self._named_dirs(message)}
        with node_session(self.inp, self.out, threading.Lock(), contexts) as calls:
            # Tokens for registries it has no credentials for: from the client.
            self.session.client.token_provider = calls.token
            try:
                last = _build(message, self.scratch, self.root, self.session, calls)
            finally:
                self.session.client.token_provider = None
            calls.finish(last.to_json())

    def _named_dirs(self, message: dict[str, Any]) -> dict[str, NodeContext]:
        """The build's `--build-context` directories, read through the session (each kept
        at `named/INDEX` for the connection, so a selection is asked for once)."""
        try:
            named = BuildAsk.from_json(message).named_contexts
        except NodeError:
            return {}  # the build says what is wrong with its request
        out: dict[str, NodeContext] = {}
        for name, entry in named.items():
            if entry.kind != "dir":
                continue
            if entry.index not in self.named:
                directory = self.scratch / "named" / str(entry.index)
                directory.mkdir(parents=True, exist_ok=True)
                self.named[entry.index] = NodeContext(self.files, directory)
            out[name] = self.named[entry.index]
        return out

    def _blob(self, digest: Digest) -> None:
        blobs = self.workspace.layout.blobs
        if not blobs.has(digest):
            send(self.out, Failure(f"no blob {digest} on this node").to_json())
            return
        with blobs.open(digest) as f:
            size = blobs.size(digest)
            send_file(self.out, BlobHead(digest, size).to_json(), f, size)


def _tree(inp: BinaryIO, out: BinaryIO, files: ContentStore, tree: Tree) -> int:
    """A tree sent by content: the files this node lacks asked for and kept by digest;
    returns how many it was sent."""
    need = needed(tree.entries, files)
    send(out, Need(need).to_json())
    asked = set(need)
    for _ in need:
        blob = BlobHead.from_json(receive(inp, "the client"), "the client")
        if str(blob.digest) not in asked:
            raise NodeError(f"the client sent {blob.digest}, which was not asked for")
        files.ingest(payload_chunks(inp, blob.size, "the client"), blob.digest, blob.size)
    return len(need)


def _named_contexts(named: Mapping[str, NamedEntry], scratch: Path) -> dict[str, str]:
    """The client's `--build-context`s as this node takes them: a directory read through the
    session or an OCI layout it sent (`named/INDEX`, with its tag or digest), or a value as
    it is (an image, a git repository)."""
    out: dict[str, str] = {}
    for name, entry in named.items():
        if entry.kind == "as-is":
            out[name] = entry.value
            continue
        where = scratch / "named" / str(entry.index)
        if not re.fullmatch(r"(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?", entry.suffix):
            raise NodeError(f"the client sent named context {name!r} with {entry.suffix!r}")
        out[name] = str(where) if entry.kind == "dir" else f"oci-layout://{where}{entry.suffix}"
    return out


def _cache_from(entries: Iterable[CacheSource], scratch: Path) -> tuple[str, ...]:
    """The client's `--cache-from`s as this node takes them: a local cache it sent
    (`caches/INDEX`), or a registry cache as it is (imported from here, lazily)."""
    return tuple(entry.spec if entry.index is None else
                 ",".join([*entry.rest, f"src={scratch / 'caches' / str(entry.index)}"])
                 for entry in entries)  # fmt: skip


def _stage_name(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9._-]{0,127}", name):
        raise NodeError(f"the client sent a stage named {name!r}, which no stage can be")
    return name


def _build(
    message: dict[str, Any],
    scratch: Path,
    root: Path,
    session: Session,
    calls: NodeSession,
) -> Answer:
    """One platform's build (or warm-up); returns the message that ends it (its result, or
    the failure), for the session to send once its calls are closed."""
    try:
        ask = BuildAsk.from_json(message)
        options, pending = _options(ask, scratch, root, calls)
    except NodeError as exc:
        return Failure(str(exc), "protocol")

    def progress(event: Event) -> None:
        with calls.writing:
            send(calls.out, {"op": "event", **event.to_json()})

    from polyarch.api import build_image, warm_image  # noqa: PLC0415

    try:
        if pending:
            return Warmed(warm_image(session, options, pending, progress=progress))
        report = build_image(session, options, progress=progress)
    except BuildError as exc:
        line = exc.location.rpartition(":")[2]
        return Failure(exc.message, "missing-source" if exc.kind == "missing-source" else "step",
                       exc.stage, exc.platform, int(line) if line.isdigit() else None)  # fmt: skip
    except DockerfileError as exc:
        return Failure(exc.message, "dockerfile", line=exc.line)
    except PolyarchError as exc:
        return Failure(str(exc))
    result = report.result
    records: tuple[HeldRecord, ...] = ()
    if ask.cache_export is not None:  # --cache-to: the client exports what every node made
        keys = result.cache_keys if ask.cache_export == "max" else result.image_keys
        records = _cache_records(root, keys)
    return BuildDone(result.descriptor, result.steps_run, result.steps_cached, result.seconds,
                     records, next(iter(result.facts.values()), None))  # fmt: skip


def _options(
    ask: BuildAsk, scratch: Path, root: Path, calls: NodeSession
) -> tuple[BuildOptions, frozenset[str]]:
    """The build's options here (what the client sent, by index, as named contexts; secrets
    and agents through the session), and the stages a warm-up does not wait for."""
    from polyarch.api import BuildOptions  # noqa: PLC0415
    from polyarch.platform import Platform  # noqa: PLC0415

    context = scratch / "context"
    if ask.dockerfile_text is not None:  # a Dockerfile from outside the context
        dockerfile = scratch / "dockerfile" / "Dockerfile"
        dockerfile.parent.mkdir(exist_ok=True)
        dockerfile.write_text(ask.dockerfile_text, encoding="utf-8")
    else:
        assert ask.dockerfile is not None
        if ".." in ask.dockerfile.split("/") or ask.dockerfile.startswith("/"):
            raise NodeError("the Dockerfile path leaves the context")
        dockerfile = context / ask.dockerfile
    # Base images it cannot pull, and build-once stages the client built (they replace
    # those stages here), sent as layouts: named contexts.
    layouts, stages = scratch / "layouts", scratch / "stages"
    contexts = {ref: f"oci-layout://{layouts / str(index)}"
                for ref, index in ask.base_layouts.items()}  # fmt: skip
    for name, index in ask.stage_layouts.items():
        contexts[_stage_name(name)] = f"oci-layout://{stages / str(index)}:stage"
    # A warm-up: these stages are still being built by the client; run what does not wait
    # for them.
    pending = frozenset(map(_stage_name, ask.pending))
    for name in pending:
        contexts[name] = f"oci-layout://{scratch / 'pending' / name}:stage"
    try:
        platform = Platform.parse(ask.platform)
    except PolyarchError as exc:
        raise NodeError(f"the client asked for platform {ask.platform!r}: {exc}") from None
    options = BuildOptions(
        context=context, dockerfile=dockerfile, platforms=(platform,),
        build_args=dict(ask.build_args), target=ask.target, labels=dict(ask.labels),
        no_cache=ask.no_cache, root=root, jobs=ask.jobs, build_once=ask.build_once,
        ca_certs=HOST_CA_BUNDLE if ask.ca_certs else None, allow=frozenset(ask.allow),
        annotations=ask.annotations, step_timeout=ask.step_timeout, add_hosts=ask.add_hosts,
        network=ask.network, ulimits=ask.ulimits, shm_size=ask.shm_size,
        no_cache_filter=ask.no_cache_filter, emulator_install=ask.emulator_install,
        explain_as=ask.explain_as,
        builder=DEFAULT,  # a node builds itself, never through its own builders' nodes
        contexts={**_named_contexts(ask.named_contexts, scratch), **contexts},
        cache_from=_cache_from(ask.cache_from, scratch),
        secret_sources=calls.secrets(ask.secrets), ssh_sources=calls.agents(ask.ssh),
        context_fetch=calls.context,
        # --push-from-nodes: pushed from here by digest, with this machine's credentials.
        outputs=(RegistryOutput(ask.push, push_by_digest=True),) if ask.push else (),
        # The client makes the attestations (from the facts a result carries): a node's
        # platform is one image, never an index of it and its provenance.
        attest=AttestSpec(provenance_said=True),
    )  # fmt: skip
    return options, pending


def _cache_records(root: Path, keys: Iterable[str]) -> tuple[HeldRecord, ...]:
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
    return tuple(HeldRecord(r, r.layer is None or blobs.has(r.layer.digest, r.layer.size))
                 for r in records)  # fmt: skip


def _existing(path: Path) -> Path:
    """The path, or its nearest existing ancestor (a new user's data directory is made by
    the first build, not by a look at the free space)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
