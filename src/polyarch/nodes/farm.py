"""Which node builds which platform, and building there (the model of `podman farm build`):
each routed platform is built whole on its node, from the same context and Dockerfile, into
the node's own store and step cache; the image comes back to this machine's store as verified
blobs, and the index, the tags and any push are made here, so credentials never leave it.

Routing, for each target platform: this machine when it runs it natively; else a node that
runs it natively (what it reports, narrowed to its declared `--platform`s when it has some);
else a node declared for it that reports emulating it (the user's choice, said plainly: it
builds there under emulation); else this machine when it emulates it; else a node that
emulates it. A declared platform a node neither runs nor emulates is not sent there. A node
that cannot be reached at the start, or dies during the build, has its platforms built here
(under emulation) unless `--no-fallback`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from polyarch.attest.provenance import PlatformFacts
from polyarch.errors import BuildError
from polyarch.frontend.files import ignore_patterns
from polyarch.image.annotations import parse_annotation
from polyarch.nodes.builders import BuilderSpec, Node
from polyarch.nodes.client import NodeConnection, NodeInfo
from polyarch.nodes.protocol import NodeError
from polyarch.nodes.session import ClientCalls, SharedContext
from polyarch.nodes.wire import BuildAsk, BuildDone, CacheSource, NamedEntry
from polyarch.oci.models import Descriptor, Manifest, parse_document
from polyarch.platform import Platform, runs_natively
from polyarch.progress import Event, Progress
from polyarch.reference import Reference
from polyarch.remotecache.format import (
    CacheRecord,
    parse_cache_spec,
)
from polyarch.store.layout import OciLayout


@dataclass(frozen=True, slots=True)
class Route:
    platform: Platform
    node: Node | None  # None: this machine
    why: str
    native: bool = True  # where it is built, it runs natively (else under emulation)

    @property
    def where(self) -> str:
        return f"node {self.node.name} ({self.node.endpoint})" if self.node else "this machine"


def _runs(have: Iterable[Platform], platform: Platform) -> bool:
    """A machine, or an emulator, runs every variant of its architecture."""
    return any(runs_natively(p, platform) for p in have)


def declared_standing(node: Node, info: NodeInfo) -> list[tuple[Platform, str]]:
    """Each platform the builder declares for `node`, against what the node reports: native,
    emulated (it builds there, under emulation) or unavailable (neither: not sent there)."""
    native = [Platform.parse(p) for p in info.native]
    emulated = [Platform.parse(p) for p in info.emulated]
    return [(p, "native" if _runs(native, p) else "emulated" if _runs(emulated, p)
             else "unavailable") for p in node.platform_list()]  # fmt: skip


def plan_routes(
    platforms: Sequence[Platform],
    nodes: Sequence[tuple[Node, NodeInfo]],
    machine: Platform,
    local_emulated: Sequence[Platform],
) -> list[Route]:
    """Where each platform is built (pure)."""

    def native(node: Node, info: NodeInfo) -> list[Platform]:
        reported = [Platform.parse(p) for p in info.native]
        declared = node.platform_list()
        return [p for p in declared if _runs(reported, p)] if declared else reported

    def declared(platform: Platform, state: str) -> list[tuple[Node, NodeInfo]]:
        return [(n, i) for n, i in nodes
                if any(s == state and runs_natively(p, platform)
                       for p, s in declared_standing(n, i))]  # fmt: skip

    routes = []
    for platform in platforms:
        if runs_natively(machine, platform):
            routes.append(Route(platform, None, "native here"))
            continue
        found = next((n for n, i in nodes if _runs(native(n, i), platform)), None)
        if found is not None:
            routes.append(Route(platform, found, f"native on node {found.name}"))
            continue
        chosen = declared(platform, "emulated")
        if chosen:
            node, info = chosen[0]
            routes.append(Route(platform, node, f"emulated on node {node.name}: declared for "
                                f"it, but the node reports emulating it (native: "
                                f"{', '.join(info.native)})", native=False))  # fmt: skip
            continue
        left = [n.name for n, _i in declared(platform, "unavailable")]
        aside = (f"; node {', '.join(left)} is declared for it but reports neither running "
                 "nor emulating it") if left else ""  # fmt: skip
        if _runs(local_emulated, platform):
            routes.append(Route(platform, None, "emulated here" + aside, native=False))
            continue
        emulating = next(
            (n for n, i in nodes if _runs(map(Platform.parse, i.emulated), platform)), None
        )
        if emulating is not None:
            routes.append(Route(platform, emulating, f"emulated on node {emulating.name}" + aside,
                                native=False))  # fmt: skip
        else:
            routes.append(Route(platform, None, "emulated here (no node has it)" + aside,
                                native=False))  # fmt: skip
    return routes


@dataclass
class RemoteResult:
    descriptor: Descriptor  # the manifest, with its platform
    steps_run: int
    steps_cached: int
    sent_files: int
    # --cache-to: the node's entries for the export made here (their layers fetched here)
    cache_records: tuple[CacheRecord, ...] = ()
    facts: PlatformFacts | None = None  # for the platform's provenance


class BuildPlans(Protocol):
    """What Farm takes from the build it sends to nodes, each for one platform given the
    node's own platform and the stages it is sent instead of building them."""

    def bases(
        self, platform: Platform, machine: Platform, replaced: Collection[str]
    ) -> dict[str, set[Platform]]:
        """The base images the node's build pulls (reference -> platforms)."""
        ...

    def export_base(self, ref: str, platforms: set[Platform], layout: Path) -> None:
        """A base image from this machine as an OCI layout, for a node that cannot pull it."""
        ...


