"""What a node-aware build solves: the build-once stages sent to the nodes (`shared_stages`),
and the warm-up a node runs while it waits for them (every step that does not depend on
them)."""

from __future__ import annotations

from pathlib import Path

from polyarch.build import BuildRequest, _targets, shared_stages
from polyarch.frontend.convert import ConvertRequest, NamedContext, convert
from polyarch.frontend.dockerfile import load
from polyarch.platform import Platform

AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")

DOCKERFILE = """\
FROM node AS js
RUN build
FROM node AS base
RUN base
FROM base AS derived
RUN derived
FROM nginx
RUN apt-get install x
COPY --from=js /dist /www
COPY --from=derived /d /d
RUN after-copy
"""


def test_shared_stages_are_named_build_once_stages_taken_by_others() -> None:
    df = load(DOCKERFILE)
    graph = convert(ConvertRequest(df, (ARM64,), AMD64))
    # js: build-once, taken by the final stage. base: built FROM by derived. derived:
    # build-once and taken.
    assert sorted(shared_stages(graph, df)) == ["derived", "js"]


def test_a_warm_up_runs_what_does_not_wait_for_the_pending_stages() -> None:
    df = load(DOCKERFILE)
    contexts = {"js": NamedContext("layout", "/pending/js:stage"),
                "derived": NamedContext("layout", "/pending/derived:stage")}  # fmt: skip
    graph = convert(ConvertRequest(df, (ARM64,), ARM64, contexts=contexts))
    request = BuildRequest(df, Path("."), Path("Dockerfile"), (ARM64,), ARM64,
                           contexts=contexts, pending=frozenset(contexts))  # fmt: skip
    warm = {graph.vertices[k].description for k in _targets(graph, request, "warm")}
    assert "RUN apt-get install x" in warm
    assert not any(d.startswith("COPY") or "after-copy" in d for d in warm)
    assert not any("build" in d or "derived" in d for d in warm)  # replaced stages: not run
