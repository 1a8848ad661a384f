"""A build, start to end: resolve base images, convert the Dockerfile into a graph, solve it on
a worker, assemble each platform's image and the index, keep them in the store.

Build-once is a policy of the solve: before a step takes files from a stage that ran once for
every platform, what it takes is checked for native code; if there is some, the solve stops
and the graph is made again with that stage per platform (finished steps come from the cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from polyarch import cpu
from polyarch.attest.provenance import PlatformFacts, platform_facts
from polyarch.attest.sbom.targets import scan_targets
from polyarch.concurrency import task_pool, wait_all
from polyarch.digest import Digest
from polyarch.errors import BuildError, PolyarchError, RegistryError
from polyarch.frontend.convert import BaseImage, BuildOnce, ConvertRequest, NamedContext, convert
from polyarch.frontend.dockerfile import Dockerfile
from polyarch.frontend.files import ignore_patterns
from polyarch.graph.model import BuildGraph, OnceCheck, PlanWarning, StageInstance, Vertex
from polyarch.graph.ops import ExecOp, ImageSource, SecretMount, SshMount
from polyarch.image.annotations import Annotation
from polyarch.image.assemble import image_config, timestamp, write_image, write_index
from polyarch.oci import mediatypes as mt
from polyarch.oci.config import HistoryEntry, ImageConfig
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Descriptor, Index, Manifest, parse_document
from polyarch.platform import Platform
from polyarch.progress import Event, Progress, silent
from polyarch.reference import Reference
from polyarch.registry.client import FetchedDocument, RegistryClient
from polyarch.remotecache.exchange import (
    ChainedCache,
    ExportReport,
    ImportedCache,
    LazyLayers,
    Remotes,
    export_cache,
    open_store,
    records_for,
)
from polyarch.remotecache.format import CacheRecord, CacheSpec, merge
from polyarch.runtime import Executor
from polyarch.runtime.userns import rootless
from polyarch.solver.cache import CacheBackend, SqliteCache, UnusableCacheEntry
from polyarch.solver.explain import Explainer
from polyarch.solver.records import ExplainRecords
from polyarch.solver.solve import Flights, Solver, SolveReport
from polyarch.store.layout import OciLayout
from polyarch.store.workspace import Workspace
from polyarch.worker.base import BuildWorker, ContextFetch, LayerRef, Result
from polyarch.worker.local.mounts import Agents, SecretSource, SshSource
from polyarch.worker.local.run import RunSettings
from polyarch.worker.local.worker import BuildSession, LocalWorker


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
    build_once: BuildOnce = "auto"
    ca_certs: Path | None = None  # a CA bundle on the host for RUN steps to trust
    allow: frozenset[str] = frozenset()  # entitlements (security.insecure)
    secrets: Mapping[str, SecretSource] = field(default_factory=dict)
    ssh: Mapping[str, SshSource] = field(default_factory=dict)
    contexts: Mapping[str, NamedContext] = field(default_factory=dict)  # --build-context
    context_dirs: Mapping[str, Path] = field(default_factory=dict)  # the local ones' paths
    cache_from: tuple[CacheSpec, ...] = ()  # --cache-from
    cache_to: CacheSpec | None = None  # --cache-to
    step_timeout: float | None = None  # seconds a RUN step may take (--step-timeout)
    annotations: tuple[Annotation, ...] = ()  # --annotation
    extra_hosts: tuple[str, ...] = ()  # --add-host, as HOST=IP
    network: str = "default"  # --network: RUN steps' network unless they name one
    ulimits: tuple[str, ...] = ()  # --ulimit NAME=SOFT:HARD
    shm_size: int = 0  # --shm-size, bytes
    no_cache_filter: frozenset[str] = frozenset()  # --no-cache-filter: stages run anew
    emulator_install: bool = True  # as root, register a missing emulator (--no-emulator-install)
    # What this build is the next build of (Dockerfile, context, target), for explanations:
    # its record is kept under this name; "" keeps none.
    explain_as: str = ""
    # Named contexts (of `contexts`, layouts) not there yet: only a warm-up solve may run.
    pending: frozenset[str] = frozenset()
    # --sbom: the stages BUILDKIT_SBOM_SCAN_STAGE names are kept for the scan
    sbom: bool = False
    context_fetch: ContextFetch | None = None  # a node's: its client sends context files


@dataclass(frozen=True, slots=True)
class PlatformImage:
    platform: Platform
    descriptor: Descriptor  # the manifest
    size: int  # config and layers, compressed


@dataclass(frozen=True, slots=True)
class StageLayers:
    """A stage's filesystem as layers: what an SBOM of the stage reads."""

    stage: str
    layers: tuple[tuple[Descriptor, Digest], ...]


@dataclass(frozen=True, slots=True)
class SharedBuild:
    """The build-once stages built here for a builder's nodes: each stage's manifest, the
    steps run, the cache keys used, and what they bring to the nodes' platforms'
    provenance (their base images)."""

    stages: dict[str, Descriptor] = field(default_factory=dict)
    steps_run: int = 0
    keys: frozenset[str] = frozenset()
    facts: PlatformFacts = field(default_factory=PlatformFacts)