@dataclass
class Farm:
    spec: BuilderSpec
    progress: Progress
    plans: BuildPlans | None = None  # None: no build (inspecting); then everything is sent
    fallback: bool = True
    connect: Callable[[Node], NodeConnection] = NodeConnection
    connections: dict[str, NodeConnection] = field(default_factory=dict)
    infos: dict[str, NodeInfo] = field(default_factory=dict)
    # Directories of a build under way (stage layouts), removed by abort() too: an
    # interrupted polyarch ends without waiting for the thread that uses them.
    scratch: list[Path] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.progress(Event("note", "", "builder", text=text))

    def open(self) -> None:
        """Reach every node; one that cannot be reached is left out (or fails the build)."""
        for node in self.spec.nodes:
            try:
                connection = self.connect(node)
                self.infos[node.name] = connection.hello()
                self.connections[node.name] = connection
            except NodeError as exc:
                if not self.fallback:
                    raise NodeError(f"{exc} (--no-fallback: not building its platforms "
                                    "elsewhere)") from None  # fmt: skip
                self.note(f"{exc}; its platforms are built here instead")

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()

    def abort(self) -> None:
        """Stop every node's worker now (this machine's build failed or was interrupted), and
        remove what the build had here."""
        for connection in self.connections.values():
            connection.process.kill()
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)

    def routes(
        self, platforms: Sequence[Platform], machine: Platform, local_emulated: Sequence[Platform]
    ) -> list[Route]:
        reachable = [(n, self.infos[n.name]) for n in self.spec.nodes if n.name in self.infos]
        return plan_routes(platforms, reachable, machine, local_emulated)

    def build(
        self,
        routes: Sequence[Route],
        request: RemoteBuild,
        layout: OciLayout,
        shared: Future[dict[str, Descriptor]] | None = None,
        candidates: Sequence[str] = (),
        calls: ClientCalls | None = None,
    ) -> tuple[dict[Platform, RemoteResult], list[Platform]]:
        """Build the routed platforms on their nodes, side by side (a node's own platforms
        one after the other). `shared`: the build-once stages being built here (name -> image
        in `layout`, when done); each is sent to the nodes by content and used there as a
        named context that replaces the stage, so the nodes do not run it again. While they
        are built, each node runs what does not wait for the `candidates` (the stages that may
        be sent). Returns the results and the platforms to build here instead (their node
        died, and fallback is allowed). `calls`: what a node's build may ask this machine for
        (secrets and SSH agents by id, pull tokens)."""
        for connection in self.connections.values():
            connection.calls = calls or ClientCalls()
        tmp = Path(tempfile.mkdtemp(prefix="polyarch-stages-"))
        self.scratch.append(tmp)
        try:
            exported: dict[str, Path] = {}
            once = threading.Lock()

            def stages() -> dict[str, Path]:
                """The shared stages as layouts (waits for them; exported once)."""
                done = shared.result() if shared is not None else {}
                with once:
                    if not exported:
                        for index, (name, descriptor) in enumerate(sorted(done.items())):
                            exported[name] = tmp / str(index)
                            _image_layout(layout, descriptor, exported[name])
                return exported

            run = _FarmBuild(self, request, layout, stages, list(candidates))
            return run.everywhere(routes)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def warm(
        self,
        connection: NodeConnection,
        request: BuildAsk,
        bases: Mapping[Platform, dict[str, int]],
        pending: list[str],
        dockerfile: Path,
    ) -> int:
        """Each platform's steps that do not wait for the `pending` stages, run on the node
        into its step cache. A failure stops the warm-up only: the build proper says it.
        Returns how many steps ran."""
        ran = 0
        for platform, layouts in bases.items() if pending else ():
            ask = replace(request, platform=str(platform), base_layouts=layouts,
                          pending=tuple(pending))  # fmt: skip
            try:
                ran += connection.warm(ask, dockerfile, self.progress)
            except BuildError as exc:
                self.note(f"node {connection.node.name}: the warm-up of {platform} stopped: "
                          f"{exc.message}")  # fmt: skip
        return ran

    def send_named(
        self, name: str, connection: NodeConnection, named: Mapping[str, str]
    ) -> tuple[dict[str, NamedEntry], dict[str, SharedContext]]:
        """The `--build-context` values as the node takes them: a directory of this machine
        read through the session as the node's steps ask (the node keeps it as
        `named/INDEX`; returned to offer it), an OCI layout sent by content, an image or a
        git repository as it is (the node pulls or clones it, as it pulls its bases)."""
        out: dict[str, NamedEntry] = {}
        offered: dict[str, SharedContext] = {}
        for index, (context_name, value) in enumerate(sorted(named.items())):
            if value.startswith("oci-layout://"):
                path, suffix = layout_spec(value.removeprefix("oci-layout://"))
                files = connection.send_tree(index, Path(path).expanduser(), kind="named")
                out[context_name] = NamedEntry("layout", index, suffix)
                self.note(f"node {name}: build context {context_name} sent ({files} files it "
                          "did not have)")  # fmt: skip
            elif Path(value).expanduser().is_dir():
                out[context_name] = NamedEntry("dir", index)
                offered[context_name] = SharedContext(Path(value).expanduser())
            else:
                out[context_name] = NamedEntry("as-is", value=value)
        return out, offered

    def send_caches(
        self, name: str, connection: NodeConnection, specs: Sequence[str]
    ) -> tuple[CacheSource, ...]:
        """The `--cache-from`s as the node takes them: a local cache directory sent by
        content (the node keeps it as `caches/INDEX`), a registry cache as it is (the node
        imports it itself, lazily, as a local build does)."""
        out: list[CacheSource] = []
        for index, text in enumerate(specs):
            spec = parse_cache_spec(text, export=False)
            if spec.kind != "local":
                out.append(CacheSource(spec=text))
                continue
            files = connection.send_tree(index, Path(spec.where).expanduser(), kind="cache")
            rest = [part for part in text.split(",") if part.partition("=")[0].strip() != "src"]
            out.append(CacheSource(index=index, rest=tuple(rest)))
            self.note(f"node {name}: cache {spec.where} sent ({files} files it did not have)")
        return tuple(out)

    def send_context(
        self, connection: NodeConnection, shared: SharedContext, request: BuildAsk
    ) -> None:
        """The Dockerfile and its ignore files, by content, before the build (the frontend
        reads them first; the directories and symlinks of the context come with them). The
        rest of the context goes as the node's steps ask for it (`shared`)."""
        keep = {".dockerignore"}
        if request.dockerfile:
            keep |= {request.dockerfile, f"{request.dockerfile}.dockerignore"}
        listed, sent = connection.send_context(shared.directory, shared.ignore,
                                               lambda rel: rel in keep, shared.walk())  # fmt: skip
        shared.listed.update(listed)
        shared.sent += sent

    def context_note(self, name: str, offered: Mapping[str, SharedContext]) -> int:
        """Say what the node's build read of each build context since the last note, and how
        much of it was sent (what it held already was not); returns how many files of the
        main context were sent."""
        for context_name, shared in offered.items():
            if context_name != "context" and not shared.listed:
                continue  # a named directory no step read
            what = "context" if context_name == "context" else f"build context {context_name}"
            self.note(f"node {name}: {what} sent ({shared.sent} files it did not have of the "
                      f"{len(shared.listed)} its build read, as its steps asked)")  # fmt: skip
        sent = offered["context"].sent
        for shared in offered.values():
            shared.sent = 0
            shared.listed.clear()
        return sent

    def send_bases(
        self,
        name: str,
        connection: NodeConnection,
        platform: Platform,
        first: int,
        replaced: Collection[str],
    ) -> dict[str, int]:
        """The base images of `platform`'s build (with the `replaced` stages sent instead)
        that the node cannot pull itself (their registry is out of its reach), exported here
        and sent as layouts (by content, like the context), numbered from `first`. Returns
        ref -> layout index, for the node's named contexts."""
        if self.plans is None:
            return {}
        machine = Platform.parse(self.infos[name].native[0])
        pulled = self.plans.bases(platform, machine, replaced)
        bases = {ref: wanted for ref, wanted in pulled.items()
                 if not ref.startswith("oci-layout://")}  # fmt: skip
        registries = sorted({Reference.parse(ref).registry for ref in bases})
        unreachable = connection.reach(registries) if registries else {}
        layouts: dict[str, int] = {}
        for index, (ref, wanted) in enumerate(sorted(bases.items()), start=first):
            registry = Reference.parse(ref).registry
            if registry not in unreachable:
                continue
            self.note(f"node {name} cannot reach {registry} ({unreachable[registry]}); "
                      f"{ref} is sent from here")  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="polyarch-base-") as tmp:
                layout = Path(tmp) / "layout"
                self.plans.export_base(ref, wanted, layout)
                connection.send_layout(index, layout)
            layouts[ref] = index
        return layouts


