"""Layers unpacked ahead of need: when a step runs, the solver tells the worker of the images
the steps after it copy from, so a stage with no steps of its own, read late, is ready when its
reader comes. Nothing is told when nothing runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from polyarch.digest import Digest
from polyarch.frontend.convert import BaseImage, ConvertRequest, convert
from polyarch.frontend.dockerfile import load
from polyarch.graph.model import BuildGraph, Vertex
from polyarch.graph.ops import ImageSource
from polyarch.oci.config import ImageConfig
from polyarch.solver.cache import CachedLayer
from polyarch.solver.solve import Solver
from polyarch.worker.base import Job, LayerRef, Output, Result
from tests.unit.test_contract import AMD64, ARM64, RecordingWorker

TEXT = """\
FROM example.org/tool:1 AS tool
FROM example.org/base:1
RUN make one
RUN make two
COPY --from=tool /usr/bin/tool /usr/local/bin/tool
"""
DIGESTS = {"example.org/tool:1": "2" * 64, "example.org/base:1": "3" * 64}


def _layer(hex_: str) -> LayerRef:
    d = Digest.parse("sha256:" + hex_)
    return LayerRef(d, 1, d, "application/vnd.oci.image.layer.v1.tar+gzip")


class Worker(RecordingWorker):
    """Images with one layer each; records the order of steps run and prefetch hints."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.resolved = threading.Event()

    def resolve(self, vertex: Vertex, inputs: Sequence[Result]) -> Result:
        if isinstance(vertex.op, ImageSource):
            layer = _layer(vertex.op.digest[7:])
            if "tool" in vertex.op.ref:
                self.resolved.set()
            return Result("image:" + vertex.op.digest, (layer,), layer)
        return super().resolve(vertex, inputs)

    def execute(self, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
        # as in a build, where a step takes longer than resolving a stored image
        assert self.resolved.wait(10)
        with self.lock:
            self.order.append(f"{vertex.description} {vertex.platform}")
        return super().execute(vertex, inputs, job)

    def prefetch(self, layers: Sequence[LayerRef], platform: str) -> None:
        with self.lock:
            self.order.append(f"prefetch {layers[0].digest.hex[:1]} {platform}")
        super().prefetch(layers, platform)


def _graph(platforms: tuple[object, ...]) -> BuildGraph:
    images = {(name, str(p)): BaseImage("sha256:" + hex_, ImageConfig("linux", p.architecture))
              for name, hex_ in DIGESTS.items() for p in (AMD64, ARM64)}  # fmt: skip
    return convert(ConvertRequest(load(TEXT), platforms, AMD64, images=images))  # type: ignore[arg-type]


class Everything:
    """A cache that has every step."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def get(self, key: str) -> CachedLayer | None:
        return CachedLayer(None, 0, None, "", "2026-01-01T00:00:00Z")

    def put(self, key: str, layer: CachedLayer, description: str) -> None:
        pass


def test_a_step_that_runs_has_the_images_copied_from_later_made_ready() -> None:
    from tests.unit.test_contract import NoCache

    graph = _graph((AMD64, ARM64))
    worker = Worker()
    solver = Solver(graph, worker, NoCache(), created="2026-01-01T00:00:00Z")
    # as the builder asks: every stage instance (each on a thread of its own) and the images
    solver.solve([i.result for i in graph.stages] + list(graph.results.values()))
    order = worker.order
    for platform in ("linux/amd64", "linux/arm64"):
        hint = order.index(f"prefetch 2 {platform}")  # the tool stage's image, once
        assert order.count(f"prefetch 2 {platform}") == 1
        copy = order.index(f"COPY --from=tool /usr/bin/tool /usr/local/bin/tool {platform}")
        assert hint < copy, order
    # a step's own base is needed by the step itself, now: not a hint
    assert not any(d.startswith("prefetch 3") for d in order), order


def test_nothing_is_unpacked_ahead_when_every_step_is_cached() -> None:
    graph = _graph((AMD64,))
    worker = Worker()
    solver = Solver(graph, worker, Everything(), created="2026-01-01T00:00:00Z")
    worker.resolved.set()
    solver.solve([i.result for i in graph.stages] + list(graph.results.values()))
    assert worker.prefetched == [] and worker.order == []