@dataclass(frozen=True, slots=True)
class BuildResult:
    descriptor: Descriptor  # the manifest (one platform) or index (several), in the store
    manifests: Mapping[Platform, Descriptor]
    graph: BuildGraph | None  # None when every platform was built on other nodes
    steps_run: int
    steps_cached: int
    seconds: float = 0.0
    images: tuple[PlatformImage, ...] = ()
    cache_keys: frozenset[str] = frozenset()  # every cached step the build used or made
    image_keys: frozenset[str] = frozenset()  # of those, the steps whose layers the images hold
    warnings: tuple[PlanWarning, ...] = ()
    steps_imported: int = 0  # of the cached: hits in an imported cache
    cache_export: ExportReport | None = None
    # The layer blobs the base images brought (an output's compression leaves them alone
    # unless forced, as BuildKit does)
    base_layers: frozenset[Digest] = frozenset()
    # What each platform's provenance takes from the build (materials, secrets' ids, ...)
    facts: Mapping[Platform, PlatformFacts] = field(default_factory=dict)
    # --sbom: per platform, the stages to scan too (BUILDKIT_SBOM_SCAN_STAGE) as their layers
    # (with diffIDs), and whether the build context is scanned (BUILDKIT_SBOM_SCAN_CONTEXT)
    sbom_stages: Mapping[Platform, tuple[StageLayers, ...]] = field(default_factory=dict)
    sbom_context: bool = False


class NativeOutput(PolyarchError):
    """Not a failure: a build-once stage's output holds native code, so the build plans again
    with that stage per platform."""

    def __init__(self, stage: str, platform: Platform, path: str, why: str) -> None:
        super().__init__(f"/{path} is {why}")
        self.stage, self.platform, self.path, self.why = stage, platform, path, why


class BuildOncePolicy:
    """Checks what steps take from build-once stages (each selection once per build)."""

    def __init__(self, graph: BuildGraph, worker: BuildWorker) -> None:
        self.graph = graph
        self.worker = worker
        self._checked: set[tuple[str, tuple[str, ...]]] = set()
        self._lock = threading.Lock()

    def before(self, vertex: Vertex, inputs: Sequence[Result]) -> None:
        for check in self.graph.once_checks.get(vertex.key, ()):
            self._check(check, inputs[check.input])

    def check_sources(self, sources: set[str], result: Callable[[str], Result]) -> None:
        """Every selection taken from these build-once results, whoever takes it (their
        consumers run elsewhere: on the nodes the outputs are shipped to)."""
        for checks in self.graph.once_checks.values():
            for check in checks:
                if check.source in sources:
                    self._check(check, result(check.source))

    def _check(self, check: OnceCheck, source: Result) -> None:
        marker = (check.source, check.paths)
        with self._lock:
            if marker in self._checked:
                return
        found = self.worker.native_code(source.layers, check.paths)
        if found is not None:
            platform = self.graph.vertices[check.source].platform
            raise NativeOutput(check.stage, platform, *found)
        with self._lock:
            self._checked.add(marker)


def solve_with_replanning(
    make: Callable[[frozenset[str]], BuildGraph],
    solve: Callable[[BuildGraph], SolveReport],
    replanned: Callable[[str, Platform, str, str], None],
) -> tuple[BuildGraph, SolveReport]:
    """Solve; when a build-once stage turns out to make native code, make the graph again with
    that stage per platform and solve again (what finished is in the cache by then)."""
    per_platform: set[str] = set()
    while True:
        graph = make(frozenset(per_platform))
        try:
            return graph, solve(graph)
        except NativeOutput as exc:
            if exc.stage in per_platform:
                raise BuildError(f"stage {exc.stage} still makes native code for everyone after "
                                 "it was planned per platform") from None  # fmt: skip
            replanned(exc.stage, exc.platform, exc.path, exc.why)
            per_platform.add(exc.stage)


@dataclass(frozen=True, slots=True)
class _Solved:
    graph: BuildGraph
    solver: Solver
    report: SolveReport
    earlier: int  # steps run by earlier tries (a replan, a dropped cache entry)
    now: str  # the build's time
    started: float


def base_images(graph: BuildGraph, keys: Collection[str] | None = None
                ) -> dict[tuple[str, str], Vertex]:  # fmt: skip
    """The images a graph (or these of its vertices) takes, (reference, platform) -> the first
    vertex that names it (where a failure to get it is told)."""
    out: dict[tuple[str, str], Vertex] = {}
    for key, vertex in graph.vertices.items():
        if isinstance(vertex.op, ImageSource) and (keys is None or key in keys):
            out.setdefault((vertex.op.ref, str(vertex.op.platform)), vertex)
    return out


def shared_stages(graph: BuildGraph, dockerfile: Dockerfile) -> dict[str, StageInstance]:
    """The build-once stages a node can receive instead of running them: named, built FROM
    by no other stage, and taken from by a step that is not itself in a build-once stage."""
    once = [inst for inst in graph.stages if inst.mode == "build-once"]
    inside = {key for inst in once for key in inst.vertices}
    taken = {key for vertex_key, vertex in graph.vertices.items() if vertex_key not in inside
             for key in vertex.inputs}  # fmt: skip
    parents = {stage.base.lower() for stage in dockerfile.stages}
    out: dict[str, StageInstance] = {}
    for inst in once:
        name = dockerfile.stages[inst.stage_index].name
        if name and name not in parents and inst.result in taken:
            out[name] = inst
    return out


# Solves a Builder makes: every stage of the request's platforms (full), the build-once stages
# the nodes' platforms share (shared), or what does not wait for stages still being built
# elsewhere (warm: a node's warm-up).
SolveMode: TypeAlias = Literal["full", "shared", "warm"]
# The worker of one solve: the build's session (context, secrets, agents), the platform it
# builds on, and where imported layers come from.
WorkerFactory: TypeAlias = Callable[["Builder", BuildSession, Platform, Remotes], BuildWorker]