@dataclass
class _FarmBuild:
    """One build on a farm's nodes: each node's platforms, one thread per node."""

    farm: Farm
    request: RemoteBuild
    layout: OciLayout
    stages: Callable[[], dict[str, Path]]  # the build-once stages, when built here
    candidates: list[str]  # the stages that may be sent
    results: dict[Platform, RemoteResult] = field(default_factory=dict)
    failed: list[Platform] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def everywhere(
        self, routes: Sequence[Route]
    ) -> tuple[dict[Platform, RemoteResult], list[Platform]]:
        by_node: dict[str, list[Platform]] = {}
        for route in routes:
            if route.node is not None:
                by_node.setdefault(route.node.name, []).append(route.platform)
        threads = [threading.Thread(target=self.node, args=item, daemon=True)
                   for item in by_node.items()]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
        return self.results, self.failed

    def node(self, name: str, platforms: list[Platform]) -> None:
        """A node's platforms; a node that dies or answers what it should not has them built
        here (fallback), or fails the build; a build error there fails it."""
        try:
            self._node(name, platforms)
        except (NodeError, KeyError, TypeError, ValueError) as exc:
            if not isinstance(exc, NodeError):  # a node that answers what it should not
                exc = NodeError(f"node {name} sent an answer polyarch cannot read: {exc!r}")
            with self.lock:
                if not self.farm.fallback:
                    self.errors.append(exc)
                    return
                rest = [p for p in platforms if p not in self.results]
                self.failed.extend(rest)
            self.farm.note(f"{exc}; building {', '.join(map(str, rest))} here instead")
        except BaseException as exc:  # a build error there: the build fails
            with self.lock:
                self.errors.append(exc)

    def _node(self, name: str, platforms: list[Platform]) -> None:
        farm, request = self.farm, self.request
        connection = farm.connections[name]
        shared = SharedContext(request.context,
                               ignore_patterns(request.dockerfile, request.context))  # fmt: skip

        def send_bases(replaced: Collection[str]) -> dict[Platform, dict[str, int]]:
            return {p: farm.send_bases(name, connection, p, n * 1000, replaced)
                    for n, p in enumerate(platforms)}  # fmt: skip

        # Each node gets the named contexts as it can take them (sent, or as they are).
        named, offered = farm.send_named(name, connection, request.contexts)
        offered["context"] = shared
        connection.calls = replace(connection.calls, contexts=offered)
        caches = farm.send_caches(name, connection, request.cache_from)
        ask = replace(request.ask, named_contexts=named, cache_from=caches)
        farm.send_context(connection, shared, request.ask)
        bases = send_bases(self.candidates)
        # While the build-once stages are built here.
        warmed = farm.warm(connection, ask, bases, self.candidates, request.dockerfile)
        ready = self.stages()
        if set(ready) != set(self.candidates):  # some turned out to be built per platform
            bases = send_bases(ready)
        stage_layouts: dict[str, int] = {}
        for index, (stage, path) in enumerate(ready.items()):
            files = connection.send_layout(index, path, kind="stage")
            stage_layouts[stage] = index
            farm.note(f"node {name}: build-once stage {stage} sent, built here ({files} files "
                      "it did not have)")  # fmt: skip
        for platform in platforms:
            there = replace(ask, platform=str(platform), base_layouts=bases[platform],
                            stage_layouts=stage_layouts)  # fmt: skip
            answer = connection.build(there, request.dockerfile, farm.progress)
            sent = farm.context_note(name, offered)
            self._brought_home(connection, platform, answer, (warmed, sent))
            warmed = 0

    def _brought_home(
        self,
        connection: NodeConnection,
        platform: Platform,
        answer: BuildDone,
        counts: tuple[int, int],
    ) -> None:
        """The node's image here (only its documents when the node pushed it), and its cache
        entries for the export; `counts`: the steps its warm-up ran, and the files it was
        sent."""
        descriptor = answer.descriptor
        if self.request.ask.push:  # pushed from there: its documents come here
            connection.fetch(descriptor, self.layout, documents_only=True)
            self.farm.note(f"node {connection.node.name} pushed {platform} by digest to "
                           f"{', '.join(self.request.ask.push)}")  # fmt: skip
        else:
            connection.fetch(descriptor, self.layout)
        records = _cache_records(connection, answer, self.layout)
        warmed, sent = counts
        with self.lock:
            self.results[platform] = RemoteResult(
                Descriptor(descriptor.media_type, descriptor.digest, descriptor.size,
                           platform=platform),
                answer.steps_run + warmed, answer.steps_cached, sent, records,
                _as_here(answer.facts))  # fmt: skip


