"""A step that fails on two platforms at once: the error names stage and platform and carries
the other platform's failure; progress events carry the step's position in its stage."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from polyarch.errors import BuildError, StepError
from polyarch.frontend.convert import BaseImage, ConvertRequest, convert
from polyarch.frontend.dockerfile import load
from polyarch.graph.model import Vertex
from polyarch.graph.ops import ExecOp
from polyarch.oci.config import ImageConfig
from polyarch.progress import Event
from polyarch.solver.solve import Solver
from polyarch.worker.base import Job, Output, Result
from tests.unit.test_contract import AMD64, ARM64, BASE, NoCache, RecordingWorker


class FailingTogether(RecordingWorker):
    """Every RUN fails, both platforms' at the same moment (a barrier), so that neither is
    cancelled by the other's failure first."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=10)

    def execute(self, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
        if isinstance(vertex.op, ExecOp):
            with job.slot():
                self.barrier.wait()
            raise StepError(f"{vertex.description} exited with status 3")
        return super().execute(vertex, inputs, job)


def test_both_platforms_failures_are_told() -> None:
    text = "FROM " + BASE + " AS build\nWORKDIR /src\nRUN false\n"
    images = {(BASE, str(p)): BaseImage("sha256:" + "1" * 64, ImageConfig("linux", p.architecture))
              for p in (AMD64, ARM64)}  # fmt: skip
    graph = convert(ConvertRequest(load(text), (AMD64, ARM64), AMD64, images=images))
    events: list[Event] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            events.append(event)

    solver = Solver(graph, FailingTogether(), NoCache(), created="2026-01-01T00:00:00Z",
                    jobs=2, progress=record)  # fmt: skip
    with pytest.raises(BuildError) as caught:
        solver.solve([i.result for i in graph.stages])
    err = caught.value
    assert err.location.endswith(":3") and err.stage == "build"
    platforms = {err.platform, *(o.platform for o in err.others)}
    assert platforms == {"linux/amd64", "linux/arm64"}
    runs = [e for e in events if e.description == "RUN false"]
    assert {e.kind for e in runs} >= {"start", "waiting", "running", "error"}
    assert {e.position for e in runs} == {"3/3"}  # after FROM and WORKDIR
