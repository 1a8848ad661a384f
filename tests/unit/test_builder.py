"""`Builder` driven with a recording worker (its `worker_factory`), as `test_contract.py` drives
the solver: what the worker is asked to run for each platform, the images assembled from what
it made, the build-once native check asked of the worker (a stage found to make native code
is planned again per platform), and the worker closed however the build ends."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from polyarch.build import Builder, BuildRequest
from polyarch.digest import Digest
from polyarch.errors import BuildError
from polyarch.frontend.dockerfile import load
from polyarch.graph.model import Vertex
from polyarch.graph.ops import ContextSource, ExecOp, FileOp
from polyarch.oci.models import Index, Manifest, parse_document
from polyarch.platform import Platform
from polyarch.progress import Event
from polyarch.registry.client import RegistryClient
from polyarch.store.blobs import ContentStore
from polyarch.store.workspace import Workspace
from polyarch.worker.base import Job, LayerRef, Output, Result, WorkerPlatforms

AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class RecordingWorker:
    """Runs nothing: records each op with its vertex's platform and makes a real one-file
    layer for it in the store, so that the images assembled from it are whole."""

    def __init__(self, blobs: ContentStore, native: dict[str, tuple[str, str]]) -> None:
        self.blobs, self.native = blobs, native
        self.ran: list[tuple[str, str]] = []  # (op kind, platform)
        self.asked_native: list[tuple[str, ...]] = []
        self.closed = False
        self.lock = threading.Lock()

    def platforms(self) -> WorkerPlatforms:
        return WorkerPlatforms((AMD64,), (ARM64,))

    def resolve(self, vertex: Vertex, inputs: Sequence[Result]) -> Result:
        if isinstance(vertex.op, ContextSource):
            return Result("context:" + "|".join(vertex.op.includes), context=vertex.op)
        return Result(vertex.key)

    def execute(self, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
        kind = "exec" if isinstance(vertex.op, ExecOp) else "file"
        assert isinstance(vertex.op, ExecOp | FileOp)
        with self.lock:
            self.ran.append((kind, str(vertex.platform)))
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            data = vertex.key.encode()
            info = tarfile.TarInfo(f"made-{vertex.key[7:19]}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        diff_id = Digest("sha256", hashlib.sha256(raw.getvalue()).hexdigest())
        packed = gzip.compress(raw.getvalue(), mtime=0)
        digest = self.blobs.put_bytes(packed)
        return Output(LayerRef(digest, len(packed), diff_id, LAYER))

    def load(self, layer: LayerRef, source: str = "") -> bool:
        return self.blobs.has(layer.digest, layer.size)

    def ensure(self, layers: Sequence[LayerRef]) -> None:
        assert all(self.blobs.has(x.digest, x.size) for x in layers)

    def native_code(
        self, layers: Sequence[LayerRef], paths: Sequence[str]
    ) -> tuple[str, str] | None:
        with self.lock:
            self.asked_native.append(tuple(paths))
        return next((found for path, found in self.native.items() if path in paths), None)

    def close(self) -> None:
        self.closed = True


def builder_with(
    tmp_path: Path, native: dict[str, tuple[str, str]] | None = None
) -> tuple[Builder, list[RecordingWorker], list[Event]]:
    workers: list[RecordingWorker] = []
    events: list[Event] = []

    def factory(
        builder: Builder, _session: object, platform: Platform, _remote: object
    ) -> RecordingWorker:
        assert platform == AMD64  # the machine the build runs on
        workers.append(RecordingWorker(builder.blobs, native or {}))
        return workers[-1]

    builder = Builder(Workspace(tmp_path / "ws"), RegistryClient(), progress=events.append,
                      worker_factory=factory)  # type: ignore[arg-type]  # fmt: skip
    return builder, workers, events


def request(tmp_path: Path, text: str, platforms: tuple[Platform, ...]) -> BuildRequest:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(text)
    (context / "a.txt").write_text("a\n")
    return BuildRequest(load(text), context, context / "Dockerfile", platforms, AMD64,
                        source_date_epoch=0, emulator_install=False)  # fmt: skip


def test_each_platform_is_asked_of_the_worker_and_assembled_from_what_it_made(
    tmp_path: Path,
) -> None:
    builder, workers, _events = builder_with(tmp_path)
    text = "FROM scratch\nCOPY a.txt /a.txt\nARG TARGETARCH\nCOPY a.txt /a-$TARGETARCH.txt\n"
    result = builder.build(request(tmp_path, text, (AMD64, ARM64)))
    (worker,) = workers
    # The first copy is the same for both platforms (one step); the second is each one's.
    assert sorted(worker.ran) == [("file", "linux/amd64"), ("file", "linux/amd64"),
                                  ("file", "linux/arm64")]  # fmt: skip
    assert worker.closed
    index = parse_document(builder.layout.read_document(result.descriptor))
    assert isinstance(index, Index)
    assert {str(m.platform) for m in index.manifests} == {"linux/amd64", "linux/arm64"}
    for entry in index.manifests:
        manifest = parse_document(builder.layout.read_document(entry), entry.media_type)
        assert isinstance(manifest, Manifest) and len(manifest.layers) == 2
        assert all(builder.blobs.has(x.digest, x.size) for x in manifest.layers)
    assert (result.steps_run, result.steps_cached) == (3, 0)
    again = builder.build(request(tmp_path, text, (AMD64, ARM64)))
    assert again.descriptor == result.descriptor and again.steps_run == 0  # the step cache
    assert len(workers) == 2 and workers[1].ran == []


def test_the_build_once_check_is_asked_of_the_worker(tmp_path: Path) -> None:
    """A platform-neutral stage runs once; the worker says what it made is native code, so
    the stage is planned again per platform and run for each."""
    text = ('FROM scratch AS tool\nRUN ["/make", "/out/tool"]\n'
            "FROM scratch\nCOPY --from=tool /out/tool /tool\n")  # fmt: skip
    builder, workers, events = builder_with(tmp_path, {"/out/tool": ("out/tool", "an ELF")})
    builder.build(request(tmp_path, text, (AMD64, ARM64)))
    (worker,) = workers
    assert ("/out/tool",) in worker.asked_native
    said = [e.text for e in events if e.kind == "note"]
    assert any("stage tool is built per platform" in t for t in said), said
    assert ("exec", "linux/arm64") in worker.ran  # the stage, now per platform


def test_the_worker_is_closed_when_the_build_fails(tmp_path: Path) -> None:
    builder, workers, _events = builder_with(tmp_path)
    text = "FROM scratch\nCOPY missing.txt /m\n"

    def failing(_self: object, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
        raise BuildError("missing.txt: no such file")

    original = RecordingWorker.execute
    RecordingWorker.execute = failing  # type: ignore[assignment,method-assign]
    try:
        with pytest.raises(BuildError, match="no such file"):
            builder.build(request(tmp_path, text, (AMD64,)))
    finally:
        RecordingWorker.execute = original  # type: ignore[method-assign]
    assert workers[0].closed