def _as_here(facts: PlatformFacts | None) -> PlatformFacts | None:
    """A node's facts as this machine's build would have them: the build-once stages it was
    sent arrive there as OCI layouts, which are not materials of the build (their own base
    images are this machine's, in its facts)."""
    if facts is None:
        return None
    kept = tuple(m for m in facts.materials if not m.local)
    return dataclasses.replace(facts, materials=kept)


def _cache_records(
    connection: NodeConnection, answer: BuildDone, layout: OciLayout
) -> tuple[CacheRecord, ...]:
    """A node's cache entries for the `--cache-to` export made here, their layers fetched
    into `layout` (verified by digest); an entry whose layer the node does not hold (taken
    lazily from an imported cache) comes without it, as a local build's would."""
    for entry in answer.cache_records:
        if entry.record.layer is not None and entry.held:
            connection.fetch_blob(entry.record.layer, layout)
    return tuple(entry.record for entry in answer.cache_records)


def layout_spec(spec: str) -> tuple[str, str]:
    """`DIR[:TAG|@DIGEST]` of an `oci-layout://` value: the directory, and the rest as given
    (a tag is told from a colon in the directory's name as the build tells it)."""
    path, at, digest = spec.partition("@")
    if at:
        return path, f"@{digest}"
    if ":" in spec.rsplit("/", 1)[-1]:
        path, _colon, tag = spec.rpartition(":")
        return path, f":{tag}"
    return spec, ""


