"""Solving a build graph: each vertex's effective key, the cache, the worker. Knows nothing of
Dockerfiles.

A filesystem step's effective key is its op's key and its inputs' effective keys (a download's
is its URL and checksum); a source's is what it is (an image's manifest digest, the digest of
the context files it selects), so
changing one copied file re-runs only the steps from there on. A cached step is used when its
layer is still at hand; otherwise the worker runs it and the cache learns the result (after the
layer is stored: a killed build leaves no entry a later build trusts wrongly).

A `Policy` may look at every vertex before it runs and stop the whole solve (build-once
raises when a stage it ran once turns out to produce native code). An `Explainer` is told
what every step's key is made of, and says why each step that runs is not cached (the
`cause` of its events).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from polyarch.errors import BuildError, PolyarchError, StepError
from polyarch.graph.model import BuildGraph, Vertex
from polyarch.graph.ops import (
    ContextSource,
    GitSource,
    HttpSource,
    ImageSource,
    Scratch,
    canonical,
    key_json,
)
from polyarch.progress import Event, Progress, silent
from polyarch.solver.cache import CacheBackend, CachedLayer, UnusableCacheEntry
from polyarch.solver.explain import Explainer, Files, StepRecord
from polyarch.solver.scheduler import Cancelled, Scheduler
from polyarch.worker.base import Job, LayerRef, Result, Worker


class Policy(Protocol):
    def before(self, vertex: Vertex, inputs: Sequence[Result]) -> None:
        """Called before a vertex runs (or is taken from the cache); may raise to stop."""


@dataclass(frozen=True, slots=True)
class SolveReport:
    results: dict[str, Result]
    steps_run: int
    steps_cached: int
    used_keys: frozenset[str]  # the cache entries the build used or made
    steps_imported: int = 0  # of the cached: hits in an imported cache


class Flights:
    """The steps the solves of one builder are running: a solve that needs a step another is
    running waits for it and takes the result from the cache, so targets built side by side
    (bake) run a step they share once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def hold(self, key: str, cancelled: threading.Event) -> Iterator[None]:
        with self._lock:
            lock = self._keys.setdefault(key, threading.Lock())
        while not lock.acquire(timeout=0.25):
            if cancelled.is_set():
                raise Cancelled("the build was cancelled")
        try:
            yield
        finally:
            lock.release()


def effective_key(vertex: Vertex, inputs: Sequence[Result]) -> str:
    h = hashlib.sha256(canonical(key_json(vertex.op)).encode("utf-8"))
    for result in inputs:
        h.update(b"\0" + result.key.encode())
    return "sha256:" + h.hexdigest()


