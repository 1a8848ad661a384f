"""The local worker: runs a build's steps on this machine.

Every filesystem step is the same motion: mount the input's layers (overlayfs lower
directories, one snapshot per layer) with a fresh upper directory, act on the merged view
(run a process with the OCI runtime, copy files, make a directory), unmount, and turn the
upper directory into a layer (a deterministic tar, gzip'd in one pass into the store). The
upper directory then becomes that layer's snapshot, so nothing is unpacked twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from polyarch import cpu
from polyarch.digest import Digest
from polyarch.errors import PolyarchError, StepError
from polyarch.graph.model import Vertex
from polyarch.graph.ops import (
    ContextSource,
    Copy,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    Mkdir,
    Mkfile,
    Scratch,
)
from polyarch.layers import LayerSink, Root, write_layer
from polyarch.oci.config import ImageConfig
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Manifest, parse_document
from polyarch.patterns import IgnoreMatcher, read_patterns_list
from polyarch.platform import Platform
from polyarch.progress import Event, Progress
from polyarch.runtime import Executor
from polyarch.runtime.seccomp import load_profile
from polyarch.store.workspace import Workspace
from polyarch.worker.base import ContextFetch, Job, LayerRef, Output, Result, WorkerPlatforms
from polyarch.worker.local.context import ContextHasher
from polyarch.worker.local.filecopy import (
    CopyError,
    CopyOptions,
    MissingSourceError,
    copy_sources,
    ensure_dirs,
    resolve_owner,
    resolve_user,
    select_sources,
    write_file,
)
from polyarch.worker.local.git import check_commit, checkout, git_env, resolve_commit
from polyarch.worker.local.mounts import Agents, CacheMounts, SecretSource
from polyarch.worker.local.native import find_native
from polyarch.worker.local.run import RunSettings, run_exec
from polyarch.worker.local.snapshots import SnapshotStore, stacked
from polyarch.worker.local.sparse import Wanted, extract_sources


@dataclass(frozen=True, slots=True)
class BuildSession:
    """What a build brings to the worker besides the graph: where its contexts are, and the
    settings of its RUN steps."""

    contexts: Mapping[str, Path] = field(default_factory=dict)
    run: RunSettings = field(default_factory=RunSettings)
    source_date_epoch: int | None = None
    secrets: Mapping[str, SecretSource] = field(default_factory=dict)
    agents: Agents = field(default_factory=Agents)
    # Called with what a step selects from a build context before it is read (a node's
    # build: its client sends those files then, BuildKit's filesync); None: all are there.
    fetch_context: ContextFetch | None = None


class RemoteLayers(Protocol):
    """Layers held elsewhere (an imported cache), fetched into the store when needed."""

    def has(self, digest: Digest) -> bool: ...

    def fetch(self, digest: Digest) -> None: ...

    def note(self, digest: Digest, size: int, media_type: str, source: str) -> bool:
        """Remember that a layer can be fetched from `source` (a cache an earlier build
        imported); False when it cannot."""


class LocalWorker:
    def __init__(
        self,
        workspace: Workspace,
        session: BuildSession,
        machine: Platform,
        *,
        executor: Executor | None = None,
        on_note: Callable[[str], None] | None = None,
        remote: RemoteLayers | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.workspace = workspace
        self.remote = remote  # layers an imported cache can fetch
        self.session = session
        self.machine = machine
        self.layout = workspace.layout
        self.blobs = self.layout.blobs
        self.snapshots = SnapshotStore(workspace.snapshots, self.blobs)
        self._executor = executor
        self.work = workspace.tmp
        self.snapshotter = os.environ.get("POLYARCH_SNAPSHOTTER") or (
            "overlay" if _overlay_listed() else "copy"
        )
        self._lock = threading.Lock()
        self._on_note = on_note
        self._progress = progress  # unpacking a base's layers is told as rows of its own
        self._matchers: dict[tuple[str, ...], IgnoreMatcher | None] = {}
        self.contexts = ContextHasher(workspace.file_digests)
        self._seccomp: dict[str, Any] | None = None
        self.cache_mounts = CacheMounts(workspace.cache_mounts)
        self._git: dict[str, tuple[GitSource, str]] = {}  # context name -> (source, commit)
        self._git_trees: dict[str, Path] = {}
        self._git_lock = threading.Lock()
        self._git_work: Path | None = None

    def close(self) -> None:
        """Remove what this build fetched (git checkouts)."""
        if self._git_work is not None:
            shutil.rmtree(self._git_work, ignore_errors=True)
            self._git_work = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(self.workspace.runtime)
        return self._executor

    def seccomp_profile(self) -> dict[str, Any]:
        """Docker's default seccomp profile (loaded once; an error when there is none)."""
        with self._lock:
            if self._seccomp is None:
                self._seccomp = load_profile()
            return self._seccomp

    def platforms(self) -> WorkerPlatforms:
        from polyarch.runtime import binfmt  # noqa: PLC0415

        emulated = tuple(p for p in binfmt.registered(self.machine) if p != self.machine)
        return WorkerPlatforms((self.machine,), emulated)

    # sources -------------------------------------------------------------------------------

    def resolve(self, vertex: Vertex, inputs: Sequence[Result]) -> Result:
        op = vertex.op
        if isinstance(op, Scratch):
            return Result(vertex.key)
        if isinstance(op, ImageSource):
            return self._image(vertex, op)
        if isinstance(op, ContextSource):
            if self.session.fetch_context is not None:
                self.session.fetch_context(op.name, op.includes)
            root = self._context_root(op)
            matcher = self._matcher(op.excludes)
            try:
                with Root(root) as confined:
                    selected = select_sources(confined, list(op.includes), matcher)
                    digest, files = self.contexts.digest(confined, selected, matcher)
            except CopyError as exc:
                raise StepError(str(exc), kind=_kind(exc)) from None
            except OSError as exc:
                raise StepError(f"build context {op.name!r} ({root}): {exc.strerror}") from None
            return Result("context:" + digest, context=op, files=files)
        if isinstance(op, GitSource):
            return self._git_source(op)
        raise StepError(f"{type(op).__name__} sources are not supported by this worker")

    def _git_env(self) -> dict[str, str]:
        return git_env(self.session.agents.socket("default"))

    def _git_source(self, op: GitSource) -> Result:
        """A git source is known by the commit its ref names now (asked on every build); its
        tree is fetched only when a step that is not cached reads it."""
        where = f"{op.remote}#{op.ref}" if op.ref else op.remote
        commit = resolve_commit(op.remote, op.ref, self._git_env())
        identity = json.dumps([op.remote, commit or op.ref, op.subdir, op.keep_git_dir,
                               op.submodules])  # fmt: skip
        name = "git:" + hashlib.sha256(identity.encode()).hexdigest()
        with self._git_lock:
            self._git[name] = (op, commit)
        if not commit:  # a commit prefix: only a fetch tells which commit it is
            self._git_tree(name)
            commit = self._git[name][1]
        check_commit(commit, op.checksum, where)
        key = hashlib.sha256(json.dumps([commit, op.subdir, op.keep_git_dir,
                                         op.submodules]).encode()).hexdigest()  # fmt: skip
        return Result("git:" + key, context=ContextSource(name, ("/",)))

    def _git_tree(self, name: str) -> Path:
        with self._git_lock:
            tree = self._git_trees.get(name)
            if tree is not None:
                return tree
            op, commit = self._git[name]
            if self._git_work is None:
                self._git_work = Path(tempfile.mkdtemp(dir=self.work, prefix="git-"))
            into = self._git_work / name.removeprefix("git:")[:32]
            try:
                actual = checkout(
                    op.remote, op.ref, commit, into, self._git_env(),
                    keep_git_dir=op.keep_git_dir, submodules=op.submodules,
                )  # fmt: skip
            except BaseException:
                shutil.rmtree(into, ignore_errors=True)  # a later try starts afresh
                raise
            self._git[name] = (op, actual)
            tree = into / op.subdir if op.subdir else into
            if not tree.is_dir() or not tree.resolve().is_relative_to(into.resolve()):
                raise StepError(f"{op.remote}: no directory {op.subdir!r} at {actual[:12]}")
            self._git_trees[name] = tree
            return tree

    def _image(self, vertex: Vertex, op: ImageSource) -> Result:
        if not op.digest:
            raise StepError(f"{op.ref} was not resolved before building")
        digest = Digest.parse(op.digest)
        try:
            if self.blobs.size(digest) > MAX_DOCUMENT_SIZE:
                raise StepError(f"{op.ref}: its manifest is over {MAX_DOCUMENT_SIZE} bytes")
            manifest = parse_document(self.blobs.read_bytes(digest), None)
        except PolyarchError as exc:
            raise StepError(f"{op.ref}: its manifest is not in the store: {exc}") from None
        if not isinstance(manifest, Manifest):
            raise StepError(f"{op.ref}: {op.digest} is not an image manifest")
        config = ImageConfig.parse(
            self.blobs.read_bytes(manifest.config.digest, manifest.config.size),
            f"config of {op.ref}",
        )
        if len(config.diff_ids) != len(manifest.layers):
            raise StepError(
                f"{op.ref}: its config lists {len(config.diff_ids)} layers (rootfs.diff_ids), "
                f"its manifest {len(manifest.layers)}"
            )
        layers = tuple(
            LayerRef(layer.digest, layer.size, diff_id, layer.media_type)
            for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True)
        )
        return Result("image:" + op.digest, layers, layers[-1] if layers else None,
                      config.created or "")  # fmt: skip

    def _context_root(self, op: ContextSource) -> Path:
        if op.name.startswith("git:") and op.name in self._git:
            return self._git_tree(op.name)
        root = self.session.contexts.get(op.name)
        if root is None:
            raise StepError(f"no build context named {op.name!r} was given")
        return root

    def _matcher(self, patterns: tuple[str, ...]) -> IgnoreMatcher | None:
        with self._lock:
            if patterns not in self._matchers:
                self._matchers[patterns] = (
                    IgnoreMatcher(read_patterns_list(patterns)) if patterns else None
                )
            return self._matchers[patterns]

    def load(self, layer: LayerRef, source: str = "") -> bool:
        """Whether the layer is here, or can be fetched when needed: from an imported cache,
        or from `source` (the cache an earlier build took the step from)."""
        if self.blobs.has(layer.digest, layer.size):
            return True
        if self.remote is None:
            return False
        if self.remote.has(layer.digest):
            return True
        return self.remote.note(layer.digest, layer.size, layer.media_type, source)

    def ensure(self, layers: Sequence[LayerRef]) -> None:
        """Fetch the layers that an imported cache holds and the store does not (verified;
        a layer that does not match is an `UnusableCacheEntry`)."""
        for layer in layers:
            if not self.blobs.has(layer.digest, layer.size) and self.remote is not None:
                self.remote.fetch(layer.digest)

    # steps ---------------------------------------------------------------------------------

    def execute(self, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
        op = vertex.op
        if isinstance(op, HttpSource):
            return self._download(op, job)
        if not isinstance(op, ExecOp | FileOp):
            raise StepError(f"cannot execute a {type(op).__name__}")
        layers = inputs[0].layers if inputs else ()
        if self.snapshotter == "overlay" and any(not self.snapshots.has(x.diff_id) for x in layers):
            # Unpacking the base's layers is not the step's own time: it shows as waiting.
            job.waiting(True)
            try:
                self.ensure(layers)
                for layer in layers:
                    self._unpack(layer, str(vertex.platform))
            finally:
                job.waiting(False)
        step = Path(tempfile.mkdtemp(dir=self.work, prefix="step-"))
        upper, workdir, merged = step / "upper", step / "work", step / "merged"
        for d in (upper, workdir, merged):
            d.mkdir()
        try:
            with self.mounted(layers, upper, workdir, merged):
                if isinstance(op, ExecOp):
                    run_exec(self, vertex, op, inputs, merged, step, job)
                else:
                    with cpu.measure("copy"):
                        self._file_op(op, inputs, merged)
            return Output(self._commit(upper))
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(step)

    def _unpack(self, layer: LayerRef, platform: str) -> None:
        if (self.snapshots.has(layer.diff_id) or self.snapshots.unpacking(layer.diff_id)
                or self._progress is None):  # fmt: skip
            # (one being unpacked is waited for: its row is there already)
            self.snapshots.ensure(layer.diff_id, layer.digest, layer.media_type)
            return
        description = f"unpack {layer.digest.hex[:12]} ({layer.size / 1e6:.1f} MB)"
        started = time.monotonic()
        self._progress(Event("start", "", description, platform=platform))
        try:
            self.snapshots.ensure(layer.diff_id, layer.digest, layer.media_type)
        except BaseException as exc:
            self._progress(Event("error", "", description, platform=platform, text=str(exc)))
            raise
        self._progress(Event("done", "", description, platform=platform,
                             seconds=time.monotonic() - started))  # fmt: skip

    @contextlib.contextmanager
    def mounted(
        self, layers: Sequence[LayerRef], upper: Path, workdir: Path, merged: Path
    ) -> Iterator[None]:
        """The layers' filesystem at `merged`, changes landing in `upper` (overlay form)."""
        self.ensure(layers)
        with stacked(
            self.snapshots,
            list(layers),
            upper,
            workdir,
            merged,
            overlay=self.snapshotter == "overlay",
            on_fallback=self._use_copies,
        ):
            yield

    def native_code(
        self, layers: Sequence[LayerRef], paths: Sequence[str]
    ) -> tuple[str, str] | None:
        """The first native code among the files `paths` select (as a COPY selects them) in
        the filesystem of `layers`: (its path, why), or None (the build-once check)."""
        with self.view(layers) as root:
            try:
                selected = select_sources(root, list(paths), None)
            except CopyError:
                selected = []  # the step itself will report it
            return find_native(root, selected)

    @contextlib.contextmanager
    def view(self, layers: Sequence[LayerRef]) -> Iterator[Root]:
        """A filesystem to read from (its own scratch upper takes no writes)."""
        step = Path(tempfile.mkdtemp(dir=self.work, prefix="view-"))
        upper, work, view = step / "upper", step / "work", step / "view"
        for d in (upper, work, view):
            d.mkdir()
        try:
            with self.mounted(layers, upper, work, view), Root(view) as root:
                yield root
        finally:
            shutil.rmtree(step, ignore_errors=True)

    @contextlib.contextmanager
    def source_root(
        self, result: Result, sources: Sequence[str] = ()
    ) -> Iterator[tuple[Root, IgnoreMatcher | None]]:
        """What a copy reads from: a context's directory (with its ignore rules) or a
        filesystem's view; for plain `sources` from layers none of which is unpacked yet,
        only what they name (`polyarch.worker.local.sparse`)."""
        if result.context is not None:
            with Root(self._context_root(result.context)) as root:
                yield root, self._matcher(result.context.excludes)
            return
        wanted = Wanted.of(sources) if sources else None
        if wanted is not None and not any(self.snapshots.has(x.diff_id) for x in result.layers):
            self.ensure(result.layers)
            scratch = Path(tempfile.mkdtemp(dir=self.work, prefix="sparse-"))
            try:
                try:
                    with cpu.measure("unpack"):
                        sparse = extract_sources(result.layers, self.blobs, wanted, scratch)
                except PolyarchError:
                    sparse = None  # unpacked as usual below, which says what is wrong
                if sparse is not None:
                    with sparse as root:
                        yield root, None
                    return
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        with self.view(result.layers) as root:
            yield root, None

    def _use_copies(self, why: str) -> None:
        with self._lock:
            if self.snapshotter == "copy":
                return
            self.snapshotter = "copy"
        if self._on_note is not None:
            self._on_note(f"overlayfs unavailable ({why}); using copies: slower, same results")

    def _commit(self, upper: Path) -> LayerRef | None:
        if not any(upper.iterdir()):
            return None
        sink = LayerSink(self.blobs)
        try:
            with cpu.measure("commit"):
                write_layer(upper, sink, source_date_epoch=self.session.source_date_epoch)
                blob = sink.finish()
        except BaseException:
            sink.abort()
            raise
        self.snapshots.adopt(upper, blob.diff_id)
        return LayerRef(blob.digest, blob.size, blob.diff_id, blob.media_type)

    # file ops ------------------------------------------------------------------------------

    def _file_op(self, op: FileOp, inputs: Sequence[Result], merged: Path) -> None:
        with Root(merged) as dest:
            for action in op.actions:
                try:
                    if isinstance(action, Mkdir):
                        owner = resolve_user(dest, action.owner)[:2] if action.owner else None
                        ensure_dirs(dest, action.path, action.mode, owner)
                    elif isinstance(action, Mkfile):
                        owner = resolve_owner(dest, action.owner) if action.owner else (0, 0)
                        write_file(dest, action.path, action.data.encode("utf-8"), action.mode,
                                   owner)  # fmt: skip
                    else:
                        self._copy(action, inputs, dest)
                except CopyError as exc:
                    raise StepError(str(exc), kind=_kind(exc)) from None

    def _copy(self, action: Copy, inputs: Sequence[Result], dest: Root) -> None:
        options = copy_options(action, resolve_owner(dest, action.chown) if action.chown else None)
        with self.source_root(inputs[action.input], action.sources) as (source, ignore):
            selected = select_sources(source, list(action.sources), ignore)
            copy_sources(source, selected, dest, action.dest, options, list(action.excludes),
                         ignore, action.sources)  # fmt: skip

    # downloads -----------------------------------------------------------------------------

    def _download(self, op: HttpSource, job: Job) -> Output:
        """ADD <url>: fetched with the host's proxy settings and CA store, checked against the
        checksum when one is given, a file of mode 0600 named after the URL."""
        step = Path(tempfile.mkdtemp(dir=self.work, prefix="get-"))
        upper = step / "upper"
        upper.mkdir()
        hasher = hashlib.sha256()
        try:
            target = upper / op.filename
            with httpx.Client(follow_redirects=True, timeout=120.0, trust_env=True) as client:
                try:
                    with client.stream("GET", op.url) as resp:
                        if resp.status_code != 200:
                            raise StepError(f"ADD {op.url}: HTTP {resp.status_code}")
                        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                        with os.fdopen(fd, "wb") as out:
                            for chunk in resp.iter_bytes():
                                if job.cancelled.is_set():
                                    raise StepError(f"ADD {op.url}: cancelled")
                                hasher.update(chunk)
                                out.write(chunk)
                except httpx.HTTPError as exc:
                    raise StepError(f"ADD {op.url}: {exc}") from None
            actual = "sha256:" + hasher.hexdigest()
            if op.checksum and op.checksum != actual:
                raise StepError(
                    f"ADD {op.url}: checksum mismatch: expected {op.checksum}, got {actual}"
                )
            return Output(self._commit(upper))
        finally:
            shutil.rmtree(step, ignore_errors=True)


def copy_options(action: Copy, chown: tuple[int, int] | None) -> CopyOptions:
    """How a copy action copies (its chown resolved to ids): every field lands here; `input`,
    `sources`, `dest` and `excludes` are the copy's arguments, and `link` is the graph's (a
    link copy has an empty filesystem as input 0)."""
    return CopyOptions(
        chown=chown,
        chmod=int(action.chmod, 8) if action.chmod else None,
        keep_owner=action.keep_owner,
        parents=action.parents,
        unpack_archives=action.unpack,
    )


def _overlay_listed() -> bool:
    try:
        return "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def _kind(exc: CopyError) -> str:
    return "missing-source" if isinstance(exc, MissingSourceError) else ""
