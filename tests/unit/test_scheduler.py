"""The scheduler and the solver with fake work: no Dockerfile, no root, no runtime."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from polyarch.build import NativeOutput, solve_with_replanning
from polyarch.concurrency import PriorityGate
from polyarch.errors import BuildError, PolyarchError, StepError
from polyarch.graph.model import BuildGraph, Vertex
from polyarch.platform import Platform
from polyarch.solver.scheduler import Cancelled, Scheduler
from polyarch.solver.solve import SolveReport

AMD64 = Platform.parse("linux/amd64")

# a -> (b, c); b -> d; c -> d
GRAPH = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}


def test_inputs_first_and_each_once() -> None:
    order: list[str] = []
    lock = threading.Lock()

    def compute(key: str, inputs: list[str]) -> str:
        with lock:
            order.append(key)
        time.sleep(0.01)
        return key + "(" + ",".join(inputs) + ")"

    scheduler: Scheduler[str] = Scheduler(lambda k: GRAPH[k], compute, slots=4)
    results = scheduler.solve(["a", "b", "c"])
    assert results["a"] == "a(b(d()),c(d()))"
    assert sorted(order) == ["a", "b", "c", "d"]  # d once, though b and c both wait for it
    assert order.index("d") < order.index("b") < order.index("a")


def test_independent_roots_run_side_by_side() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def compute(key: str, _inputs: list[str]) -> str:
        barrier.wait()  # only passes if both run at once
        return key

    scheduler: Scheduler[str] = Scheduler(lambda _k: [], compute)
    assert scheduler.solve(["x", "y"]) == {"x": "x", "y": "y"}


def test_first_failure_cancels_the_rest_and_is_raised() -> None:
    started: list[str] = []
    saw_cancel = threading.Event()

    def compute(key: str, _inputs: list[str]) -> str:
        started.append(key)
        if key == "bad":
            time.sleep(0.05)
            raise StepError("bad step")
        if key == "slow" and scheduler.cancelled.wait(5):
            saw_cancel.set()
            raise Cancelled("stopped")
        return key

    graph = {"bad": [], "slow": [], "later": ["slow"]}
    scheduler: Scheduler[str] = Scheduler(lambda k: graph[k], compute)
    with pytest.raises(StepError, match="bad step"):
        scheduler.solve(["bad", "later"])
    assert saw_cancel.is_set()
    assert "later" not in started  # never started: its input was stopped
    assert next(k for k, _e in scheduler.failures) == "bad"


def test_gate_gives_free_slots_to_the_most_urgent() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with gate.slot():
            holding.set()
            release.wait(5)

    def waiter(name: str, priority: int) -> None:
        with gate.slot(priority):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    holding.wait(5)
    threads = [threading.Thread(target=waiter, args=("native", 0)),
               threading.Thread(target=waiter, args=("emulated", 1))]  # fmt: skip
    for t in threads:
        t.start()
        time.sleep(0.05)
    release.set()
    for t in [first, *threads]:
        t.join(5)
    assert order == ["emulated", "native"]


def test_build_once_replans_with_the_stage_per_platform() -> None:
    graphs: list[frozenset[str]] = []
    notes: list[str] = []

    def make(per_platform: frozenset[str]) -> BuildGraph:
        graphs.append(per_platform)
        return BuildGraph((AMD64,), AMD64, "t", {}, (), {})

    def solve(_graph: BuildGraph) -> SolveReport:
        if not graphs[-1]:
            raise NativeOutput("tools", AMD64, "bin/tool", "an ELF binary")
        return SolveReport({}, 1, 0, frozenset())

    _graph, report = solve_with_replanning(make, solve, lambda s, p, path, why: notes.append(s))
    assert graphs == [frozenset(), frozenset({"tools"})]
    assert notes == ["tools"] and report.steps_run == 1


def test_replanning_stops_when_nothing_changes() -> None:
    def make(_per_platform: frozenset[str]) -> BuildGraph:
        return BuildGraph((AMD64,), AMD64, "t", {}, (), {})

    def solve(_graph: BuildGraph) -> SolveReport:
        raise NativeOutput("tools", AMD64, "bin/tool", "an ELF binary")

    with pytest.raises(BuildError, match="still makes native code"):
        solve_with_replanning(make, solve, lambda *_a: None)


def test_solver_names_the_step_that_failed() -> None:
    from polyarch.graph.ops import ExecOp, Scratch
    from polyarch.solver.solve import Solver
    from polyarch.worker.base import Job, LayerRef, Output, Result, WorkerPlatforms

    scratch = Vertex(Scratch(), (), "FROM scratch", AMD64)
    run = Vertex(ExecOp(("false",), (), "/", AMD64), (scratch.key,), "RUN false", AMD64)
    graph = BuildGraph((AMD64,), AMD64, "t", {scratch.key: scratch, run.key: run}, (), {})

    class Failing:
        def platforms(self) -> WorkerPlatforms:
            return WorkerPlatforms((AMD64,))

        def resolve(self, vertex: Vertex, inputs: Sequence[Result]) -> Result:
            return Result(vertex.key)

        def execute(self, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
            raise StepError("RUN false exited with status 1")

        def load(self, layer: LayerRef) -> bool:
            return True

    class Empty:
        def get(self, key: str) -> None:
            return None

        def put(self, *args: object) -> None:
            raise AssertionError("a failed step is never cached")

    events: list[str] = []
    solver = Solver(graph, Failing(), Empty(), created="t",  # type: ignore[arg-type]
                    progress=lambda e: events.append(e.kind))  # fmt: skip
    with pytest.raises(PolyarchError, match="RUN false exited with status 1") as caught:
        solver.solve([run.key])
    assert isinstance(caught.value, BuildError) and caught.value.platform == "linux/amd64"
    assert events == ["start", "error"]