def local_worker(builder: Builder, session: BuildSession, platform: Platform,
                 remote: Remotes) -> BuildWorker:  # fmt: skip
    """This machine's worker, in the builder's workspace."""
    return LocalWorker(
        builder.workspace, session, platform, executor=builder.executor,
        on_note=lambda text: builder.progress(Event("note", "", "snapshots", text=text)),
        remote=remote, progress=builder.progress,
    )  # fmt: skip


class Builder:
    def __init__(
        self,
        workspace: Workspace,
        registry: RegistryClient,
        *,
        progress: Progress = silent,
        executor: Executor | None = None,
        mirrors: Mapping[str, Sequence[str]] | None = None,
        mirror_client: RegistryClient | None = None,
        worker_factory: WorkerFactory = local_worker,
    ) -> None:
        self.workspace = workspace
        self.layout = workspace.layout
        self.blobs = self.layout.blobs
        self.registry = registry
        self.bases = BaseImages(self.layout, registry, progress, mirrors, mirror_client)
        self.progress = progress
        self.executor = executor
        self._worker_factory = worker_factory
        self.cache = SqliteCache(
            workspace.cache_db, warn=lambda text: progress(Event("note", "", "cache", text=text))
        )
        self.flights = Flights()  # steps its solves are running, shared by builds side by side
        self._shared = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the workspace for several builds that run side by side (bake's targets): it
        is locked and cleared once, and their solves run a step they share once."""
        with self._building():
            self._shared = True
            try:
                yield
            finally:
                self._shared = False

    @contextlib.contextmanager
    def _building(self) -> Iterator[None]:
        """The workspace held, stale leftovers cleared, the registry's retries told."""
        if self._shared:
            yield
            return
        with self.workspace.exclusive():
            from polyarch.worker.local.gc import clear_stale  # noqa: PLC0415

            clear_stale(self.workspace)
            previous = self.registry.on_retry
            self.registry.on_retry = lambda text: self.progress(
                Event("note", "", "registry", text=text))  # fmt: skip
            try:
                yield
            finally:
                self.registry.on_retry = previous

    def build(self, request: BuildRequest) -> BuildResult:
        with self._building():
            return self._images(request, self._solve(request))

    def planned_shared_stages(self, request: BuildRequest) -> list[str]:
        """The stages `build_shared_stages` would build, as planned (before anything runs)."""
        graph = convert(_convert_request(request))
        return sorted(shared_stages(graph, request.dockerfile))

    def build_shared_stages(self, request: BuildRequest) -> SharedBuild:
        """Only the build-once stages that the request's platforms take files from (for the
        nodes that build those platforms): each run here once, checked for native code as a
        local build checks it, and kept as an image in the store. Returns stage name -> its
        manifest. A stage found to make native code is left out (the nodes build it per
        platform), as is one that another stage builds FROM or that has no name (a named
        context, which is how a node receives it, can only replace a named stage). Also
        returns how many steps ran, the cache keys of the steps used (for a cache export of
        mode=max), and what the stages bring to a platform's provenance."""
        out: dict[str, Descriptor] = {}
        with self._building():
            solved = self._solve(request, "shared")
            for name, inst in shared_stages(solved.graph, request.dockerfile).items():
                layers = solved.solver.result(inst.result).layers
                shown = f"stage {name}, built once by polyarch"
                # Undated: the same layers give the same image, so a node's steps that take
                # from it stay cached while the stage's output does not change.
                config = ImageConfig.empty(inst.platform).replace(
                    diff_ids=tuple(layer.diff_id for layer in layers),
                    history=tuple(HistoryEntry(None, shown) for _ in layers),
                )
                raw = config.to_bytes()
                blobs = [Descriptor(layer.media_type, layer.digest, layer.size) for layer in layers]
                config_blob = Descriptor(mt.OCI_CONFIG, self.blobs.put_bytes(raw), len(raw))
                manifest = Manifest.create(config_blob, blobs)
                self.layout.write_document(manifest.raw)
                out[name] = manifest.descriptor(inst.platform)
            results = [inst.result for inst in shared_stages(solved.graph, request.dockerfile)
                       .values() if inst.stage in out]  # fmt: skip
            facts = platform_facts(solved.graph, results=results)
        return SharedBuild(out, solved.report.steps_run + solved.earlier,
                           solved.report.used_keys, facts)  # fmt: skip

    def warm(self, request: BuildRequest, pending: frozenset[str]) -> int:
        """Run what the build can run before the named contexts `pending` are there (a node
        waiting for the build-once stages this machine sends it): every step that does not
        depend on them, into the step cache, so the build that follows takes them from it.
        Returns how many steps ran."""
        with self._building():
            solved = self._solve(dataclasses.replace(request, pending=pending), "warm")
        return solved.report.steps_run + solved.earlier

    def _solve(self, request: BuildRequest, mode: SolveMode = "full") -> _Solved:
        """Convert and solve (`_targets`): every stage of the request's platforms ("full"),
        the build-once stages they share ("shared"), or what does not wait for the pending
        named contexts ("warm")."""
        started = time.monotonic()
        make = self._planner(request, mode)
        now = timestamp(request.source_date_epoch)
        agents = Agents(dict(request.ssh))
        session = BuildSession(
            {"context": request.context, **request.context_dirs},
            RunSettings(request.ca_certs, request.step_timeout), request.source_date_epoch,
            dict(request.secrets), agents, request.context_fetch,
        )  # fmt: skip
        imported = self._import_caches(request.cache_from)
        lazy = LazyLayers(self.blobs, self.registry)
        cache: CacheBackend = self.cache if imported is None else ChainedCache(self.cache, imported)
        worker = self._worker_factory(
            self, session, request.build_platform, Remotes(imported, lazy, self.bases)
        )
        solvers: list[Solver] = []
        # A partial solve (the shared stages, a node's warm-up) is the next build of its own.
        explain_as = request.explain_as + ("" if mode == "full" else f"\0{mode}")
        records = ExplainRecords(self.workspace.explanations) if request.explain_as else None
        explainer = None
        if records is not None:
            explainer = Explainer(lambda: records.load(explain_as), request.build_args)

        def solve(graph: BuildGraph) -> SolveReport:
            policy = BuildOncePolicy(graph, worker)
            solver = Solver(
                graph, worker, cache, created=now, jobs=request.jobs,
                progress=self.progress, no_cache=request.no_cache, policy=policy,
                no_cache_stages=request.no_cache_filter, explainer=explainer,
                flights=self.flights,
            )  # fmt: skip
            solvers.append(solver)
            targets = _targets(graph, request, mode)
            report = solver.solve(targets)
            if mode == "shared":  # their takers run on the nodes: checked here, now
                policy.check_sources(set(targets), solver.result)
            return report

        def replanned(stage: str, platform: Platform, path: str, why: str) -> None:
            why = f"/{path} is {why}: stage {stage} is built per platform"
            self.progress(Event("note", "", f"stage {stage}", stage, str(platform), why))

        def tries() -> int:
            return 1 + (imported.layers() if imported is not None else 0) + lazy.noted()

        def kept(graph: BuildGraph) -> None:
            """The final images' layers must be here (and the stages an SBOM scans): an
            imported hit's or a base image's is fetched now."""
            if mode == "full":
                keys = [graph.images[p].result for p in request.platforms]
            else:  # the shared stages' images are made of their results; warm: none
                keys = _targets(graph, request, mode) if mode == "shared" else []
            wanted = {layer.digest: layer for key in keys
                      for layer in solvers[-1].result(key).layers}  # fmt: skip
            scanned = self._sbom_targets(request, graph, solvers[-1])[0] if mode == "full" else {}
            wanted.update((d.digest, LayerRef(d.digest, d.size, diff_id, d.media_type))
                          for stages in scanned.values() for stage in stages
                          for d, diff_id in stage.layers)  # fmt: skip
            with task_pool(4) as pool:  # side by side: each pull is hashing and writing
                wait_all([pool.submit(worker.ensure, [layer]) for layer in wanted.values()])

        try:
            graph, report = self._solve_retrying(
                lambda: solve_with_replanning(make, solve, replanned), kept, tries
            )
        finally:
            agents.close()
            worker.close()
        self.cache.touch(report.used_keys)
        if records is not None and explainer is not None and mode != "warm":
            records.save(explain_as, explainer.record())
        # Steps an earlier try (a replan, a dropped cache entry) ran count as run, not cached.
        earlier = sum(s.steps_run for s in solvers[:-1])
        return _Solved(graph, solvers[-1], report, earlier, now, started)

    def _planner(
        self, request: BuildRequest, mode: SolveMode
    ) -> Callable[[frozenset[str]], BuildGraph]:
        """The plan checked, the emulators it needs there and its base images resolved (only
        what this solve runs); then the plan made with the stages that must be built per
        platform, its warnings told once."""
        base = _convert_request(request)
        draft = convert(base)
        _check_required(draft, request)
        relevant = draft.upstream(_targets(draft, request, mode))

        def note(text: str) -> None:
            self.progress(Event("note", "", "emulators", text=text))

        _check_emulators(draft, request.build_platform, relevant, request.emulator_install, note)
        images = self.bases.resolve(base_images(draft, relevant), layers=True)
        told: set[str] = set()

        def make(per_platform: frozenset[str]) -> BuildGraph:
            graph = convert(dataclasses.replace(base, images=images, per_platform=per_platform))
            for warning in graph.warnings:  # told now, repeated when the build ends
                if str(warning) not in told:
                    told.add(str(warning))
                    self.progress(Event("note", "", "warning", text=str(warning),
                                        warning=warning))  # fmt: skip
            return graph

        return make

    def _solve_retrying(
        self,
        solve: Callable[[], tuple[BuildGraph, SolveReport]],
        kept: Callable[[BuildGraph], None],
        tries: Callable[[], int],
    ) -> tuple[BuildGraph, SolveReport]:
        """An unusable imported layer drops its entries and the build solves again: at most
        once per imported layer, or layer an earlier build's import left to fetch (`tries`;
        what finished is in the local cache by then)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                graph, report = solve()
                kept(graph)
                return graph, report
            except UnusableCacheEntry as exc:
                if attempt >= tries():
                    raise BuildError(f"{exc} (and the build ran out of tries)") from None
                self.progress(Event("note", "", "cache", text=f"{exc}: solving again "
                                    "without it"))  # fmt: skip

    def _images(self, request: BuildRequest, solved: _Solved) -> BuildResult:
        """Each platform's image and the index, from a solve."""
        graph, solver, report, now = solved.graph, solved.solver, solved.report, solved.now
        epoch = request.source_date_epoch
        manifests: dict[Platform, Descriptor] = {}
        platform_images: list[PlatformImage] = []
        for platform in request.platforms:
            spec = graph.images[platform]
            config = image_config(spec, solver.result, now=now, epoch=epoch)
            descriptor = write_image(self.layout, spec, config, solver.result(spec.result),
                                     request.annotations)  # fmt: skip
            manifests[platform] = descriptor
            size = sum(layer.size for layer in solver.result(spec.result).layers)
            platform_images.append(
                PlatformImage(platform, descriptor, size + len(config.to_bytes()))
            )
        top = write_index(self.layout, manifests, request.annotations)
        image_keys = frozenset().union(
            *(_image_steps(graph, solver, graph.images[p].result) for p in request.platforms)
        )
        exported = None
        if request.cache_to is not None:
            keys = report.used_keys if request.cache_to.mode == "max" else image_keys
            exported = self.export_cache(request.cache_to, request.platforms, request.target,
                                         keys)  # fmt: skip
        earlier = solved.earlier
        return BuildResult(
            top, manifests, graph, report.steps_run + earlier,
            max(0, report.steps_cached - earlier),
            time.monotonic() - solved.started, tuple(platform_images), report.used_keys,
            image_keys, graph.warnings, report.steps_imported, exported,
            frozenset(layer.digest for key, vertex in graph.vertices.items()
                      if isinstance(vertex.op, ImageSource)
                      for layer in getattr(solver.finished(key), "layers", ())),
            {p: platform_facts(graph, p) for p in request.platforms},
            *self._sbom_targets(request, graph, solver),
        )  # fmt: skip

    def _sbom_targets(self, request: BuildRequest, graph: BuildGraph, solver: Solver
                      ) -> tuple[dict[Platform, tuple[StageLayers, ...]], bool]:  # fmt: skip
        """What an SBOM scans beside the image: the stages BUILDKIT_SBOM_SCAN_STAGE names
        (their layers) and whether BUILDKIT_SBOM_SCAN_CONTEXT asks for the context."""
        if not request.sbom:
            return {}, False
        out: dict[Platform, tuple[StageLayers, ...]] = {}
        context = False
        for platform in request.platforms:
            instances = [i for i in graph.stages if platform in i.targets]
            context, names = scan_targets(request.dockerfile, request.build_args, graph.target,
                                          {i.stage for i in instances})  # fmt: skip
            out[platform] = tuple(
                StageLayers(i.stage, tuple((Descriptor(x.media_type, x.digest, x.size),
                                            x.diff_id) for x in solver.result(i.result).layers))
                for i in instances if i.stage in names)  # fmt: skip
        return out, context

    # exported caches ---------------------------------------------------------------------

    def _import_caches(self, specs: Sequence[CacheSpec]) -> ImportedCache | None:
        if not specs:
            return None

        def note(text: str) -> None:
            self.progress(Event("note", "", "cache", text=text))

        imported = ImportedCache(self.blobs, warn=note, record_local=self.cache.put)
        for spec in specs:
            started = time.monotonic()
            description = f"importing cache {spec}"
            self.progress(Event("start", "", description))
            try:
                store, tag = open_store(spec, self.registry, create=False)
                found = imported.add(store, tag, str(spec))
            except PolyarchError as exc:
                note(f"cache {spec} not used: {exc}")  # as buildx: a missing cache is no error
                continue
            if not found:
                note(f"cache {spec} has no entries yet")
            self.progress(Event("done", "", description, text=f"{found} entries",
                                seconds=time.monotonic() - started))  # fmt: skip
        return imported

    def export_cache(
        self,
        spec: CacheSpec,
        platforms: Sequence[Platform],
        target: str | None,
        keys: Iterable[str],
        more: Sequence[CacheRecord] = (),
    ) -> ExportReport | None:
        """One `--cache-to` export: the entries of `keys` in this workspace's step cache, and
        `more` (what a builder's nodes made for the same build, their layers in this store),
        merged into the writer's tag of `platforms` and `target`."""
        started = time.monotonic()
        description = f"exporting cache to {spec} (mode={spec.mode})"
        self.progress(Event("start", "", description))
        now = time.time()
        try:
            store, tag = open_store(spec, self.registry, create=True)
            records = merge(more, records_for(keys, self.cache.entries(), now))
            report = export_cache(store, tag, records, self.blobs, spec,
                                  platforms=[str(p) for p in platforms],
                                  target=target or "", now=now)  # fmt: skip
        except PolyarchError as exc:
            if not spec.ignore_error:
                raise BuildError(f"exporting the cache to {spec} failed: {exc}") from None
            self.progress(Event("note", "", "cache", text=f"cache export to {spec} failed "
                                f"(ignore-error=true): {exc}"))  # fmt: skip
            return None
        summary = f"{report.entries} entries, {report.uploaded} layers"
        self.progress(Event("done", "", description, seconds=time.monotonic() - started,
                            text=summary))  # fmt: skip
        return report


@dataclass(frozen=True, slots=True)
class _PendingLayer:
    """A base image's layer the store lacks: pulled when a step or an image needs it."""

    ref: Reference
    image: str
    platform: str
    blob: Descriptor


class BaseImages:
    """Base images resolved for a build: pulled through the registry's mirrors first, checked
    (the config's layers against the manifest's), and kept in the store. The manifests and
    configs are read when a build resolves them; each layer is pulled when a step or a kept
    image first needs it (once, whoever asks), so a build whose steps all come from a cache
    pulls only what its images hold."""

    def __init__(
        self,
        layout: OciLayout,
        registry: RegistryClient,
        progress: Progress,
        mirrors: Mapping[str, Sequence[str]] | None = None,
        mirror_client: RegistryClient | None = None,
    ) -> None:
        self.layout, self.blobs = layout, layout.blobs
        self.registry = registry
        self.progress = progress
        # Base images are pulled through these first (REGISTRY -> [HOST[/PREFIX], ...]), with
        # a client that gives up fast, so a mirror that is down costs little.
        self.mirrors = {k: tuple(v) for k, v in (mirrors or {}).items()}
        self.mirror_client = mirror_client or registry
        self._pending: dict[Digest, _PendingLayer] = {}
        self._pulling: dict[Digest, threading.Lock] = {}
        self._lock = threading.Lock()

    def resolve(
        self, wanted: Mapping[tuple[str, str], Vertex], *, layers: bool
    ) -> dict[tuple[str, str], BaseImage]:
        """Base images ((reference, platform)) resolved side by side (with `layers`, their
        layers left to pull when needed; `build --check` reads configs only). One that cannot
        be is told at the instruction that names it (its FROM line), with the registry's
        answer."""

        def resolve(key: tuple[str, str]) -> BaseImage:
            try:
                return self._resolve_base(*key, layers=layers)
            except (RegistryError, BuildError) as exc:
                vertex = wanted[key]
                location = str(vertex.location) if vertex.location else ""
                raise BuildError(f"{vertex.description}: {exc}", location=location,
                                 platform=key[1]) from None  # fmt: skip

        keys = sorted(wanted)
        with task_pool(4) as pool:
            resolving = [pool.submit(resolve, key) for key in keys]
            wait_all(resolving)
        return {key: f.result() for key, f in zip(keys, resolving, strict=True)}

    def base_configs(
        self, wanted: Mapping[tuple[str, str], Vertex]
    ) -> dict[tuple[str, str], BaseImage]:
        """The configs of these base images, their layers not pulled: what `build --check`
        reads."""
        return self.resolve(wanted, layers=False)

    def _resolve_base(self, image: str, platform_text: str, *, layers: bool = True) -> BaseImage:
        if image.startswith("oci-layout://"):
            return self._resolve_layout(image.removeprefix("oci-layout://"), platform_text)
        platform = Platform.parse(platform_text)
        ref = Reference.parse(image)
        description = f"resolve {image} for {platform}"
        started = time.monotonic()
        self.progress(Event("start", "", description, platform=platform_text))
        pull = _Puller(self, ref, image)
        fetched = pull.manifest(None)
        document = fetched.document
        digest = fetched.digest
        if isinstance(document, Index):
            entry = document.image_for(platform)
            if entry is None:
                have = document.platforms_text()
                raise BuildError(f"{image} has no image for {platform} (it has: {have})")
            child = pull.manifest(entry.digest)
            document, digest = child.document, child.digest
        if not isinstance(document, Manifest):
            raise BuildError(f"{image}: the {platform} entry is not an image manifest")
        if document.config.size > MAX_DOCUMENT_SIZE:
            raise BuildError(f"{image}: its config is {document.config.size} bytes, over the "
                             f"{MAX_DOCUMENT_SIZE} limit for configs; refusing it")  # fmt: skip
        self.layout.write_document(document.raw)
        if not self.blobs.has(document.config.digest, document.config.size):
            pull.expect(description, platform_text, document.config.size)
            pull.blob(document.config)
        config = ImageConfig.parse(
            self.blobs.read_bytes(document.config.digest, document.config.size),
            f"config of {image}",
        )
        if len(config.diff_ids) != len(document.layers):
            raise BuildError(
                f"{image}: its config lists {len(config.diff_ids)} layers (rootfs.diff_ids), "
                f"its manifest {len(document.layers)}"
            )
        if layers:
            with self._lock:
                for blob in document.layers:
                    if not self.blobs.has(blob.digest, blob.size):
                        self._pending.setdefault(
                            blob.digest, _PendingLayer(ref, image, platform_text, blob)
                        )
        via = f" (through {', '.join(sorted(pull.used))})" if pull.used else ""
        self.progress(
            Event("done", "", description, platform=platform_text, text=f"pulled{via}"
                  if via else "", seconds=time.monotonic() - started)
        )  # fmt: skip
        return BaseImage(str(digest), config)

    def has(self, digest: Digest) -> bool:
        """Whether `digest` is a resolved base image's layer that can be pulled."""
        with self._lock:
            return digest in self._pending

    def fetch(self, digest: Digest) -> None:
        """Pull a base image's layer into the store (verified), once: a second asker waits
        for the pull in flight."""
        with self._lock:
            pending = self._pending.get(digest)
            flight = self._pulling.setdefault(digest, threading.Lock())
        if pending is None:
            return
        with flight:
            blob = pending.blob
            if self.blobs.has(blob.digest, blob.size):
                return
            description = (f"pull {pending.image} {blob.digest.hex[:12]} "
                           f"({blob.size / 1e6:.1f} MB)")  # fmt: skip
            started = time.monotonic()
            self.progress(Event("start", "", description, platform=pending.platform))
            pull = _Puller(self, pending.ref, pending.image)
            pull.expect(description, pending.platform, blob.size)
            try:
                pull.blob(blob)
            except PolyarchError as exc:
                self.progress(Event("error", "", description, platform=pending.platform,
                                    text=str(exc)))  # fmt: skip
                raise BuildError(f"{pending.image} for {pending.platform}: its layer "
                                 f"{blob.digest} cannot be pulled: {exc}") from None  # fmt: skip
            via = f"through {', '.join(sorted(pull.used))}" if pull.used else ""
            self.progress(Event("done", "", description, platform=pending.platform, text=via,
                                seconds=time.monotonic() - started))  # fmt: skip

    def _resolve_layout(self, spec: str, platform_text: str) -> BaseImage:
        """An image of an OCI layout (`--build-context NAME=oci-layout://DIR[:TAG|@DIGEST]`),
        copied into the store (verified) and resolved for the platform."""
        platform = Platform.parse(platform_text)
        path, at, digest = spec.partition("@")
        if not at:
            path, colon, tag = spec.rpartition(":") if ":" in spec.rsplit("/", 1)[-1] else (
                spec, "", "")  # fmt: skip
            if not colon:
                path, tag = spec, ""
        source = OciLayout(Path(path), create=False)
        if at:
            descriptor = Descriptor(mt.OCI_INDEX, Digest.parse(digest), source.blobs.size(
                Digest.parse(digest)))  # fmt: skip
        else:
            descriptor = source.resolve(tag or None)
        document = parse_document(source.read_document(descriptor), None)
        if isinstance(document, Index):
            entry = document.image_for(platform)
            if entry is None:
                raise BuildError(f"oci-layout://{spec} has no image for {platform} (it has: "
                                 f"{document.platforms_text()})")  # fmt: skip
            document = parse_document(source.read_document(entry), entry.media_type)
        if not isinstance(document, Manifest):
            raise BuildError(f"oci-layout://{spec}: not an image manifest")
        for blob in document.blobs():
            if not self.blobs.has(blob.digest, blob.size):
                self.blobs.ingest(source.blobs.iter_blob(blob.digest, blob.size), blob.digest,
                                  blob.size)  # fmt: skip
        self.layout.write_document(document.raw)
        config = ImageConfig.parse(self.blobs.read_bytes(document.config.digest,
                                                         document.config.size))  # fmt: skip
        return BaseImage(str(document.digest), config)


class _Puller:
    """One base image's pulls: through the registry's mirrors first (in order), then the
    registry itself. A tag is resolved by the registry when it answers (a mirror then cannot
    change what is built), by a mirror only when the registry cannot be reached (said in a
    note); manifests by digest and blobs come from the first source that has them, each
    checked against its digest. Nothing is ever pushed to a mirror."""

    def __init__(self, builder: BaseImages, ref: Reference, image: str) -> None:
        self.builder, self.ref, self.image = builder, ref, image
        self.mirrors = [_mirrored(ref, m) for m in builder.mirrors.get(ref.registry, ())]
        self.used: set[str] = set()
        self.row = ("", "")  # the progress row (description, platform) bytes are told on
        self.done = self.total = 0
        self.told = 0.0

    def expect(self, description: str, platform: str, total: int) -> None:
        self.row, self.total, self.done = (description, platform), total, 0

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The chunks, telling bytes done of the total (at most 5 times a second)."""
        for chunk in chunks:
            self.done += len(chunk)
            now = time.monotonic()
            if now - self.told >= 0.2 or self.done >= self.total:
                self.told = now
                self.builder.progress(Event("progress", "", self.row[0], platform=self.row[1],
                                            current=self.done, total=self.total))  # fmt: skip
            yield chunk

    def _note(self, text: str) -> None:
        self.builder.progress(Event("note", "", "mirrors", text=text))

    def manifest(self, digest: Digest | None) -> FetchedDocument:
        origin = self.builder.registry
        if digest is None and self.ref.digest is None and self.mirrors:
            try:
                found = self.builder.mirror_client.head_manifest(self.ref)  # fails fast
            except RegistryError as exc:
                if exc.status is not None:
                    raise
                found = None
                for mirror in self.mirrors:
                    try:
                        found = self.builder.mirror_client.head_manifest(mirror)
                    except PolyarchError:
                        continue
                    if found is not None:
                        self._note(f"{self.ref.registry} cannot be reached ({exc}); the tag "
                                   f"{self.ref.tag} was resolved by the mirror "
                                   f"{mirror.registry}")  # fmt: skip
                        break
                if found is None:
                    raise
            if found is None:
                raise RegistryError("manifest unknown", status=404, code="MANIFEST_UNKNOWN",
                                    reference=str(self.ref))  # fmt: skip
            digest = found.digest
        target = digest or self.ref.digest
        if target is None:
            return origin.get_manifest(self.ref)
        for mirror in self.mirrors:
            try:
                fetched = self.builder.mirror_client.get_manifest(mirror.with_digest(target))
            except PolyarchError as exc:
                self._note(f"mirror {mirror.registry}: {exc}; trying the next source")
                continue
            self.used.add(mirror.registry)
            return fetched
        return origin.get_manifest(self.ref.with_digest(target))

    def blob(self, blob: Descriptor) -> None:
        with cpu.measure("pull"):
            self._blob(blob)

    def _blob(self, blob: Descriptor) -> None:
        blobs = self.builder.blobs
        for mirror in self.mirrors:
            start = self.done
            try:
                blobs.ingest(self._counted(self.builder.mirror_client.get_blob(mirror, blob)),
                             blob.digest, blob.size)  # fmt: skip
            except PolyarchError as exc:
                self.done = start  # what that mirror gave is not counted twice
                self._note(f"mirror {mirror.registry}: {exc}; trying the next source")
                continue
            self.used.add(mirror.registry)
            return
        blobs.ingest(self._counted(self.builder.registry.get_blob(self.ref, blob)), blob.digest,
                     blob.size)  # fmt: skip


def _mirrored(ref: Reference, mirror: str) -> Reference:
    """`ref` at a mirror (`HOST[/PREFIX]`: the repository under PREFIX)."""
    host, _, prefix = mirror.partition("/")
    repository = f"{prefix.strip('/')}/{ref.repository}" if prefix.strip("/") else ref.repository
    return Reference(host, repository, ref.tag, ref.digest)


def _image_steps(graph: BuildGraph, solver: Solver, key: str) -> set[str]:
    """The cache keys of the steps whose layers make up the image of vertex `key` (the
    filesystem chain down to the base image; both sides of a link copy)."""
    out: set[str] = set()
    pending = [key]
    while pending:
        current = pending.pop()
        vertex = graph.vertices[current]
        if vertex.kind == "source":
            continue
        out.add(solver.result(current).key)
        if vertex.kind == "merge":
            pending.extend(vertex.inputs)
        elif vertex.inputs:
            pending.append(vertex.inputs[0])
    return out


def _convert_request(request: BuildRequest) -> ConvertRequest:
    """What the converter is asked for this build (base images not resolved yet)."""
    ignore = ignore_patterns(request.dockerfile_path, request.context)
    return ConvertRequest(
        request.dockerfile, request.platforms, request.build_platform,
        dict(request.build_args), request.target, {}, request.build_once, frozenset(),
        ignore, request.allow, dict(request.labels), dict(request.contexts),
        extra_hosts=request.extra_hosts, network=request.network, ulimits=request.ulimits,
        shm_size=request.shm_size,
    )  # fmt: skip


def _targets(graph: BuildGraph, request: BuildRequest, mode: SolveMode) -> list[str]:
    """The vertices a solve of this mode asks for (see `Builder._solve`)."""
    if mode == "shared":
        return sorted(i.result for i in shared_stages(graph, request.dockerfile).values())
    if mode == "warm":
        waiting = {"oci-layout://" + request.contexts[name].value for name in request.pending}
        pending = [key for key, v in graph.vertices.items()
                   if isinstance(v.op, ImageSource) and v.op.ref in waiting]  # fmt: skip
        blocked = graph.downstream(pending)
        return [key for key in graph.vertices if key not in blocked]
    return [inst.result for inst in graph.stages] + list(graph.results.values())


def _check_emulators(
    graph: BuildGraph,
    machine: Platform,
    relevant: set[str],
    install: bool,
    note: Callable[[str], None],
) -> None:
    """Before any pull: each platform whose RUN steps run emulated has an emulator registered
    with the F flag (else the build would fail at its first RUN with "Exec format error").
    One that is missing is registered here when the build runs as root and `install` allows
    it (said in one line), as the kernel forgets them at reboot."""
    from polyarch.runtime import binfmt  # noqa: PLC0415

    needed = {
        v.platform: v for key, v in graph.vertices.items()
        if isinstance(v.op, ExecOp) and v.emulated and key in relevant
    }  # fmt: skip
    for platform, vertex in sorted(needed.items(), key=lambda kv: str(kv[0])):
        where = str(vertex.location) if vertex.location else ""
        state = binfmt.status(platform, machine)
        if state.kind == "native" or (state.kind == "emulated" and state.fix_binary):
            continue
        if state.kind == "unsupported":
            raise BuildError(f"{binfmt.unsupported(platform, machine)}; this stage runs RUN "
                             "steps", location=where)  # fmt: skip
        if install and os.geteuid() == 0 and not rootless():
            try:
                done = binfmt.ensure(platform, machine)
            except binfmt.EmulatorError as exc:
                raise BuildError(f"{platform} needs QEMU to run its RUN steps on this {machine} "
                                 f"machine: {exc}", location=where) from None  # fmt: skip
            if done:
                note(f"{done}: this build needs it (--no-emulator-install to refuse instead)")
            continue
        what = ("is registered without the F flag, which fails inside containers"
                if state.kind == "emulated" else "needs QEMU to run its RUN steps")  # fmt: skip
        how = "" if install else ", or leave out --no-emulator-install as root"
        raise BuildError(
            f"{platform} {what} on this {machine} machine: run 'polyarch emulators install "
            f"--platform {platform}' as root{how} (see 'polyarch doctor')",
            location=where,
        )


def _check_required(graph: BuildGraph, request: BuildRequest) -> None:
    """A required secret or SSH agent that was not given is an error before anything runs."""
    for vertex in graph.vertices.values():
        if not isinstance(vertex.op, ExecOp):
            continue
        for mount in vertex.op.mounts:
            where = str(vertex.location) if vertex.location else ""
            if (
                isinstance(mount, SecretMount)
                and mount.required
                and mount.id not in request.secrets
            ):
                raise BuildError(f"secret {mount.id!r} is required but was not given: pass "
                                 f"--secret id={mount.id},src=FILE (or env=VAR)",
                                 location=where)  # fmt: skip
            if isinstance(mount, SshMount) and mount.required and mount.id not in request.ssh:
                raise BuildError(f"SSH agent {mount.id!r} is required but was not given: pass "
                                 f"--ssh {mount.id}[=KEYFILE|SOCKET]", location=where)  # fmt: skip