class Solver:
    def __init__(
        self,
        graph: BuildGraph,
        worker: Worker,
        cache: CacheBackend,
        *,
        created: str,
        jobs: int = 1,
        progress: Progress = silent,
        no_cache: bool = False,
        policy: Policy | None = None,
        no_cache_stages: frozenset[str] = frozenset(),
        explainer: Explainer | None = None,
        flights: Flights | None = None,
    ) -> None:
        self.graph = graph
        self.worker = worker
        self.cache = cache
        self.created = created  # the creation time of steps run now
        self.progress = progress
        self.no_cache = no_cache
        self.policy = policy
        self.explainer = explainer
        self.flights = flights
        self.scheduler: Scheduler[Result] = Scheduler(self._inputs, self._compute, slots=jobs)
        self._stages = {key: inst.stage for inst in reversed(graph.stages) for key in inst.vertices}
        # `--no-cache-filter`: these stages run anew, and so does every step that takes from
        # them (their results are keyed by the step, not by the content it made).
        self._fresh = graph.downstream(k for k, s in self._stages.items() if s in no_cache_stages)
        self._positions: dict[str, str] = {}
        # A step's place, the same from one build to the next while the Dockerfile keeps
        # its shape: platform, stage, number in the stage (what explanations compare).
        self._idents: dict[str, str] = {}
        self._shared: dict[str, str] = {}  # build-once steps: the platforms they serve
        for inst in reversed(graph.stages):
            if inst.mode == "build-once" and len(inst.targets) > 1:
                served = ", ".join(t.architecture + (f"/{t.variant}" if t.variant else "")
                                   for t in inst.targets)  # fmt: skip
                self._shared.update(dict.fromkeys(inst.vertices, served))
            shown = [k for k in inst.vertices if not graph.vertices[k].internal]
            for n, key in enumerate(shown, 1):
                self._positions[key] = f"{n}/{len(shown)}"
                self._idents[key] = f"{inst.platform} {inst.stage} {n}"
        self._lock = threading.Lock()
        self.steps_run = 0
        self.steps_cached = 0
        self.steps_imported = 0  # of the cached: hits in an imported cache
        self.used: set[str] = set()

    def solve(self, roots: Sequence[str]) -> SolveReport:
        try:
            results = self.scheduler.solve(roots)
        except BuildError as exc:
            # Every failure is told, not only the first: the other platform's own error too.
            others = tuple(e for _key, e in self.scheduler.failures
                           if isinstance(e, BuildError) and e is not exc)  # fmt: skip
            if others:
                raise exc.with_others(others) from None
            raise
        return SolveReport(results, self.steps_run, self.steps_cached, frozenset(self.used),
                           self.steps_imported)  # fmt: skip

    def cancel(self) -> None:
        self.scheduler.cancel()

    def result(self, key: str) -> Result:
        return self.scheduler.evaluate(key)

    def finished(self, key: str) -> Result | None:
        """The result if this solve computed it (nothing is computed for the asking)."""
        return self.scheduler.finished(key)

    def _inputs(self, key: str) -> Sequence[str]:
        return self.graph.vertices[key].inputs

    def _event(self, kind: str, vertex: Vertex, **extra: object) -> None:
        self.progress(Event(kind, vertex.key, vertex.description,  # type: ignore[arg-type]
                            self._stages.get(vertex.key, ""), str(vertex.platform),
                            emulated=vertex.emulated,
                            position=self._positions.get(vertex.key, ""),
                            shared=self._shared.get(vertex.key, ""), **extra))  # type: ignore[arg-type]  # fmt: skip

    def _compute(self, key: str, inputs: list[Result]) -> Result:
        vertex = self.graph.vertices[key]
        if vertex.kind == "merge":
            layers = tuple(layer for result in inputs for layer in result.layers)
            return Result(effective_key(vertex, inputs), layers, inputs[-1].layer,
                          inputs[-1].created, cache=inputs[-1].cache)  # fmt: skip
        if vertex.kind == "source" and not isinstance(vertex.op, HttpSource):
            try:
                return self.worker.resolve(vertex, inputs)
            except UnusableCacheEntry:
                raise
            except PolyarchError as exc:
                raise self._failed(vertex, exc) from None
        eff = effective_key(vertex, inputs)
        fresh = self.no_cache or vertex.key in self._fresh
        cached = None if fresh else self._cached(eff)
        record = self._record(vertex, inputs, eff)
        if cached is None and not fresh and self.flights is not None:
            # Another solve of this builder (a bake target) may be running the same step: wait
            # for it, then take its result from the cache.
            with self.flights.hold(eff, self.scheduler.cancelled):
                cached = self._cached(eff)
                if cached is None:
                    return self._run(vertex, inputs, eff, fresh, record)
        if cached is None:
            return self._run(vertex, inputs, eff, fresh, record)
        if record is not None and self.explainer is not None:
            self.explainer.add(*record)
        base = inputs[0].layers if inputs else ()
        layer = _ref(cached)
        imported = bool(cached.origin)
        if imported:  # kept here at once; its layer is fetched when a build needs it
            self.cache.put(eff, dataclasses.replace(cached, origin=""), vertex.description)
        with self._lock:
            self.steps_cached += 1
            self.steps_imported += imported
            self.used.add(eff)
        if not vertex.internal:
            self._event("cached", vertex, cache="imported" if imported else "local",
                        text=f"imported from {cached.origin}" if imported else "")  # fmt: skip
        layers = (*base, layer) if layer else base
        return Result(eff, layers, layer, cached.created,
                      cache="imported" if imported else "local")  # fmt: skip

    def _run(
        self,
        vertex: Vertex,
        inputs: list[Result],
        eff: str,
        fresh: bool,
        record: tuple[StepRecord, dict[str, Files]] | None,
    ) -> Result:
        base = inputs[0].layers if inputs else ()
        # The policy looks at what a step takes only when the step runs: a cached result was
        # made after the same check passed on the same inputs (its key covers them).
        if self.policy is not None:
            self.policy.before(vertex, inputs)
        clock = [time.monotonic()]  # the step's own time starts when it has its slot

        def waiting(wait: bool) -> None:
            if not wait:
                clock[0] = time.monotonic()
            if not vertex.internal:
                self._event("waiting" if wait else "running", vertex)

        job = Job(self.scheduler.gate.slot, self.scheduler.cancelled,
                  log=lambda line: self._event("log", vertex, text=line),
                  note=lambda text: self._event("note", vertex, text=text),
                  waiting=waiting)  # fmt: skip
        cause = ""
        if record is not None and self.explainer is not None:
            if self.no_cache:
                self.explainer.add(*record)
                cause = "--no-cache"
            elif fresh:
                self.explainer.add(*record)
                cause = "--no-cache-filter: its stage, or one it takes from, runs anew"
            else:
                cause = self.explainer.why(*record)
        if not vertex.internal:
            self._event("start", vertex, cause=cause)
        try:
            output = self.worker.execute(vertex, inputs, job)
        except (Cancelled, UnusableCacheEntry):
            raise
        except PolyarchError as exc:
            # Once the build is being cancelled, an error may be its consequence (a transfer
            # cut short); a step that failed on its own (StepError: its process exited
            # non-zero before it was stopped) is a failure of its own, told with the first.
            if self.scheduler.cancelled.is_set() and not isinstance(exc, BuildError | StepError):
                raise Cancelled(str(exc)) from None
            raise self._failed(vertex, exc) from None
        layer = output.layer
        entry = CachedLayer(
            layer.digest if layer else None, layer.size if layer else 0,
            layer.diff_id if layer else None, layer.media_type if layer else "", self.created,
        )  # fmt: skip
        self.cache.put(eff, entry, vertex.description)
        with self._lock:
            self.steps_run += 1
            self.used.add(eff)
        if not vertex.internal:
            self._event("done", vertex, seconds=time.monotonic() - clock[0], cache="run",
                        cause=cause)  # fmt: skip
        layers = (*base, layer) if layer else base
        return Result(eff, layers, layer, self.created, cache="run")

    def _record(
        self, vertex: Vertex, inputs: Sequence[Result], key: str
    ) -> tuple[StepRecord, dict[str, Files]] | None:
        """What the step's key is made of, for the explainer (None: not a step of a stage)."""
        ident = self._idents.get(vertex.key)
        if self.explainer is None or ident is None:
            return None
        described = []
        contexts: dict[str, Files] = {}
        for used, result in zip(vertex.inputs, inputs, strict=True):
            item = self._describe(used, result)
            if result.files is not None:
                contexts[result.key] = result.files
            described.append(item)
        step = StepRecord(ident, vertex.description, key, key_json(vertex.op), tuple(described),
                          str(vertex.location) if vertex.location else "")  # fmt: skip
        return step, contexts

    def _describe(self, key: str, result: Result) -> dict[str, object]:
        """An input of a step, as explanations compare it."""
        vertex = self.graph.vertices[key]
        op = vertex.op
        if isinstance(op, ImageSource):
            return {"kind": "image", "key": result.key, "ref": op.ref, "digest": op.digest}
        if isinstance(op, ContextSource):
            return {"kind": "context", "key": result.key, "name": op.name,
                    "selects": key_json(op)}  # fmt: skip
        if isinstance(op, GitSource):
            return {"kind": "git", "key": result.key, "remote": op.remote, "ref": op.ref}
        if isinstance(op, HttpSource):
            return {"kind": "http", "key": result.key, "url": op.url}
        if isinstance(op, Scratch):
            return {"kind": "scratch", "key": result.key}
        if key in self._idents:
            where = f"{self._stages.get(key, '')} {self._positions.get(key, '')}".strip()
            return {"kind": "step", "key": result.key, "description": vertex.description,
                    "where": where}  # fmt: skip
        return {"kind": "internal", "key": result.key, "op": key_json(op)}

    def _cached(self, key: str) -> CachedLayer | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        layer = _ref(hit)
        if layer is not None and not self.worker.load(layer, hit.source):
            return None
        return hit

    def _failed(self, vertex: Vertex, exc: PolyarchError) -> BuildError:
        if isinstance(exc, BuildError):
            return exc
        stage = self._stages.get(vertex.key, "")
        message = str(exc)
        self._event("error", vertex, text=message)
        return BuildError(message, location=str(vertex.location) if vertex.location else "",
                          stage=stage, platform=str(vertex.platform),
                          kind=exc.kind if isinstance(exc, StepError) else "")  # fmt: skip


def _ref(entry: CachedLayer) -> LayerRef | None:
    if entry.digest is None or entry.diff_id is None:
        return None
    return LayerRef(entry.digest, entry.size, entry.diff_id, entry.media_type)
