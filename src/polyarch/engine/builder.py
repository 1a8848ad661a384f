"""Execute a build plan: pull base images, run steps, make layers, cache them, assemble images.

Every filesystem step is the same motion: mount the parent's layers (overlayfs lower
directories, one snapshot per layer) with a fresh upper directory, act on the merged view
(run a process with the OCI runtime, copy files, make a directory), unmount, and turn the
upper directory into a layer (a deterministic tar, gzip'd in one pass into the store). The upper
directory then becomes that layer's snapshot, so nothing is unpacked twice.

A step's cache key is its plan key, the effective keys of its inputs, and for copies from the
build context the digest of the files copied: change one file and only the steps from there on
run again. A cache row is written after its layer is stored and its snapshot in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from polyarch.concurrency import PriorityGate, wait_all
from polyarch.digest import Digest
from polyarch.dockerfile import Dockerfile, IgnoreMatcher, ShellLexer, read_patterns
from polyarch.dockerfile.ignore import ignore_file_for
from polyarch.engine.cache import BuildCache, CachedLayer
from polyarch.engine.filecopy import (
    CopyError,
    CopyOptions,
    content_digest,
    copy_sources,
    resolve_owner,
    resolve_user,
    select_sources,
    write_inline,
)
from polyarch.engine.image import (
    BUILDKIT_COMMENT,
    ImageState,
    LayerRef,
    apply_meta,
    from_base_config,
    image_config_json,
)
from polyarch.engine.native import find_native
from polyarch.engine.snapshots import SnapshotStore, stacked
from polyarch.errors import PolyarchError
from polyarch.layers import LayerSink, Root, write_layer
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.plan import ImageFacts, Op, Plan, PlanRequest, make_plan
from polyarch.plan.planner import PROXY_ARGS
from polyarch.platform import Platform
from polyarch.progress import Event, Progress, silent
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.runtime import (
    DEFAULT_PATH,
    BindMount,
    Executor,
    ProcessSpec,
    find_init,
    unmount,
)
from polyarch.store.layout import OciLayout

_TAIL_LINES = 20


class BuildError(PolyarchError):
    """A step failed: names the instruction's file:line and shows the end of its output."""


@dataclass(frozen=True, slots=True)
class BuildRequest:
    dockerfile: Dockerfile
    context: Path
    dockerfile_path: Path
    platforms: tuple[Platform, ...]
    build_platform: Platform
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    source_date_epoch: int | None = None
    jobs: int = 1
    build_once: str | frozenset[str] = "auto"
    ca_certs: Path | None = None  # a CA bundle on the host for RUN steps to trust


@dataclass(frozen=True, slots=True)
class BuildResult:
    descriptor: Descriptor  # the manifest (one platform) or index (several), in the store
    manifests: Mapping[Platform, Descriptor]
    plan: Plan
    steps_run: int
    steps_cached: int
    cache_keys: frozenset[str] = frozenset()  # every cached step the build used or made


class _NativeOutput(Exception):
    """Not an error: a build-once stage's output holds native code, so the build plans again
    with that stage per platform (raised in every thread of the build to stop it)."""

    def __init__(self, stage: str, platform: Platform, path: str, why: str) -> None:
        super().__init__(f"/{path} is {why}")
        self.stage, self.platform, self.path, self.why = stage, platform, path, why


@dataclass
class _Evaluated:
    state: ImageState
    key: str  # effective key: plan key + inputs' effective keys (+ copied content)


@dataclass
class _Pending:
    """An op some thread is computing; others wait on `ready`."""

    ready: threading.Event = field(default_factory=threading.Event)
    result: _Evaluated | None = None
    error: BaseException | None = None


