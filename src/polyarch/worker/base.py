"""What a worker is: the one seam between the solver and a machine that runs steps.

A worker resolves sources and executes exec and file ops on the results of their inputs. The
local worker runs them on this machine (snapshots, runc, file copies); a remote one will carry
the same calls over a channel. Results name layers by digest: the layers themselves live in
the worker's store (and travel as verified blobs).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from polyarch.digest import Digest
from polyarch.graph.model import Vertex
from polyarch.graph.ops import ContextSource
from polyarch.platform import Platform

CacheState = Literal["", "run", "local", "imported"]
# Asked for what a step selects from a build context (its name, its include paths) before
# the worker reads them: a node's build has its client send those files then.
ContextFetch = Callable[[str, tuple[str, ...]], None]


@dataclass(frozen=True, slots=True)
class LayerRef:
    """One layer of a filesystem: its blob (compressed) and its diffID (uncompressed)."""

    digest: Digest
    size: int
    diff_id: Digest
    media_type: str


@dataclass(frozen=True, slots=True)
class Result:
    """The result of a vertex: its effective key (what the cache knows it by), the layers of
    its filesystem (base first), the layer it added and when that was made; for a context
    selection, the selection itself (its files are read where they are)."""

    key: str
    layers: tuple[LayerRef, ...] = ()
    layer: LayerRef | None = None
    created: str = ""
    context: ContextSource | None = None
    cache: CacheState = ""
    # A context selection's entries (path -> `TYPE MODE UID:GID DIGEST`): what a later build
    # compares to say which file made a step run again. Not part of the key.
    files: Mapping[str, str] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Output:
    """What executing an exec or file op made: its layer (None when it changed nothing)."""

    layer: LayerRef | None


@dataclass
class Job:
    """What the solver hands a worker with each op: a slot to take before heavy work, a stop
    flag (another step failed, or the build was interrupted), and where output goes."""

    gate: Callable[[int], contextlib.AbstractContextManager[None]]
    cancelled: threading.Event = field(default_factory=threading.Event)
    log: Callable[[str], None] = lambda _line: None
    note: Callable[[str], None] = lambda _text: None
    waiting: Callable[[bool], None] = lambda _waiting: None  # told around waiting for a slot

    @contextlib.contextmanager
    def slot(self, priority: int = 0) -> Iterator[None]:
        self.waiting(True)
        with self.gate(priority):
            self.waiting(False)
            yield


@dataclass(frozen=True, slots=True)
class WorkerPlatforms:
    native: tuple[Platform, ...]
    emulated: tuple[Platform, ...] = ()


class Worker(Protocol):
    def platforms(self) -> WorkerPlatforms: ...

    def resolve(self, vertex: Vertex, inputs: Sequence[Result]) -> Result:
        """A source (image, context selection, scratch, download) or a merge of inputs."""

    def execute(self, vertex: Vertex, inputs: Sequence[Result], job: Job) -> Output:
        """Run an exec or file op on its inputs' results."""

    def load(self, layer: LayerRef, source: str = "") -> bool:
        """Make a layer a cache entry names usable here (`source`: the cache it can be
        fetched from); False when its blob is gone."""


class BuildWorker(Worker, Protocol):
    """What a Builder asks of the worker it is given, beyond the solver's calls."""

    def ensure(self, layers: Sequence[LayerRef]) -> None:
        """The layers' blobs here (fetched from an imported cache when it holds them)."""

    def native_code(
        self, layers: Sequence[LayerRef], paths: Sequence[str]
    ) -> tuple[str, str] | None:
        """The first native code among the files `paths` select in the filesystem of
        `layers`: (its path, why), or None (the build-once check)."""

    def close(self) -> None:
        """Its resources released (the build is over)."""
