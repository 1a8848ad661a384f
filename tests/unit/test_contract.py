"""The contract between the frontend and the worker: every instruction and every flag the
frontend accepts either reaches the worker (a recording worker sees it in what the local
worker would run) or the build refuses it with an error naming it. A flag added to the
frontend without a case here fails `test_every_flag_has_a_case`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from polyarch.errors import BuildError, DockerfileError
from polyarch.frontend.convert import BaseImage, ConvertRequest, convert
from polyarch.frontend.dockerfile import load
from polyarch.frontend.dockerfile.instructions import _FLAGS
from polyarch.frontend.dockerfile.syntax import INSTRUCTIONS
from polyarch.graph.model import BuildGraph, ImageSpec, Vertex
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
)
from polyarch.oci.config import ImageConfig
from polyarch.platform import Platform
from polyarch.runtime import ProcessSpec
from polyarch.solver.cache import CachedLayer
from polyarch.solver.solve import Solver
from polyarch.worker.base import Job, LayerRef, Output, Result, WorkerPlatforms
from polyarch.worker.local.filecopy import CopyOptions
from polyarch.worker.local.run import RunSettings, StepMounts, process_spec
from polyarch.worker.local.worker import copy_options

AMD64 = Platform.parse("linux/amd64")
PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
}
ARM64 = Platform.parse("linux/arm64")
BASE = "docker.io/library/debian:latest"
NGINX = "docker.io/library/nginx:latest"


@dataclass
class Recorded:
    processes: list[ProcessSpec] = field(default_factory=list)
    copies: list[tuple[Copy, CopyOptions]] = field(default_factory=list)
    actions: list[object] = field(default_factory=list)
    ops: list[object] = field(default_factory=list)


class RecordingWorker:
    """Executes nothing; records what the local worker would run, through its own pure
    translations (process_spec, copy_options, check_mounts)."""

    def __init__(self) -> None:
        self.seen = Recorded()
        self.lock = threading.Lock()

    def platforms(self) -> WorkerPlatforms:
        return WorkerPlatforms((AMD64,), (ARM64,))

    def resolve(self, vertex: Vertex, inputs: Sequence[Result]) -> Result:
        op = vertex.op
        if isinstance(op, ContextSource):
            return Result("context:" + "|".join(op.includes), context=op)
        if isinstance(op, ImageSource):
            return Result("image:" + op.digest)
        return Result(vertex.key)

    def execute(self, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
        op = vertex.op
        with self.lock:
            self.seen.ops.append(op)
            if isinstance(op, ExecOp):
                self.seen.processes.append(
                    process_spec(op, (0, 0, ()), StepMounts(), RunSettings(), init=None,
                                 seccomp=PROFILE if op.security != "insecure" else None)
                )  # fmt: skip
            elif isinstance(op, FileOp):
                for action in op.actions:
                    self.seen.actions.append(action)
                    if isinstance(action, Copy):
                        self.seen.copies.append((action, copy_options(action, (1, 2))))
            elif not isinstance(op, HttpSource):
                raise AssertionError(f"unexpected op {op}")
        digest = "sha256:" + vertex.key[7:]
        from polyarch.digest import Digest

        d = Digest.parse(digest)
        return Output(LayerRef(d, 1, d, "application/vnd.oci.image.layer.v1.tar+gzip"))

    def load(self, layer: LayerRef) -> bool:
        return True


class NoCache:
    def get(self, key: str) -> CachedLayer | None:
        return None

    def put(self, key: str, layer: CachedLayer, description: str) -> None:
        pass


def build(text: str, **kw: object) -> tuple[BuildGraph, Recorded]:
    images = {
        (name, str(p)): BaseImage("sha256:" + "1" * 64, ImageConfig("linux", p.architecture))
        for name in (BASE, NGINX)
        for p in (AMD64, ARM64)
    }
    graph = convert(ConvertRequest(load(text), (AMD64,), AMD64, images=images, **kw))  # type: ignore[arg-type]
    worker = RecordingWorker()
    solver = Solver(graph, worker, NoCache(), created="2026-01-01T00:00:00Z")
    solver.solve(list(graph.results.values()) + [i.result for i in graph.stages])
    return graph, worker.seen


def image_of(graph: BuildGraph) -> ImageSpec:
    return graph.images[AMD64]


def ok(text: str, check: Callable[[BuildGraph, Recorded], bool], **kw: object) -> None:
    graph, seen = build(text, **kw)
    assert check(graph, seen), (text, seen)


def refused(text: str, fragment: str, **kw: object) -> None:
    with pytest.raises((DockerfileError, BuildError)) as caught:
        build(text, **kw)
    assert fragment in str(caught.value)
    assert "Dockerfile:" in str(caught.value)


def process(seen: Recorded) -> ProcessSpec:
    [spec] = seen.processes
    return spec


def copy(seen: Recorded) -> tuple[Copy, CopyOptions]:
    [pair] = seen.copies
    return pair


F = "FROM debian\n"

FLAG_CASES: dict[tuple[str, str], Callable[[], None]] = {
    ("FROM", "platform"): lambda: ok(
        "FROM --platform=linux/arm64 debian\nRUN true\n",
        lambda g, s: (
            process(s)
            and g.vertices[next(k for k, v in g.vertices.items() if v.kind == "exec")].platform
            == ARM64
        ),
    ),
    ("RUN", "mount"): lambda: ok(
        F + "RUN --mount=type=cache,target=/c,id=x,sharing=locked --mount=type=tmpfs,target=/t"
        " --mount=type=secret,id=s --mount=type=ssh --mount=type=bind,source=a,target=/a true\n",
        lambda g, s: (
            [type(m).__name__ for o in s.ops if isinstance(o, ExecOp) for m in o.mounts]
            == ["CacheMount", "TmpfsMount", "SecretMount", "SshMount", "BindMount"]
        ),
    ),
    ("RUN", "network"): lambda: ok(
        F + "RUN --network=none true\n",
        lambda g, s: process(s).private_network and process(s).seccomp is not None,
    ),
    ("RUN", "security"): lambda: ok(
        F + "RUN --security=insecure true\n",
        lambda g, s: process(s).privileged and process(s).seccomp is None,
        allow=frozenset({"security.insecure"}),
    ),
    ("RUN", "device"): lambda: refused(F + "RUN --device=/dev/fuse true\n", "RUN --device"),
    ("COPY", "chown"): lambda: ok(
        F + "COPY --chown=1:2 a /a\n", lambda g, s: copy(s)[1].chown == (1, 2)
    ),
    ("COPY", "chmod"): lambda: ok(
        F + "COPY --chmod=0751 a /a\n", lambda g, s: copy(s)[1].chmod == 0o751
    ),
    ("COPY", "from"): lambda: ok(
        "FROM debian AS x\nRUN true\n" + F + "COPY --from=x /a /a\n",
        lambda g, s: copy(s)[1].keep_owner,
    ),
    ("COPY", "link"): lambda: ok(
        F + "RUN true\nCOPY --link a /a\n",
        lambda g, s: g.vertices[image_of(g).result].kind == "merge" and copy(s)[0].link,
    ),
    ("COPY", "parents"): lambda: ok(
        F + "COPY --parents a/b /x/\n", lambda g, s: copy(s)[1].parents
    ),
    ("COPY", "exclude"): lambda: ok(
        F + "COPY --exclude=*.log a /a\n", lambda g, s: copy(s)[0].excludes == ("*.log",)
    ),
    ("ADD", "chown"): lambda: ok(
        F + "ADD --chown=1:2 a /a\n", lambda g, s: copy(s)[1].chown == (1, 2)
    ),
    ("ADD", "chmod"): lambda: ok(
        F + "ADD --chmod=600 a /a\n", lambda g, s: copy(s)[1].chmod == 0o600
    ),
    ("ADD", "link"): lambda: ok(F + "ADD --link a /a\n", lambda g, s: copy(s)[0].link),
    ("ADD", "keep-git-dir"): lambda: ok(
        F + "ADD --keep-git-dir=true https://example.invalid/r.git#v1:sub /src\n",
        lambda g, s: (
            [
                (v.op.remote, v.op.ref, v.op.subdir, v.op.keep_git_dir)
                for v in g.vertices.values()
                if isinstance(v.op, GitSource)
            ]
            == [("https://example.invalid/r.git", "v1", "sub", True)]
            and copy(s)[0].sources == ("/",)
            and not copy(s)[0].keep_owner
        ),
    ),
    ("ADD", "checksum"): lambda: ok(
        F + f"ADD --checksum=sha256:{'a' * 64} https://example.invalid/f.tgz /f\n",
        lambda g, s: any(
            isinstance(o, HttpSource) and o.checksum == "sha256:" + "a" * 64 for o in s.ops
        ),
    ),
    ("ADD", "exclude"): lambda: ok(
        F + "ADD --exclude=x a /a\n", lambda g, s: copy(s)[0].excludes == ("x",)
    ),
    ("ADD", "unpack"): lambda: ok(
        F + "ADD --unpack=false a.tar /a/\n", lambda g, s: not copy(s)[1].unpack_archives
    ),
    ("HEALTHCHECK", "interval"): lambda: ok(
        F + "HEALTHCHECK --interval=2s CMD true\n",
        lambda g, s: image_of(g).config.healthcheck.interval == 2_000_000_000,  # type: ignore[union-attr]
    ),
    ("HEALTHCHECK", "timeout"): lambda: ok(
        F + "HEALTHCHECK --timeout=3s CMD true\n",
        lambda g, s: image_of(g).config.healthcheck.timeout == 3_000_000_000,  # type: ignore[union-attr]
    ),
    ("HEALTHCHECK", "start-period"): lambda: ok(
        F + "HEALTHCHECK --start-period=4s CMD true\n",
        lambda g, s: image_of(g).config.healthcheck.start_period == 4_000_000_000,  # type: ignore[union-attr]
    ),
    ("HEALTHCHECK", "start-interval"): lambda: ok(
        F + "HEALTHCHECK --start-interval=5s CMD true\n",
        lambda g, s: image_of(g).config.healthcheck.start_interval == 5_000_000_000,  # type: ignore[union-attr]
    ),
    ("HEALTHCHECK", "retries"): lambda: ok(
        F + "HEALTHCHECK --retries=7 CMD true\n",
        lambda g, s: image_of(g).config.healthcheck.retries == 7,  # type: ignore[union-attr]
    ),
}

INSTRUCTION_CASES: dict[str, Callable[[], None]] = {
    "FROM": lambda: ok(F, lambda g, s: image_of(g).result != ""),
    "RUN": lambda: ok(
        F + "USER 5\nWORKDIR /w\nENV A=1\nRUN echo hi\n",
        lambda g, s: process(s).args == ("/bin/sh", "-c", "echo hi")
        and process(s).cwd == "/w"
        and "A=1" in process(s).env
        and any(isinstance(a, Mkdir) and a.owner == "5" for a in s.actions)
        and any(isinstance(o, ExecOp) and o.user == "5" for o in s.ops),
    ),
    "COPY": lambda: ok(F + "COPY a b /d/\n",
                       lambda g, s: copy(s)[0].sources == ("a", "b") and copy(s)[0].dest == "/d/"),
    "ADD": lambda: ok(F + "ADD x.tar /d/\n", lambda g, s: copy(s)[1].unpack_archives),
    "ARG": lambda: ok(F + "ARG X=1\nRUN true\n", lambda g, s: "X=1" in process(s).env),
    "ENV": lambda: ok(F + "ENV A=b\n", lambda g, s: "A=b" in image_of(g).config.env),
    "LABEL": lambda: ok(F + "LABEL a=b\n", lambda g, s: image_of(g).config.labels == {"a": "b"}),
    "MAINTAINER": lambda: ok(F + "MAINTAINER me\n", lambda g, s: image_of(g).config.author == "me"),
    "USER": lambda: ok(F + "USER app\n", lambda g, s: image_of(g).config.user == "app"),
    "WORKDIR": lambda: ok(F + "WORKDIR /x\n", lambda g, s: image_of(g).config.working_dir == "/x"),
    "EXPOSE": lambda: ok(F + "EXPOSE 80\n",
                         lambda g, s: image_of(g).config.exposed_ports == ("80/tcp",)),
    "VOLUME": lambda: ok(F + "VOLUME /v\n", lambda g, s: image_of(g).config.volumes == ("/v",)),
    "STOPSIGNAL": lambda: ok(F + "STOPSIGNAL SIGINT\n",
                             lambda g, s: image_of(g).config.stop_signal == "SIGINT"),
    "SHELL": lambda: ok(F + 'SHELL ["/bin/bash", "-c"]\nRUN x\n',
                        lambda g, s: process(s).args == ("/bin/bash", "-c", "x")),
    "CMD": lambda: ok(F + 'CMD ["a"]\n', lambda g, s: image_of(g).config.cmd == ("a",)),
    "ENTRYPOINT": lambda: ok(F + 'ENTRYPOINT ["e"]\n',
                             lambda g, s: image_of(g).config.entrypoint == ("e",)),
    "HEALTHCHECK": lambda: ok(F + "HEALTHCHECK NONE\n",
                              lambda g, s: image_of(g).config.healthcheck.test == ("NONE",)),  # type: ignore[union-attr]
    "ONBUILD": lambda: ok(F + "ONBUILD RUN x\n",
                          lambda g, s: image_of(g).config.onbuild == ("RUN x",)),
}  # fmt: skip


def test_every_flag_has_a_case() -> None:
    accepted = {(kind, flag) for kind, flags in _FLAGS.items() for flag in flags}
    assert accepted == set(FLAG_CASES)
    assert set(INSTRUCTIONS) == set(INSTRUCTION_CASES)


@pytest.mark.parametrize("case", sorted(FLAG_CASES), ids=lambda c: f"{c[0]}--{c[1]}")
def test_flag_reaches_the_worker_or_is_refused(case: tuple[str, str]) -> None:
    FLAG_CASES[case]()


@pytest.mark.parametrize("kind", sorted(INSTRUCTION_CASES))
def test_instruction_reaches_the_worker(kind: str) -> None:
    INSTRUCTION_CASES[kind]()


def test_heredoc_documents_reach_the_worker() -> None:
    graph, seen = build(F + "RUN <<EOT\n#!/bin/bash\necho hi\nEOT\nCOPY <<A /a\nbody\nA\n")
    files = [a for a in seen.actions if isinstance(a, Mkfile)]
    assert {(f.path, f.data, f.mode) for f in files} == {
        ("EOT", "#!/bin/bash\necho hi\n", 0o755),
        ("A", "body\n", 0o644),
    }
    [spec] = seen.processes
    assert spec.args == ("/bin/sh", "-c", "/dev/pipes/EOT")
    del graph