class Builder:
    def __init__(
        self,
        root: Path,
        registry: RegistryClient,
        *,
        progress: Progress = silent,
        executor: Executor | None = None,
    ) -> None:
        self.root = root
        self.layout = OciLayout(root / "store")
        self.blobs = self.layout.blobs
        self.snapshots = SnapshotStore(root / "snapshots", self.blobs)
        self.cache = BuildCache(root / "cache.db")
        self.registry = registry
        self.progress = progress
        self._executor = executor
        self.work = root / "tmp"
        self.work.mkdir(parents=True, exist_ok=True)
        self.snapshotter = os.environ.get("POLYARCH_SNAPSHOTTER") or (
            "overlay" if _overlay_listed() else "copy"
        )
        self.steps_run = 0
        self.steps_cached = 0

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(self.root / "runtime")
        return self._executor

    # the whole build ---------------------------------------------------------------------

    def build(self, request: BuildRequest) -> BuildResult:
        with self._exclusive():
            return self._build(request)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One build at a time per root; what a killed build left behind is cleared first."""
        fd = os.open(self.root / "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._clear_stale_work()
            yield
        finally:
            os.close(fd)

    def _clear_stale_work(self) -> None:
        for leftover in self.work.iterdir():
            for mount in ("merged", "view"):
                point = leftover / mount
                if point.is_dir() and os.path.ismount(point):
                    with contextlib.suppress(PolyarchError):
                        unmount(str(point))
            shutil.rmtree(leftover, ignore_errors=True)
        for partial in self.snapshots.root.glob(".unpack-*"):
            shutil.rmtree(partial, ignore_errors=True)

    def _build(self, request: BuildRequest) -> BuildResult:
        self.steps_run = self.steps_cached = 0
        self.used_keys: set[str] = set()
        self.gate = PriorityGate(request.jobs)
        self.request = request
        self.created = _timestamp(request.source_date_epoch)
        self.ignore = self._ignore_rules(request)
        self.lexer = ShellLexer(request.dockerfile.escape)
        draft = make_plan(self._plan_request(request, {}))
        self.bases: dict[tuple[str, str], tuple[Manifest, bytes, str]] = {}
        wanted = sorted({
            (op.definition["image"], op.definition["platform"])
            for op in draft.ops.values()
            if op.kind == "source" and op.definition["image"] != "scratch"
        })  # fmt: skip
        with ThreadPoolExecutor(max_workers=4) as pool:  # base images pulled side by side
            resolving = [pool.submit(self._resolve_base, *key) for key in wanted]
            wait_all(resolving)
        facts = {key: f.result() for key, f in zip(wanted, resolving, strict=True)}
        per_platform: set[str] = set()
        self._lock = threading.Lock()
        while True:
            plan = make_plan(self._plan_request(request, facts, frozenset(per_platform)))
            self.plan = plan
            self.evaluated: dict[str, _Evaluated] = {}
            self._pending: dict[str, _Pending] = {}
            self._abort: _NativeOutput | None = None
            self._checked: set[tuple[str, str]] = set()
            # build-once stages chosen by `auto` are checked when a later stage copies from
            # them (forced ones are not second-guessed)
            auto = request.build_once == "auto"
            self._once = {inst.result: inst.stage for inst in plan.stages
                          if inst.mode == "build-once" and auto}  # fmt: skip
            # Every stage instance is a task of its own thread; a stage that needs another
            # waits for it, so independent stages (and platforms) run side by side. RUN steps
            # take one of `jobs` slots, emulated ones first: they are the critical path.
            roots = list(dict.fromkeys([inst.result for inst in plan.stages]
                                       + [plan.results[p] for p in request.platforms]))  # fmt: skip
            try:
                with ThreadPoolExecutor(max_workers=len(roots)) as pool:
                    wait_all([pool.submit(self._evaluate, plan.ops[key]) for key in roots])
            except _NativeOutput as exc:
                self.progress(
                    Event("note", "", f"stage {exc.stage}", exc.stage, str(exc.platform),
                          f"/{exc.path} is {exc.why}: stage {exc.stage} is built per platform")
                )  # fmt: skip
                per_platform.add(exc.stage)  # plan again; finished steps come from the cache
                continue
            break
        manifests: dict[Platform, Descriptor] = {}
        for platform in request.platforms:
            result = self._evaluate(plan.ops[plan.results[platform]])
            manifests[platform] = self._assemble(result.state, platform)
        if len(manifests) == 1:
            top = next(iter(manifests.values()))
        else:
            index = Index.create(list(manifests.values()))
            self.layout.write_document(index.raw)
            top = index.descriptor()
        return BuildResult(
            top, manifests, plan, self.steps_run, self.steps_cached, frozenset(self.used_keys)
        )

    def _plan_request(
        self,
        request: BuildRequest,
        facts: Mapping[tuple[str, str], ImageFacts],
        per_platform: frozenset[str] = frozenset(),
    ) -> PlanRequest:
        return PlanRequest(
            request.dockerfile,
            request.platforms,
            request.build_platform,
            dict(request.build_args),
            request.target,
            dict(facts),
            request.build_once,
            per_platform,
        )

    def _check_once(self, op: Op, source_key: str) -> None:
        """A build-once stage's output, as this step copies it, must hold no native code;
        else the whole plan is redone with that stage per platform."""
        check = (source_key, json.dumps(op.definition["sources"]))
        with self._lock:
            if check in self._checked:
                return
        source = self._evaluate(self.plan.ops[source_key])
        offender = self._native_output(source.state, [op])
        if offender is not None:
            error = _NativeOutput(self._once[source_key], source.state.platform, *offender)
            with self._lock:
                self._abort = self._abort or error
            raise error
        with self._lock:
            self._checked.add(check)

    def _native_output(self, state: ImageState, consumers: Sequence[Op]) -> tuple[str, str] | None:
        if not consumers:
            return None
        with self._view(state) as root:
            for op in consumers:
                paths = [p for p in op.definition["sources"] if not _is_url(p)]
                try:
                    selected = select_sources(root, paths, None)
                except CopyError:
                    continue  # the copy itself will report it
                found = find_native(root, selected)
                if found is not None:
                    return found
        return None

    @contextlib.contextmanager
    def _view(self, state: ImageState) -> Iterator[Root]:
        """A stage's filesystem to read from (its own scratch upper takes no writes)."""
        step = Path(tempfile.mkdtemp(dir=self.work, prefix="view-"))
        upper, work, view = step / "upper", step / "work", step / "view"
        for d in (upper, work, view):
            d.mkdir()
        try:
            with self._mounted(state, upper, work, view), Root(view) as root:
                yield root
        finally:
            shutil.rmtree(step, ignore_errors=True)

    def _ignore_rules(self, request: BuildRequest) -> IgnoreMatcher | None:
        for candidate in ignore_file_for(str(request.dockerfile_path), str(request.context)):
            path = Path(candidate)
            if path.is_file():
                return IgnoreMatcher(read_patterns(path.read_text(encoding="utf-8"), str(path)))
        return None

    # base images -------------------------------------------------------------------------

    def _resolve_base(self, image: str, platform_text: str) -> ImageFacts:
        platform = Platform.parse(platform_text)
        ref = Reference.parse(image)
        description = f"resolve {image} for {platform}"
        started = time.monotonic()
        self.progress(Event("start", "", description, platform=platform_text))
        fetched = self.registry.get_manifest(ref)
        document = fetched.document
        digest = fetched.digest
        if isinstance(document, Index):
            entry = document.image_for(platform)
            if entry is None:
                have = document.platforms_text()
                raise BuildError(f"{image} has no image for {platform} (it has: {have})")
            child = self.registry.get_manifest(ref.with_digest(entry.digest))
            document, digest = child.document, child.digest
        if not isinstance(document, Manifest):
            raise BuildError(f"{image}: the {platform} entry is not an image manifest")
        self.layout.write_document(document.raw)
        for blob in document.blobs():
            if not self.blobs.has(blob.digest, blob.size):
                self.blobs.ingest(self.registry.get_blob(ref, blob), blob.digest, blob.size)
        config_raw = self.blobs.read_bytes(document.config.digest, document.config.size)
        self.bases[(image, platform_text)] = (document, config_raw, str(digest))
        state = from_base_config(config_raw, platform)
        self.progress(
            Event("done", "", description, platform=platform_text,
                  seconds=time.monotonic() - started)
        )  # fmt: skip
        cfg = state.config
        return ImageFacts(
            str(digest),
            tuple(cfg.get("Env") or ()),
            cfg.get("WorkingDir") or "",
            cfg.get("User") or "",
            tuple(cfg.get("Shell") or ()),
            tuple(cfg.get("OnBuild") or ()),
        )

    # evaluation --------------------------------------------------------------------------

    def _evaluate(self, op: Op) -> _Evaluated:
        if self._abort is not None:
            raise self._abort  # a build-once stage turned out native: the plan is redone
        with self._lock:
            done = self.evaluated.get(op.key)
            if done is not None:
                return done
            pending = self._pending.get(op.key)
            owner = pending is None
            if pending is None:
                pending = self._pending[op.key] = _Pending()
        if not owner:
            pending.ready.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.result is not None
            return pending.result
        try:
            result = self._compute(op)
        except BaseException as exc:
            pending.error = exc
            pending.ready.set()
            raise
        with self._lock:
            self.evaluated[op.key] = result
        pending.result = result
        pending.ready.set()
        return result

    def _compute(self, op: Op) -> _Evaluated:
        kind = op.kind
        definition = op.definition
        if kind == "source":
            result = self._source(op)
        elif kind == "meta":
            parent = self._evaluate(self.plan.ops[definition["parent"]])
            state = parent.state.clone()
            # A metadata step takes the time of the step before it: rebuilding from cache
            # then gives the very same config, and digest.
            apply_meta(state, dict(definition), state.latest or self.created)
            result = _Evaluated(state, _chain(op.key, [parent.key]))
        else:
            result = self._filesystem_step(op)
        return result

    def _source(self, op: Op) -> _Evaluated:
        image = op.definition["image"]
        platform = Platform.parse(op.definition["platform"])
        if image == "scratch":
            return _Evaluated(ImageState(platform, cmd_from_base=False), op.key)
        manifest, config_raw, _digest = self.bases[(image, op.definition["platform"])]
        state = from_base_config(config_raw, platform)
        state.config.pop("OnBuild", None)  # the triggers run in this build; not inherited
        state.layers = [
            LayerRef(layer.digest, layer.size, diff_id, layer.media_type)
            for layer, diff_id in zip(manifest.layers, _diff_ids(config_raw), strict=True)
        ]
        return _Evaluated(state, op.key)

    def _filesystem_step(self, op: Op) -> _Evaluated:
        definition = op.definition
        inputs = [self._evaluate(self.plan.ops[k]) for k in op.inputs]
        parent = inputs[0]
        if definition["op"] == "file" and definition.get("from") in self._once:
            self._check_once(op, definition["from"])
        extra = ""
        context_root: Root | None = None
        if definition["op"] == "file" and definition.get("from") == "context":
            context_root = Root(self.request.context)
            try:
                paths = [p for p in definition["sources"] if not _is_url(p)]
                selected = select_sources(context_root, paths, self.ignore) if paths else []
                extra = content_digest(
                    context_root, selected, list(definition["exclude"]), self.ignore
                )
            except CopyError as exc:
                context_root.close()
                raise self._error(op, str(exc)) from None
        key = _chain(op.key, [i.key for i in inputs], extra)
        state = parent.state.clone()
        stage = self._stage_of(op)
        event = Event("start", op.key, op.description, stage, str(op.platform))
        try:
            cached = None if self.request.no_cache else self._cached(key)
            if cached is not None:
                with self._lock:
                    self.steps_cached += 1
                self.progress(Event("cached", op.key, op.description, stage, str(op.platform)))
                self._append(state, cached, op)
                return _Evaluated(state, key)
            self.progress(event)
            started = time.monotonic()
            layer = self._run_step(op, parent.state, inputs, context_root)
            layer = CachedLayer(
                layer.digest, layer.size, layer.diff_id, layer.media_type, self.created
            )
            self.cache.put(key, layer, op.description)
            with self._lock:
                self.used_keys.add(key)
            with self._lock:
                self.steps_run += 1
            self.progress(
                Event("done", op.key, op.description, stage, str(op.platform),
                      seconds=time.monotonic() - started)
            )  # fmt: skip
            self._append(state, layer, op)
            return _Evaluated(state, key)
        finally:
            if context_root is not None:
                context_root.close()

    def _cached(self, key: str) -> CachedLayer | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        if hit.digest is not None:
            if not self.blobs.has(hit.digest, hit.size):
                return None
            assert hit.diff_id is not None
            self.snapshots.ensure(hit.diff_id, hit.digest, hit.media_type)
        with self._lock:
            self.used_keys.add(key)
        return hit

    def _append(self, state: ImageState, layer: CachedLayer, op: Op) -> None:
        created = self.created
        if self.request.source_date_epoch is None and layer.created:
            created = layer.created
        state.latest = max(state.latest, created) if state.latest else created
        entry: dict[str, Any] = {
            "created": created,
            "created_by": _created_by(op),
            "comment": BUILDKIT_COMMENT,
        }
        if layer.digest is None:
            entry["empty_layer"] = True
        else:
            assert layer.diff_id is not None
            state.layers.append(LayerRef(layer.digest, layer.size, layer.diff_id, layer.media_type))
        state.history.append(entry)
        if op.definition.get("action") == "mkdir":
            state.config["WorkingDir"] = op.definition["path"]

    # one filesystem step -----------------------------------------------------------------

    def _run_step(
        self,
        op: Op,
        parent: ImageState,
        inputs: Sequence[_Evaluated],
        context_root: Root | None,
    ) -> CachedLayer:
        step = Path(tempfile.mkdtemp(dir=self.work, prefix="step-"))
        upper, workdir, merged = step / "upper", step / "work", step / "merged"
        for d in (upper, workdir, merged):
            d.mkdir()
        try:
            with self._mounted(parent, upper, workdir, merged):
                definition = op.definition
                if definition["op"] == "exec":
                    self._exec(op, merged, step, parent)
                elif definition.get("action") == "mkdir":
                    with Root(merged) as view:
                        view.open_dir(definition["path"].lstrip("/"), create=True)
                else:
                    self._copy(op, merged, inputs, context_root)
            return self._commit(upper)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(step)

    @contextlib.contextmanager
    def _mounted(
        self, state: ImageState, upper: Path, workdir: Path, merged: Path
    ) -> Iterator[None]:
        """The parent's filesystem at `merged`, changes landing in `upper` (overlay form)."""
        with stacked(
            self.snapshots,
            state.layers,
            upper,
            workdir,
            merged,
            overlay=self.snapshotter == "overlay",
            on_fallback=self._use_copies,
        ):
            yield

    def _use_copies(self, why: str) -> None:
        with self._lock:
            if self.snapshotter == "copy":
                return
            self.snapshotter = "copy"
        self.progress(Event("note", "", "snapshots", text=f"overlayfs unavailable ({why}); "
                            "using copies: slower, same results"))  # fmt: skip

    def _commit(self, upper: Path) -> CachedLayer:
        if not any(upper.iterdir()):
            return CachedLayer(None, 0, None, mt.OCI_LAYER_GZIP)
        sink = LayerSink(self.blobs)
        try:
            write_layer(upper, sink, source_date_epoch=self.request.source_date_epoch)
            blob = sink.finish()
        except BaseException:
            sink.abort()
            raise
        self.snapshots.adopt(upper, blob.diff_id)
        return CachedLayer(blob.digest, blob.size, blob.diff_id, blob.media_type)

    def _exec(self, op: Op, merged: Path, step: Path, parent: ImageState) -> None:
        definition = op.definition
        if definition["mounts"]:
            raise self._error(op, "RUN --mount is not supported yet by polyarch")
        env = dict(definition["env"])
        for name, value in self.request.build_args.items():
            if name in PROXY_ARGS:
                env.setdefault(name, value)
        with Root(merged) as view:
            try:
                uid, gid, groups = resolve_user(view, definition["user"])
            except CopyError as exc:
                raise self._error(op, str(exc)) from None
            workdir = definition["workdir"] or "/"
            fd = view.open_dir(workdir.lstrip("/"), create=True)
            if fd != view.fd:
                os.close(fd)
            created_mounts = [
                name for name in ("etc/resolv.conf", "etc/hosts") if view.lstat(name) is None
            ]
            had_run = view.lstat("run") is not None
        binds = [
            BindMount(f"/{name}", f"/{name}")
            for name in ("etc/resolv.conf", "etc/hosts")
            if Path(f"/{name}").exists()
        ]
        ca = self.request.ca_certs
        if ca is not None:
            # The host's CA bundle, read-only, for this step only: mounted outside any layer,
            # named by the variables the common tools read; never in the config or history.
            binds.append(BindMount(str(ca), CA_PATH))
            for variable in CA_VARIABLES:
                env.setdefault(variable, CA_PATH)
        process = ProcessSpec(
            args=tuple(definition["argv"]),
            env=tuple(f"{k}={v}" for k, v in env.items())
            + (() if "PATH" in env else (DEFAULT_PATH,)),
            cwd=workdir,
            uid=uid,
            gid=gid,
            additional_gids=groups,
            binds=tuple(binds),
            init=find_init() if op.emulated else None,
        )
        tail: list[str] = []
        stage = self._stage_of(op)
        last_output = [time.monotonic()]
        finished = threading.Event()

        def output(line: str) -> None:
            last_output[0] = time.monotonic()
            tail.append(line)
            del tail[:-_TAIL_LINES]
            self.progress(Event("log", op.key, op.description, stage, str(op.platform), line))

        def watch() -> None:
            # A step under emulation can be slow and silent: say it is alive, every minute.
            started = time.monotonic()
            while not finished.wait(15):
                if time.monotonic() - last_output[0] >= SILENCE_NOTE_SECONDS:
                    minutes = (time.monotonic() - started) / 60
                    self.progress(Event(
                        "note", op.key, op.description, stage, str(op.platform),
                        f"still running under emulation (qemu-{op.platform.qemu_name}), "
                        f"{minutes:.0f} min so far",
                    ))  # fmt: skip
                    last_output[0] = time.monotonic()

        watcher = threading.Thread(target=watch, daemon=True) if op.emulated else None
        if watcher is not None:
            watcher.start()
        try:
            with self.gate.slot(priority=1 if op.emulated else 0):
                code = self.executor.run(process, merged, step / "bundle", output)
        finally:
            finished.set()
        with Root(merged) as view:
            for name in created_mounts:  # mount points the runtime made: not the step's work
                st = view.lstat(name)
                if st is not None and st.st_size == 0:
                    view.remove(name)
            if ca is not None:
                view.remove(CA_PATH.lstrip("/").rpartition("/")[0])
                if not had_run and not _listing(view, "run"):
                    view.remove("run")
        if code != 0:
            shown = "\n".join(f"  | {line}" for line in tail) or "  (no output)"
            message = f"{op.description} exited with status {code}:\n{shown}"
            if op.emulated and code in (128 + 4, 128 + 11):
                message += "\n" + _emulation_hint(op, code)
            raise self._error(op, message)

    def _copy(
        self, op: Op, merged: Path, inputs: Sequence[_Evaluated], context_root: Root | None
    ) -> None:
        definition = op.definition
        with Root(merged) as dest:
            try:
                chown = resolve_owner(dest, definition["chown"]) if definition["chown"] else None
            except CopyError as exc:
                raise self._error(op, str(exc)) from None
            chmod = int(definition["chmod"], 8) if definition["chmod"] else None
            options = CopyOptions(
                chown=chown,
                chmod=chmod,
                keep_owner=definition["from"] != "context",
                parents=definition["parents"],
                unpack_archives=definition["action"] == "add",
            )
            dest_path = definition["dest"]
            for name, _digest, expand in definition["inline"]:
                content = self._heredoc(op, name)
                if expand:
                    content = self.lexer.process_word(content, inputs[0].state.env)
                write_inline(dest, dest_path, name, content, options, len(definition["inline"]) > 1)
            urls = [u for u in definition["sources"] if _is_url(u)]
            if urls:
                if definition["action"] != "add":
                    raise self._error(op, "COPY does not take URLs; use ADD")
                self._download(op, urls, dest, options)
            if not [p for p in definition["sources"] if not _is_url(p)]:
                return
            if definition["from"] == "context":
                assert context_root is not None
                self._copy_from(op, context_root, dest, options, self.ignore)
                return
            with self._view(inputs[1].state) as source:
                self._copy_from(op, source, dest, options, None)

    def _download(self, op: Op, urls: list[str], dest: Root, options: CopyOptions) -> None:
        """ADD <url>: fetched with the host's proxy settings and CA store, checked against
        --checksum when given, written with mode 0600 as Docker does."""
        definition = op.definition
        checksum = definition["checksum"]
        if checksum and len(urls) != 1:
            raise self._error(op, "ADD --checksum needs exactly one URL source")
        dest_path = definition["dest"]
        to_dir = dest_path.endswith("/") or len(urls) > 1
        with httpx.Client(follow_redirects=True, timeout=120.0, trust_env=True) as client:
            for url in urls:
                name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "index.html"
                target = f"{dest_path.rstrip('/')}/{name}" if to_dir else dest_path
                hasher = hashlib.sha256()
                with tempfile.TemporaryFile(dir=self.work) as spool:
                    try:
                        with client.stream("GET", url) as resp:
                            if resp.status_code != 200:
                                raise self._error(op, f"ADD {url}: HTTP {resp.status_code}")
                            for chunk in resp.iter_bytes():
                                hasher.update(chunk)
                                spool.write(chunk)
                    except httpx.HTTPError as exc:
                        raise self._error(op, f"ADD {url}: {exc}") from None
                    actual = "sha256:" + hasher.hexdigest()
                    if checksum and checksum != actual:
                        raise self._error(
                            op, f"ADD {url}: checksum mismatch: expected {checksum}, got {actual}"
                        )
                    spool.seek(0)
                    mode = options.chmod if options.chmod is not None else 0o600
                    with dest.parent(target.lstrip("/")) as (fd, leaf):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(leaf, dir_fd=fd)
                        handle = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                         0o600, dir_fd=fd)  # fmt: skip
                        with os.fdopen(handle, "wb") as out:
                            shutil.copyfileobj(spool, out)
                            os.fchmod(out.fileno(), mode)
                        uid, gid = options.chown or (0, 0)
                        os.chown(leaf, uid, gid, dir_fd=fd, follow_symlinks=False)

    def _copy_from(
        self,
        op: Op,
        source: Root,
        dest: Root,
        options: CopyOptions,
        ignore: IgnoreMatcher | None,
    ) -> None:
        definition = op.definition
        try:
            paths = [p for p in definition["sources"] if not _is_url(p)]
            selected = select_sources(source, paths, ignore)
            copy_sources(
                source, selected, dest, definition["dest"], options,
                list(definition["exclude"]), ignore,
            )  # fmt: skip
        except CopyError as exc:
            raise self._error(op, str(exc)) from None

    def _heredoc(self, op: Op, name: str) -> str:
        location = op.location
        assert location is not None
        for stage in self.request.dockerfile.stages:
            for ins in stage.instructions:
                if ins.location == location:
                    _paths, inline, _dest = ins.sources_and_dest()
                    for doc in inline:
                        if doc.name == name:
                            return doc.content
        raise self._error(op, f"heredoc {name!r} not found")

    # images ------------------------------------------------------------------------------

    def _assemble(self, state: ImageState, platform: Platform) -> Descriptor:
        final = state.clone()
        if self.request.labels:
            labels = dict(final.config.get("Labels") or {})
            labels.update(self.request.labels)
            final.config["Labels"] = labels
        created = self.created
        if self.request.source_date_epoch is None and final.latest:
            created = final.latest
        config_raw = image_config_json(final, created)
        config_digest = self.blobs.put_bytes(config_raw)
        manifest = Manifest.create(
            Descriptor(mt.OCI_CONFIG, config_digest, len(config_raw)),
            [Descriptor(lr.media_type, lr.digest, lr.size) for lr in final.layers],
        )
        self.layout.write_document(manifest.raw)
        return manifest.descriptor(platform)

    # helpers -----------------------------------------------------------------------------

    def _stage_of(self, op: Op) -> str:
        for inst in self.plan.stages:
            if op.key in inst.ops:
                return inst.stage
        return ""

    def _error(self, op: Op, message: str) -> BuildError:
        where = f"{op.location}: " if op.location else ""
        self.progress(
            Event("error", op.key, op.description, self._stage_of(op), str(op.platform), message)
        )
        return BuildError(f"{where}{message}")