def _image_layout(store: OciLayout, descriptor: Descriptor, dest: Path) -> None:
    """One image of the store as an OCI layout of its own (named `stage`), its blobs linked
    (copied across file systems)."""
    out = OciLayout(dest)
    manifest = parse_document(store.read_document(descriptor), descriptor.media_type)
    assert isinstance(manifest, Manifest)
    for blob in (descriptor, *manifest.blobs()):
        target = out.blobs.path(blob.digest)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(store.blobs.path(blob.digest), target)
        except OSError:
            shutil.copyfile(store.blobs.path(blob.digest), target)
    out.set_ref("stage", descriptor)


@dataclass(frozen=True, slots=True)
class RemoteBuild:
    """What the nodes are asked to build: the request that travels as it is, and the named
    contexts and caches to import that Farm translates for each node (sent, or as they are)."""

    ask: BuildAsk
    context: Path  # the main context's directory, sent by content
    dockerfile: Path  # where errors point (the node names it as the ask says)
    contexts: Mapping[str, str] = field(default_factory=dict)
    cache_from: tuple[str, ...] = ()


def remote_request(options: Any, context: Path, dockerfile: Path) -> RemoteBuild:
    """What a node is asked to build: the options that travel (named contexts and caches are
    translated for each node by Farm; a `--cache-to` is exported here, once, from the entries
    the nodes send back; secrets and SSH agents go by id, the node calling back for them)."""
    try:
        inside = dockerfile.resolve().relative_to(context.resolve())
    except ValueError:
        inside = None
    ask = BuildAsk(
        build_args=dict(options.build_args), target=options.target,
        labels=dict(options.labels), no_cache=options.no_cache, jobs=options.jobs,
        build_once=options.build_once,
        ca_certs=options.ca_certs is not None, allow=tuple(sorted(options.allow)),
        # Each node makes one platform's manifest; index-level ones are applied here.
        annotations=tuple(t for t in options.annotations
                          if all(a.level == "manifest" for a in parse_annotation(t))),
        step_timeout=options.step_timeout, add_hosts=tuple(options.add_hosts),
        network=options.network, ulimits=tuple(options.ulimits), shm_size=options.shm_size,
        no_cache_filter=tuple(options.no_cache_filter),
        emulator_install=options.emulator_install, explain_as=options.explain_as,
        # By id: a node's step that mounts one calls back for it (nodes/session.py).
        ssh=tuple(sorted({spec.partition("=")[0] for spec in options.ssh})),
        # The node sends its entries of this mode; the export is made here.
        cache_export=parse_cache_spec(options.cache_to, export=True).mode
        if options.cache_to else None,
        dockerfile=str(inside) if inside is not None else None,
        dockerfile_text=None if inside is not None else dockerfile.read_text(encoding="utf-8"),
    )  # fmt: skip
    return RemoteBuild(ask, context, dockerfile, dict(options.contexts),
                       tuple(options.cache_from))  # fmt: skip


__all__ = ["BuildPlans", "Farm", "RemoteBuild", "Route", "plan_routes", "remote_request"]
