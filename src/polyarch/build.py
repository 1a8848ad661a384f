"""A build, start to end: resolve base images, convert the Dockerfile into a graph, solve it on
a worker, assemble each platform's image and the index, keep them in the store.

Build-once is a policy of the solve: before a step takes files from a stage that ran once for
every platform, what it takes is checked for native code; if there is some, the solve stops
and the graph is made again with that stage per platform (finished steps come from the cache).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.concurrency import wait_all
from polyarch.errors import BuildError, DockerfileError, PolyarchError
from polyarch.frontend.convert import BaseImage, ConvertRequest, convert
from polyarch.frontend.dockerfile import Dockerfile, read_patterns
from polyarch.frontend.dockerfile.ignore import ignore_file_for
from polyarch.graph.model import BuildGraph, OnceCheck, Vertex
from polyarch.graph.ops import ImageSource
from polyarch.image.assemble import image_config, timestamp, write_image, write_index
from polyarch.oci.config import ImageConfig
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Descriptor, Index, Manifest
from polyarch.platform import Platform
from polyarch.progress import Event, Progress, silent
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.runtime import Executor
from polyarch.solver.cache import SqliteCache
from polyarch.solver.solve import Solver, SolveReport
from polyarch.store.workspace import Workspace
from polyarch.worker.base import Result
from polyarch.worker.local.filecopy import CopyError, select_sources
from polyarch.worker.local.native import find_native
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
    build_once: str | frozenset[str] = "auto"
    ca_certs: Path | None = None  # a CA bundle on the host for RUN steps to trust
    allow: frozenset[str] = frozenset()  # entitlements (security.insecure)


@dataclass(frozen=True, slots=True)
class PlatformImage:
    platform: Platform
    descriptor: Descriptor  # the manifest
    size: int  # config and layers, compressed


@dataclass(frozen=True, slots=True)
class BuildResult:
    descriptor: Descriptor  # the manifest (one platform) or index (several), in the store
    manifests: Mapping[Platform, Descriptor]
    graph: BuildGraph
    steps_run: int
    steps_cached: int
    seconds: float = 0.0
    images: tuple[PlatformImage, ...] = ()
    cache_keys: frozenset[str] = frozenset()  # every cached step the build used or made
    warnings: tuple[str, ...] = ()


class NativeOutput(PolyarchError):
    """Not a failure: a build-once stage's output holds native code, so the build plans again
    with that stage per platform."""

    def __init__(self, stage: str, platform: Platform, path: str, why: str) -> None:
        super().__init__(f"/{path} is {why}")
        self.stage, self.platform, self.path, self.why = stage, platform, path, why


class BuildOncePolicy:
    """Checks what steps take from build-once stages (each selection once per build)."""

    def __init__(self, graph: BuildGraph, worker: LocalWorker) -> None:
        self.graph = graph
        self.worker = worker
        self._checked: set[tuple[str, tuple[str, ...]]] = set()
        self._lock = threading.Lock()

    def before(self, vertex: Vertex, inputs: Sequence[Result]) -> None:
        for check in self.graph.once_checks.get(vertex.key, ()):
            self._check(check, inputs[check.input])

    def _check(self, check: OnceCheck, source: Result) -> None:
        marker = (check.source, check.paths)
        with self._lock:
            if marker in self._checked:
                return
        with self.worker.view(source.layers) as root:
            try:
                selected = select_sources(root, list(check.paths), None)
            except CopyError:
                selected = []  # the step itself will report it
            found = find_native(root, selected)
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


class Builder:
    def __init__(
        self,
        workspace: Workspace,
        registry: RegistryClient,
        *,
        progress: Progress = silent,
        executor: Executor | None = None,
    ) -> None:
        self.workspace = workspace
        self.layout = workspace.layout
        self.blobs = self.layout.blobs
        self.registry = registry
        self.progress = progress
        self._executor = executor
        self.cache = SqliteCache(
            workspace.cache_db, warn=lambda text: progress(Event("note", "", "cache", text=text))
        )

    def build(self, request: BuildRequest) -> BuildResult:
        with self.workspace.exclusive():
            from polyarch.store.gc import clear_stale  # noqa: PLC0415

            clear_stale(self.workspace)
            return self._build(request)

    def _build(self, request: BuildRequest) -> BuildResult:
        started = time.monotonic()
        ignore = _ignore_patterns(request)
        base = ConvertRequest(
            request.dockerfile, request.platforms, request.build_platform,
            dict(request.build_args), request.target, {}, request.build_once, frozenset(),
            ignore, request.allow, dict(request.labels),
        )  # fmt: skip
        draft = convert(base)
        wanted = sorted({
            (v.op.ref, str(v.op.platform))
            for v in draft.vertices.values()
            if isinstance(v.op, ImageSource)
        })  # fmt: skip
        with ThreadPoolExecutor(max_workers=4) as pool:  # base images pulled side by side
            resolving = [pool.submit(self._resolve_base, *key) for key in wanted]
            wait_all(resolving)
        images = {key: f.result() for key, f in zip(wanted, resolving, strict=True)}
        epoch = request.source_date_epoch
        now = timestamp(epoch)
        session = BuildSession({"context": request.context}, RunSettings(request.ca_certs), epoch)
        worker = LocalWorker(
            self.workspace, session, request.build_platform, executor=self._executor,
            on_note=lambda text: self.progress(Event("note", "", "snapshots", text=text)),
        )  # fmt: skip
        solvers: list[Solver] = []

        def make(per_platform: frozenset[str]) -> BuildGraph:
            return convert(dataclasses.replace(base, images=images, per_platform=per_platform))

        def solve(graph: BuildGraph) -> SolveReport:
            solver = Solver(
                graph, worker, self.cache, created=now, jobs=request.jobs,
                progress=self.progress, no_cache=request.no_cache,
                policy=BuildOncePolicy(graph, worker),
            )  # fmt: skip
            solvers.append(solver)
            return solver.solve(
                [inst.result for inst in graph.stages] + list(graph.results.values())
            )

        def replanned(stage: str, platform: Platform, path: str, why: str) -> None:
            why = f"/{path} is {why}: stage {stage} is built per platform"
            self.progress(Event("note", "", f"stage {stage}", stage, str(platform), why))

        graph, report = solve_with_replanning(make, solve, replanned)
        solver = solvers[-1]
        manifests: dict[Platform, Descriptor] = {}
        platform_images: list[PlatformImage] = []
        for platform in request.platforms:
            spec = graph.images[platform]
            config = image_config(spec, solver.result, now=now, epoch=epoch)
            descriptor = write_image(self.layout, spec, config, solver.result(spec.result))
            manifests[platform] = descriptor
            size = sum(layer.size for layer in solver.result(spec.result).layers)
            platform_images.append(
                PlatformImage(platform, descriptor, size + len(config.to_bytes()))
            )
        top = write_index(self.layout, manifests)
        return BuildResult(
            top, manifests, graph, report.steps_run, report.steps_cached,
            time.monotonic() - started, tuple(platform_images), report.used_keys,
            tuple(str(w) for w in graph.warnings),
        )  # fmt: skip

    # base images -------------------------------------------------------------------------

    def _resolve_base(self, image: str, platform_text: str) -> BaseImage:
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
        if document.config.size > MAX_DOCUMENT_SIZE:
            raise BuildError(f"{image}: its config is {document.config.size} bytes, over the "
                             f"{MAX_DOCUMENT_SIZE} limit for configs; refusing it")  # fmt: skip
        self.layout.write_document(document.raw)
        for blob in document.blobs():
            if not self.blobs.has(blob.digest, blob.size):
                self.blobs.ingest(self.registry.get_blob(ref, blob), blob.digest, blob.size)
        config = ImageConfig.parse(
            self.blobs.read_bytes(document.config.digest, document.config.size),
            f"config of {image}",
        )
        if len(config.diff_ids) != len(document.layers):
            raise BuildError(
                f"{image}: its config lists {len(config.diff_ids)} layers (rootfs.diff_ids), "
                f"its manifest {len(document.layers)}"
            )
        self.progress(
            Event("done", "", description, platform=platform_text,
                  seconds=time.monotonic() - started)
        )  # fmt: skip
        return BaseImage(str(digest), config)


def _ignore_patterns(request: BuildRequest) -> tuple[str, ...]:
    from polyarch.api import read_context_file  # noqa: PLC0415

    for candidate in ignore_file_for(str(request.dockerfile_path), str(request.context)):
        path = Path(candidate)
        if path.is_file() or path.is_symlink():
            try:
                text = read_context_file(path).decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                raise DockerfileError(f"cannot read: {reason}", path=str(path)) from None
            return read_patterns(text, str(path))
    return ()