CA_PATH = "/run/polyarch-ca/ca-certificates.crt"
CA_VARIABLES = ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                "GIT_SSL_CAINFO", "CURL_CA_BUNDLE")  # fmt: skip
SILENCE_NOTE_SECONDS = 60.0


def _emulation_hint(op: Op, code: int) -> str:
    signal_name = "SIGILL (illegal instruction)" if code == 132 else "SIGSEGV (segmentation fault)"
    return (
        f"The process was killed by {signal_name} while running under QEMU emulation of "
        f"{op.platform}: likely an instruction the emulator does not support. Remedies: let the "
        "stage run once natively (--build-once, or FROM --platform=$BUILDPLATFORM with a "
        "cross-compiler), build on a native node for this platform, or use another base image."
    )


def _overlay_listed() -> bool:
    try:
        return "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def _listing(root: Root, rel: str) -> list[str]:
    try:
        fd = root.open_dir(rel, create=False)
    except (FileNotFoundError, NotADirectoryError, PolyarchError):
        return []
    try:
        return os.listdir(fd)  # noqa: PTH208 (a directory fd, resolved inside the root)
    finally:
        if fd != root.fd:
            os.close(fd)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _chain(key: str, inputs: Sequence[str], extra: str = "") -> str:
    h = hashlib.sha256(key.encode())
    for item in inputs:
        h.update(b"\0" + item.encode())
    if extra:
        h.update(b"\0content:" + extra.encode())
    return "sha256:" + h.hexdigest()


def _timestamp(epoch: int | None) -> str:
    moment = datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _diff_ids(config_raw: bytes) -> list[Digest]:
    rootfs = json.loads(config_raw).get("rootfs") or {}
    return [Digest.parse(d) for d in rootfs.get("diff_ids") or []]


def _created_by(op: Op) -> str:
    definition = op.definition
    if definition["op"] == "exec":
        return "RUN " + " ".join(definition["argv"]) + " # buildkit"
    if definition.get("action") == "mkdir":
        return f"WORKDIR {definition['path']}"
    return f"{op.description} # buildkit"


__all__ = ["BuildError", "BuildRequest", "BuildResult", "Builder"]
