"""A build from start to end, one orchestration wherever each platform runs: the options
checked, the request made, the platforms routed (this machine, or a builder's nodes), the
build-once stages run once, the nodes' platforms and this machine's assembled into one index,
one cache export, and the outputs written. Also planning and `build --check`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.api.local import default_root, git_vcs, machine_platform
from polyarch.api.session import Session
from polyarch.attest.spec import AttestSpec
from polyarch.errors import DockerfileError, UsageError
from polyarch.export.outputs import (
    DockerOutput,
    OciOutput,
    RegistryOutput,
    TarOutput,
)
from polyarch.export.outputs import Output as OutputSpec
from polyarch.export.write import (
    Attested,
    Output,
    Place,
    image_blobs,
    registry_targets,
    write_output,
)
from polyarch.frontend.convert import (
    BaseImage,
    BuildOnce,
    CheckResult,
    ConvertRequest,
    NamedContext,
    check_dockerfile,
    convert,
)
from polyarch.frontend.dockerfile import Dockerfile, build, parse
from polyarch.frontend.dockerfile.checks import CHECK_ARG
from polyarch.frontend.files import (
    dockerfile_text,
    ignore_patterns,
    read_dockerfile,
)
from polyarch.frontend.gitref import parse_git_ref
from polyarch.graph.model import BuildGraph
from polyarch.image.annotations import parse_annotations
from polyarch.oci.mediatypes import OCI_INDEX
from polyarch.oci.models import (
    Descriptor,
)
from polyarch.platform import Platform
from polyarch.progress import Event, Progress, silent
from polyarch.reference import Reference
from polyarch.remotecache.format import parse_cache_spec
from polyarch.transfer.location import LayoutLocation

if TYPE_CHECKING:
    from polyarch.attest.sbom.packages import Package
    from polyarch.build import Builder, BuildRequest, BuildResult, PlatformImage, SharedBuild
    from polyarch.image.annotations import Annotation
    from polyarch.nodes.farm import BuildPlans, Farm, RemoteBuild, RemoteResult, Route
    from polyarch.remotecache.format import CacheSpec
    from polyarch.store.layout import OciLayout
    from polyarch.worker.base import ContextFetch
    from polyarch.worker.local.mounts import SecretSource, SshSource


def plan_build(
    dockerfile: Path,
    *,
    platforms: Sequence[Platform] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    build_platform: Platform | None = None,
    build_once: BuildOnce = "auto",
    contexts: Mapping[str, NamedContext] | None = None,
) -> BuildGraph:
    """The plan of a build, without building: what runs where, once or per platform."""
    _result, parsed = read_dockerfile(dockerfile)
    machine = build_platform or machine_platform()
    return convert(
        ConvertRequest(
            parsed,
            tuple(platforms) or (machine,),
            machine,
            dict(build_args or {}),
            target,
            build_once=build_once,
            contexts=dict(contexts or {}),
        )
    )


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """What to build and how (the flags of `polyarch build`, resolved)."""

    context: Path | str  # a directory, or a git URL (`URL[#REF[:SUBDIR]]`)
    dockerfile: Path | None = None  # default: Dockerfile in the context
    tags: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    outputs: tuple[OutputSpec, ...] = ()
    root: Path | None = None
    jobs: int = 1
    build_once: BuildOnce = "auto"
    ca_certs: Path | None = None
    allow: frozenset[str] = frozenset()
    secrets: tuple[str, ...] = ()  # --secret id=ID[,src=FILE|,env=VAR]
    # Secrets whose values come from elsewhere (a node's: the client that started the build).
    secret_sources: Mapping[str, SecretSource] = field(default_factory=dict)
    ssh_sources: Mapping[str, SshSource] = field(default_factory=dict)  # a node's: the client's
    # A node's: asked for the files a step selects from a build context before it reads them
    # (the client sends them then); None: the context directories hold them all.
    context_fetch: ContextFetch | None = None
    ssh: tuple[str, ...] = ()  # --ssh default | ID[=KEYFILE|SOCKET]
    contexts: Mapping[str, str] = field(default_factory=dict)  # --build-context NAME=VALUE
    cache_from: tuple[str, ...] = ()  # --cache-from type=registry,ref=REF | type=local,src=DIR
    cache_to: str | None = None  # --cache-to type=registry,ref=REF[,mode=max] | type=local,...
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # REGISTRY -> mirrors
    step_timeout: float | None = None  # seconds a RUN step may take before it is stopped
    builder: str | None = None  # a named builder (its nodes); None: the current one
    fallback: bool = True  # build a node's platforms here when it cannot be reached or dies
    annotations: tuple[str, ...] = ()  # --annotation [LEVEL[,LEVEL][[PLATFORM]]:]KEY=VALUE
    push_from_nodes: bool = False  # nodes push their platforms themselves (their credentials)
    add_hosts: tuple[str, ...] = ()  # --add-host HOST=IP (checked), in the steps' /etc/hosts
    network: str = "default"  # --network default|none|host: RUN steps that name none
    ulimits: tuple[str, ...] = ()  # --ulimit NAME=SOFT[:HARD] (checked)
    shm_size: int = 0  # --shm-size, bytes
    no_cache_filter: tuple[str, ...] = ()  # --no-cache-filter: stages that take no cache
    emulator_install: bool = True  # as root, register a missing emulator (--no-emulator-install)
    # What the build is the next build of, for explanations (default: the context, the
    # Dockerfile and the target); a node is given its client's.
    explain_as: str = ""
    # --provenance/--sbom/--attest; a push also gets buildx's default (mode=min provenance)
    # unless they said anything about provenance or BUILDX_NO_DEFAULT_ATTESTATIONS is set.
    attest: AttestSpec = field(default_factory=AttestSpec)


@dataclass(frozen=True, slots=True)
class BuildReport:
    """A build's typed result: the images (per-platform digests, sizes), steps run and
    cached, time, warnings (in `result`), the local names it is kept as, and its outputs."""

    result: BuildResult
    names: tuple[str, ...]
    outputs: tuple[Output, ...] = ()

    @property
    def digest(self) -> str:
        return str(self.result.descriptor.digest)


def build_image(
    session: Session,
    options: BuildOptions,
    *,
    progress: Progress | None = None,
    builder: Builder | None = None,
) -> BuildReport:
    """Build, keep the image in the local store under each tag, then push or export it.
    `builder`: one shared with builds running side by side (bake), held by its caller."""
    report = _build_image(session, options, progress, frozenset(), builder)
    assert isinstance(report, BuildReport)
    return report


def warm_image(
    session: Session,
    options: BuildOptions,
    pending: frozenset[str],
    *,
    progress: Progress | None = None,
) -> int:
    """Run the steps of the build that do not wait for the named contexts `pending` (they
    are not there yet), into the step cache; returns how many ran. A node does this while the
    build-once stages it is sent are built elsewhere."""
    steps = _build_image(session, options, progress, pending)
    assert isinstance(steps, int)
    return steps


def _build_image(
    session: Session,
    options: BuildOptions,
    progress: Progress | None,
    pending: frozenset[str],
    builder: Builder | None = None,
) -> BuildReport | int:
    # Imported here, not at the top: registry-only commands start faster without the engine.
    from polyarch.build import Builder  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    if os.geteuid() != 0:  # the CLI enters its user namespace first (polyarch.runtime.userns)
        raise UsageError("building needs root, or polyarch's rootless user namespace: run "
                         "the polyarch command, which enters it, or run as root")  # fmt: skip
    options = _completed(options)
    refs = [Reference.parse(t) for t in options.tags]
    _check_outputs(options, refs)
    annotations = parse_annotations(options.annotations)
    if len(options.platforms) < 2 and any(a.level != "manifest" for a in annotations):
        raise UsageError("index and manifest-descriptor annotations need an index: build two "
                         "or more platforms, or annotate the manifest")  # fmt: skip
    sink = progress or silent
    attest = _attest_spec(options)
    started = time.time()
    if builder is None:
        builder = Builder(Workspace(options.root or default_root()), session.client,
                          progress=sink, mirrors=options.mirrors,
                          mirror_client=session.fast_client())  # fmt: skip
    with contextlib.ExitStack() as stack:
        context, dockerfile, commit = _context_and_dockerfile(options, stack)
        _result, parsed = read_dockerfile(dockerfile)  # before any node is reached
        wanted = options.platforms or (machine_platform(),)
        farm, routes = _farm(options, wanted, sink, NodePlans(options, dockerfile, session))
        if farm is not None:
            stack.callback(farm.close)
            if attest.sbom is not None and options.push_from_nodes:
                raise UsageError("--sbom with --push-from-nodes: the nodes' layers do not "
                                 "come here to be read; push from here, or build without "
                                 "an SBOM")  # fmt: skip
        elif options.push_from_nodes:
            said = "--push-from-nodes: no platform is built on a node; pushed from here"
            sink(Event("note", "", "builder", text=said))
        local = tuple(r.platform for r in routes if r.node is None) if farm else wanted
        # Each node makes one platform's manifest: index-level annotations are applied here.
        kept = annotations if farm is None else [a for a in annotations if a.level == "manifest"]
        request = _request(options, parsed, (context, dockerfile), local, kept)
        request = dataclasses.replace(request, sbom=attest.sbom is not None)
        if farm is not None and attest.sbom is not None:
            _no_stage_scans_on_nodes(parsed, options)
        if pending:
            return builder.warm(request, pending)
        if farm is None:
            result = builder.build(request)
        else:
            pushing = _pushed_to(options, refs) if options.push_from_nodes else []
            result = _build_with_nodes(farm, routes, builder, request, options, wanted,
                                       annotations, pushing)  # fmt: skip
        again = None
        if attest.any:
            result, again = _attested(builder, options, attest, result, refs,
                                      (context, dockerfile, commit), started)  # fmt: skip
    # Pushed from the nodes: the image is not whole here, so it is not kept under a name.
    return _kept_and_written(session, options, builder, result, refs,
                             options.push_from_nodes and farm is not None, sink,
                             again)  # fmt: skip


def _completed(options: BuildOptions) -> BuildOptions:
    """The options as the build takes them: which build it is the next of (for explain), and
    the environment's SOURCE_DATE_EPOCH as a build argument (as buildx: `ARG
    SOURCE_DATE_EPOCH` sees it, and a builder's nodes build with it too)."""
    if not options.explain_as:
        options = dataclasses.replace(options, explain_as=_explain_as(options))
    epoch_env = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch_env and "SOURCE_DATE_EPOCH" not in options.build_args:
        args = {**options.build_args, "SOURCE_DATE_EPOCH": epoch_env}
        options = dataclasses.replace(options, build_args=args)
    return options


def _epoch(options: BuildOptions) -> int | None:
    text = options.build_args.get("SOURCE_DATE_EPOCH")
    return int(text) if text and text.isdigit() else None


def _check_outputs(options: BuildOptions, refs: Sequence[Reference]) -> None:
    """The outputs, checked before anything runs."""
    for output in options.outputs:
        if isinstance(output, RegistryOutput) and not refs and not output.names:
            raise UsageError("pushing needs a name: -t REGISTRY/NAME:TAG, or "
                             "--output type=registry,name=REGISTRY/NAME[:TAG]")  # fmt: skip
        if isinstance(output, DockerOutput) and not output.load and len(options.platforms) > 1:
            raise UsageError("--output type=docker holds one platform (docker load takes no "
                             "index); build one --platform, or use type=oci")  # fmt: skip
        if isinstance(output, OciOutput) and output.tar and Path(output.dest).is_dir():
            raise UsageError(f"--output type=oci: dest={output.dest} is a directory; name the "
                             "tar file to write, or add tar=false to write the layout in "
                             "that directory")  # fmt: skip
        if isinstance(output, DockerOutput | TarOutput) and output.dest not in ("", "-") and (
                Path(output.dest).is_dir()):  # fmt: skip
            raise UsageError(f"--output: dest={output.dest} is a directory; name the tar file "
                             "to write")  # fmt: skip
    if options.push_from_nodes and not all(isinstance(o, RegistryOutput) and
                                           o.compression.is_default and not o.referrers
                                           for o in options.outputs or (None,)):  # fmt: skip
        raise UsageError("--push-from-nodes needs --push (or --output type=registry, its "
                         "attestations in the index) and no other output: the nodes' "
                         "platforms are pushed from the nodes and do not come to this machine, "
                         "so nothing here can export them")  # fmt: skip


def _pushed_to(options: BuildOptions, refs: Sequence[Reference]) -> list[str]:
    """The repositories the registry outputs push to."""
    return sorted({f"{t.registry}/{t.repository}" for output in options.outputs
                   if isinstance(output, RegistryOutput)
                   for t in registry_targets(output, refs)})  # fmt: skip


def _request(
    options: BuildOptions,
    parsed: Dockerfile,
    sources: tuple[Path, Path],
    platforms: tuple[Platform, ...],
    annotations: Sequence[Annotation],
) -> BuildRequest:
    """The build of `platforms` on this machine, as the Builder takes it (`sources`: the
    context directory and the Dockerfile's path)."""
    from polyarch.build import BuildRequest  # noqa: PLC0415

    context, dockerfile = sources
    contexts, context_dirs = parse_contexts(options.contexts)
    return BuildRequest(
        parsed, context, dockerfile, platforms, machine_platform(), dict(options.build_args),
        options.target, dict(options.labels), options.no_cache, _epoch(options), options.jobs,
        options.build_once, options.ca_certs, options.allow,
        {**{s.id: s for s in map(parse_secret, options.secrets)}, **options.secret_sources},
        {**{s.id: s for s in map(parse_ssh, options.ssh)}, **options.ssh_sources},
        contexts, context_dirs,
        tuple(parse_cache_spec(c, export=False) for c in options.cache_from),
        parse_cache_spec(options.cache_to, export=True) if options.cache_to else None,
        options.step_timeout, tuple(annotations),
        extra_hosts=options.add_hosts, network=options.network, ulimits=options.ulimits,
        shm_size=options.shm_size,
        no_cache_filter=frozenset(s.lower() for s in options.no_cache_filter),
        emulator_install=options.emulator_install, explain_as=options.explain_as,
        context_fetch=options.context_fetch,
    )  # fmt: skip


def _kept_and_written(
    session: Session,
    options: BuildOptions,
    builder: Builder,
    result: BuildResult,
    refs: Sequence[Reference],
    from_nodes: bool,
    progress: Progress,
    attest: Callable[[Descriptor], Descriptor] | None = None,
) -> BuildReport:
    """The image kept under its names (not when the nodes pushed their platforms: it is not
    whole here), its steps claimed by its repositories, and the outputs written (`attest`:
    attestations made again for an output whose compression makes new manifests)."""
    names = [] if from_nodes else [str(r) for r in refs] or [str(result.descriptor.digest)]
    for name in names:
        builder.layout.set_ref(name, result.descriptor)
    for owner in sorted({r.name for r in refs}):
        builder.cache.claim(result.cache_keys, owner)  # what `polyarch clean` may forget
    place = Place(builder.layout, builder.workspace.tmp, session.target, session.client)
    spec = _attest_spec(options)
    files = {kind: value.filename for kind, value in (("provenance", spec.provenance),
                                                      ("sbom", spec.sbom))
             if value is not None and not getattr(value, "inline_only", False)}  # fmt: skip
    written = tuple(write_output(output, place, result, refs, from_nodes=from_nodes,
                                 epoch=_epoch(options), progress=progress,
                                 attested=Attested(files, attest))
                    for output in options.outputs)  # fmt: skip
    return BuildReport(result, tuple(names), written)


def _explain_as(options: BuildOptions) -> str:
    """Which build a build is the next of: the same context (directory or URL), Dockerfile
    and target."""
    context = options.context
    source = context if isinstance(context, str) else str(context.resolve())
    dockerfile = str(options.dockerfile.resolve()) if options.dockerfile else "Dockerfile"
    return "\0".join((source, dockerfile, options.target or ""))


def _context_and_dockerfile(
    options: BuildOptions, stack: contextlib.ExitStack
) -> tuple[Path, Path, str]:
    """The build context as a directory (a git URL cloned, removed when `stack` closes), the
    Dockerfile's path, and the commit a git context was checked out at ("" for a
    directory)."""
    context, dockerfile = options.context, options.dockerfile
    commit = ""
    if isinstance(context, str):
        # Not in the workspace's scratch: a build clears that when it starts.
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="polyarch-git-")))
        keep = options.build_args.get("BUILDKIT_CONTEXT_KEEP_GIT_DIR", "") in ("1", "true")
        context, commit = _git_context(context, scratch, keep)
        if dockerfile is not None and not dockerfile.is_absolute():
            dockerfile = context / dockerfile  # a relative -f names a file of the repository
    return context, dockerfile or context / "Dockerfile", commit


def check_build(
    session: Session, options: BuildOptions, *, progress: Progress | None = None
) -> CheckResult:
    """`build --check`: BuildKit's build checks over the Dockerfile, as the build would
    convert it (every stage unless a target is named), with the base images' configs
    resolved (their layers are not pulled). Builds nothing; needs no root."""
    from polyarch.build import Builder, base_images  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    machine = machine_platform()
    args = dict(options.build_args)
    contexts, _dirs = parse_contexts(options.contexts)
    with contextlib.ExitStack() as stack:
        context, dockerfile, _commit = _context_and_dockerfile(options, stack)
        path = str(dockerfile)
        try:
            parsed = parse(dockerfile_text(dockerfile), path)
        except DockerfileError as exc:
            return CheckResult((), exc, path)
        ignore = ignore_patterns(dockerfile, context)

        def request(df: Dockerfile, images: Mapping[tuple[str, str], BaseImage]) -> ConvertRequest:
            return ConvertRequest(
                df, options.platforms or (machine,), machine, args, options.target, images,
                options.build_once, ignore=ignore, allow=options.allow,
                labels=dict(options.labels), contexts=contexts, extra_hosts=options.add_hosts,
                network=options.network, ulimits=options.ulimits, shm_size=options.shm_size,
            )  # fmt: skip

        try:
            draft = convert(dataclasses.replace(
                request(build(parsed, path), {}), check_all=options.target is None,
                build_args={**args, CHECK_ARG: "skip=all"},
            ))  # fmt: skip
        except DockerfileError:  # said by the check, after the warnings before it
            return check_dockerfile(parsed, path, args, lambda df: request(df, {}))
        builder = Builder(Workspace(options.root or default_root()), session.client,
                          progress=progress or silent, mirrors=options.mirrors,
                          mirror_client=session.fast_client())  # fmt: skip
        images = builder.bases.base_configs(base_images(draft))
        return check_dockerfile(parsed, path, args, lambda df: request(df, images))


def open_builder(
    builder: str | None,
    platforms: Sequence[Platform],
    progress: Progress,
    *,
    fallback: bool = True,
    plans: BuildPlans | None = None,
) -> tuple[Farm, list[Route]] | None:
    """The builder's nodes reached and each platform routed (the caller closes the farm), or
    None when the builder (default: the current one) is this machine alone. `plans`: what a
    build's nodes are sent is read from (none: no build, as `builder inspect`)."""
    from polyarch.nodes.builders import BuilderStore  # noqa: PLC0415
    from polyarch.nodes.farm import Farm  # noqa: PLC0415
    from polyarch.runtime import binfmt  # noqa: PLC0415

    spec = BuilderStore().get(builder)
    if not spec.nodes:
        return None
    farm = Farm(spec, progress, plans, fallback=fallback)
    farm.open()
    machine = machine_platform()
    return farm, farm.routes(platforms, machine, binfmt.registered(machine))


def _farm(
    options: BuildOptions, wanted: Sequence[Platform], progress: Progress, plans: BuildPlans
) -> tuple[Farm | None, list[Route]]:
    """The builder's nodes reached and the platforms routed, or (None, []) for this machine."""
    opened = open_builder(options.builder, wanted, progress, fallback=options.fallback,
                          plans=plans)  # fmt: skip
    if opened is None:
        return None, []
    farm, routes = opened
    for route in routes:
        farm.note(f"{route.platform} is built on {route.where}: {route.why}")
    if all(r.node is None for r in routes):
        farm.close()
        return None, []
    return farm, routes


class NodePlans:
    """What a builder's nodes are sent, read from each node's plan of a platform (on its
    machine, with the stages it is sent replaced, as it plans them; each made once): the base
    images it pulls, exported from here for a node that cannot pull, and the paths it takes
    from the main context (`nodes.farm.BuildPlans`)."""

    def __init__(self, options: BuildOptions, dockerfile: Path, session: Session) -> None:
        import functools  # noqa: PLC0415

        self.session = session

        @functools.cache
        def plan(platform: Platform, machine: Platform, replaced: frozenset[str]) -> BuildGraph:
            # Nothing is read before a node needs a plan (a build without nodes reads none).
            named, _dirs = parse_contexts(options.contexts)  # as the node has them
            sent = {name: NamedContext("layout", "-") for name in replaced}
            return plan_build(dockerfile, platforms=(platform,), build_args=options.build_args,
                              target=options.target, build_platform=machine,
                              build_once=options.build_once,
                              contexts={**named, **sent})  # fmt: skip

        self._plan = plan

    def bases(
        self, platform: Platform, machine: Platform, replaced: Collection[str]
    ) -> dict[str, set[Platform]]:
        """The base images (keyed as its FROM lines can name them) and their platforms."""
        from polyarch.frontend.convert import familiar_name  # noqa: PLC0415
        from polyarch.graph.ops import ImageSource  # noqa: PLC0415

        out: dict[str, set[Platform]] = {}
        graph = self._plan(platform, machine, frozenset(replaced))
        for vertex in graph.vertices.values():
            if isinstance(vertex.op, ImageSource):
                out.setdefault(familiar_name(vertex.op.ref), set()).add(vertex.op.platform)
        return out

    def export_base(self, ref: str, platforms: set[Platform], layout: Path) -> None:
        """A base image from here as an OCI layout (for a node that cannot pull it)."""
        self.session.copy(ref, LayoutLocation(str(layout), "base"),
                          platforms=sorted(platforms, key=str))  # fmt: skip


def _build_with_nodes(
    farm: Farm,
    routes: list[Route],
    builder: Builder,
    request: BuildRequest,
    options: BuildOptions,
    wanted: Sequence[Platform],
    annotations: Sequence[Annotation],
    push_to: Sequence[str] = (),
) -> BuildResult:
    """Nodes build their platforms while this machine builds its own; then one index here,
    and one cache export. With `push_to` (repositories), each node pushes its platforms there
    by digest and only their manifests and configs come here."""
    from polyarch.attest.provenance import merged  # noqa: PLC0415
    from polyarch.build import BuildResult  # noqa: PLC0415
    from polyarch.image.assemble import write_index  # noqa: PLC0415

    started = time.monotonic()
    # --cache-to: one export, here, of this machine's entries and the nodes'.
    cache_to, request = request.cache_to, dataclasses.replace(request, cache_to=None)
    remote_build = _remote_build(options, request, push_to, cache_to)
    local, remote, shared_build = _side_by_side(farm, routes, builder, request, remote_build)
    shared_run, shared_keys = shared_build.steps_run, shared_build.keys
    manifests, images = _platform_images(wanted, builder.layout, local, remote, annotations)
    top = write_index(builder.layout, manifests, annotations)
    steps_run = shared_run + sum(r.steps_run for r in remote.values())
    steps_cached = sum(r.steps_cached for r in remote.values())
    exported = None
    if cache_to is not None:
        # mode=max: every step used here (the build-once stages too); min: the images' own.
        mine = set(shared_keys) if cache_to.mode == "max" else set()
        if local is not None:
            mine |= local.cache_keys if cache_to.mode == "max" else local.image_keys
        theirs = [record for r in remote.values() for record in r.cache_records]
        exported = builder.export_cache(cache_to, wanted, request.target, mine, theirs)
    # A node's platform took the build-once stages from here: their bases are its materials.
    facts = {**(local.facts if local else {}),
             **{p: merged(r.facts, shared_build.facts) for p, r in remote.items()
                if r.facts is not None}}  # fmt: skip
    if local is not None:
        return dataclasses.replace(
            local, descriptor=top, manifests=manifests, images=tuple(images),
            steps_run=local.steps_run + steps_run,
            # The shared stages' steps ran once, above; here they were taken from the cache.
            steps_cached=max(0, local.steps_cached - shared_run) + steps_cached,
            seconds=time.monotonic() - started, cache_export=exported, facts=facts)  # fmt: skip
    return BuildResult(top, manifests, None, steps_run, steps_cached,
                       seconds=time.monotonic() - started, images=tuple(images),
                       cache_export=exported, facts=facts)  # fmt: skip


def _remote_build(
    options: BuildOptions,
    request: BuildRequest,
    push_to: Sequence[str],
    cache_to: CacheSpec | None,
) -> RemoteBuild:
    """What the nodes are asked to build: the secrets' and agents' ids only (a node asks for
    a value when one of its steps mounts it), where to push, and the cache export's mode."""
    from polyarch.nodes.farm import remote_request  # noqa: PLC0415

    remote_build = remote_request(options, request.context, request.dockerfile_path)
    ask = dataclasses.replace(remote_build.ask, secrets=tuple(sorted(request.secrets)),
                              push=tuple(push_to),
                              cache_export=cache_to.mode if cache_to else None)  # fmt: skip
    return dataclasses.replace(remote_build, ask=ask)


def _side_by_side(
    farm: Farm,
    routes: list[Route],
    builder: Builder,
    request: BuildRequest,
    remote_build: RemoteBuild,
) -> tuple[BuildResult | None, dict[Platform, RemoteResult], SharedBuild]:
    """The nodes' platforms built there while the build-once stages they take, then this
    machine's platforms, are built here; a platform whose node died is built here after.
    Returns this machine's result (None: it built no platform), the nodes', and the
    build-once stages built here."""
    import threading  # noqa: PLC0415
    from concurrent.futures import Future  # noqa: PLC0415

    from polyarch.build import SharedBuild  # noqa: PLC0415
    from polyarch.nodes.session import ClientCalls  # noqa: PLC0415
    from polyarch.worker.local.mounts import Agents  # noqa: PLC0415

    routed = dataclasses.replace(request, platforms=tuple(r.platform for r in routes if r.node))
    candidates = builder.planned_shared_stages(routed)
    shared: Future[dict[str, Descriptor]] = Future()
    agents = Agents(dict(request.ssh))  # this machine's, for the nodes' steps (by channel)
    remote: dict[Platform, RemoteResult] = {}
    failed: list[Platform] = []
    errors: list[BaseException] = []

    def on_nodes() -> None:
        try:
            calls = ClientCalls(request.secrets, agents, builder.registry.pull_token)
            done, lost = farm.build(routes, remote_build, builder.layout, shared, candidates,
                                    calls)  # fmt: skip
            remote.update(done)
            failed.extend(lost)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=on_nodes, daemon=True)
    thread.start()
    try:
        built = builder.build_shared_stages(routed) if candidates else SharedBuild()
        shared.set_result(built.stages)
        local = builder.build(request) if request.platforms else None
    except BaseException as exc:
        if not shared.done():
            shared.set_exception(exc)
        farm.abort()  # the nodes' builds are of no use now
        thread.join(timeout=10)
        agents.close()
        raise
    thread.join()
    agents.close()
    if errors:
        raise errors[0]
    if failed:  # their node died: built here after all
        again = builder.build(dataclasses.replace(request, platforms=tuple(failed)))
        local = again if local is None else dataclasses.replace(
            local, manifests={**local.manifests, **again.manifests},
            images=local.images + again.images, steps_run=local.steps_run + again.steps_run,
            steps_cached=local.steps_cached + again.steps_cached,
            cache_keys=local.cache_keys | again.cache_keys,
            image_keys=local.image_keys | again.image_keys,
            facts={**local.facts, **again.facts})  # fmt: skip
    return local, remote, built


def _platform_images(
    wanted: Sequence[Platform],
    layout: OciLayout,
    local: BuildResult | None,
    remote: Mapping[Platform, RemoteResult],
    annotations: Sequence[Annotation],
) -> tuple[dict[Platform, Descriptor], list[PlatformImage]]:
    """Each platform's manifest (from its node or from here) as the index lists it, with its
    manifest-descriptor annotations, and its image's size."""
    from polyarch.build import PlatformImage  # noqa: PLC0415
    from polyarch.image.annotations import for_level  # noqa: PLC0415

    manifests: dict[Platform, Descriptor] = {}
    images: list[PlatformImage] = []
    for platform in wanted:
        if platform in remote:
            descriptor = remote[platform].descriptor
            size = sum(image_blobs(layout, [descriptor]).values())
            images.append(PlatformImage(platform, descriptor, size))
        else:
            assert local is not None
            descriptor = local.manifests[platform]
            images += [i for i in local.images if i.platform == platform]
        entry = for_level(annotations, "manifest-descriptor", platform)
        sorted_entry = dict(sorted(entry.items()))
        manifests[platform] = dataclasses.replace(descriptor, annotations=sorted_entry)
    return manifests, images


def parse_secret(spec: str) -> SecretSource:
    """`id=ID[,src=FILE|source=FILE][,env=VAR][,type=file|env]`, or `ID` alone (the variable
    of that name, as buildx does for a bare id)."""
    from polyarch.worker.local.mounts import SecretSource  # noqa: PLC0415

    fields: dict[str, str] = {}
    for part in filter(None, spec.split(",")):
        key, has_value, value = part.partition("=")
        if has_value:
            fields[key] = value
        else:
            fields["id"] = key
    unknown = set(fields) - {"id", "src", "source", "env", "type"}
    if unknown or not fields.get("id"):
        raise UsageError(f"--secret wants id=ID,src=FILE or id=ID,env=VAR, got {spec!r}")
    secret_id = fields["id"]
    src = fields.get("src") or fields.get("source")
    kind = fields.get("type")
    if kind == "env" or (kind is None and src is None and "env" in fields):
        return SecretSource(secret_id, env=fields.get("env") or src or secret_id)
    if src is None:
        if "env" in fields:
            return SecretSource(secret_id, env=fields["env"])
        return SecretSource(secret_id, env=secret_id)
    path = Path(src).expanduser()
    if not path.is_file():
        raise UsageError(f"--secret {secret_id}: no file {path}")
    return SecretSource(secret_id, file=path)


def parse_ssh(spec: str) -> SshSource:
    """`default` (the caller's SSH_AUTH_SOCK), `ID`, or `ID=KEYFILE|SOCKET`."""
    from polyarch.worker.local.mounts import SshSource  # noqa: PLC0415

    agent_id, has_path, value = spec.partition("=")
    if not agent_id:
        raise UsageError(f"--ssh wants default or ID=KEYFILE|SOCKET, got {spec!r}")
    if not has_path:
        sock = os.environ.get("SSH_AUTH_SOCK")
        if not sock:
            raise UsageError(f"--ssh {agent_id}: SSH_AUTH_SOCK is not set (start ssh-agent, or "
                             "give a key: --ssh ID=KEYFILE)")  # fmt: skip
        return SshSource(agent_id, socket=Path(sock))
    path = Path(value.split(",")[0]).expanduser()
    if path.is_socket():
        return SshSource(agent_id, socket=path)
    if path.is_file():
        return SshSource(agent_id, key=path)
    raise UsageError(f"--ssh {agent_id}: {path} is neither an agent socket nor a key file")


def parse_contexts(
    values: Mapping[str, str],
) -> tuple[dict[str, NamedContext], dict[str, Path]]:
    """`--build-context NAME=VALUE`s: images (`docker-image://`), layouts (`oci-layout://`),
    git repositories, or directories. Returns the contexts and the directories' paths."""
    contexts: dict[str, NamedContext] = {}
    dirs: dict[str, Path] = {}
    for name, value in values.items():
        if not name or name == "context":
            raise UsageError(f"--build-context needs a name other than 'context': {name!r}")
        if value.startswith("docker-image://"):
            contexts[name] = NamedContext("image", value.removeprefix("docker-image://"))
        elif value.startswith("oci-layout://"):
            contexts[name] = NamedContext("layout", value.removeprefix("oci-layout://"))
        elif parse_git_ref(value) is not None:
            contexts[name] = NamedContext("git", value)
        elif value.startswith(("http://", "https://")):
            raise UsageError(f"--build-context {name}={value}: a URL must be a git repository "
                             "(ending in .git); tarball contexts are not supported")  # fmt: skip
        else:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise UsageError(f"--build-context {name}={value}: no such directory")
            dirs[name] = path
            contexts[name] = NamedContext("local", str(path))
    return contexts, dirs


def _git_context(url: str, scratch: Path, keep_git_dir: bool) -> tuple[Path, str]:
    """A git build context (`URL[#REF[:SUBDIR]]`): the tree at REF checked out in `scratch`
    with the host's git (SUBDIR of it when given), and the commit."""
    from polyarch.worker.local.git import check_commit, checkout, git_env  # noqa: PLC0415

    git = parse_git_ref(url)
    assert git is not None
    into = scratch / "repo"
    commit = checkout(git.remote, git.ref, "", into, git_env(),
                      keep_git_dir=bool(git.keep_git_dir) or keep_git_dir,
                      submodules=git.submodules)  # fmt: skip
    check_commit(commit, git.checksum, url)
    tree = into / git.subdir if git.subdir else into
    if not tree.is_dir() or not tree.resolve().is_relative_to(into.resolve()):
        raise UsageError(f"{url}: no directory {git.subdir!r} at {commit[:12]}")
    return tree, commit


def _attest_spec(options: BuildOptions) -> AttestSpec:
    """The attestations the build makes: as asked, and buildx's default on a push."""
    if any(isinstance(o, RegistryOutput) for o in options.outputs):
        return pushed_attestations(options.attest)
    return options.attest


def default_attestations() -> bool:
    """Whether the default attestations are made (BUILDX_NO_DEFAULT_ATTESTATIONS unset or
    false, as buildx reads it)."""
    value = os.environ.get("BUILDX_NO_DEFAULT_ATTESTATIONS", "").strip().lower()
    return value not in ("1", "t", "true", "yes", "on")


def pushed_attestations(spec: AttestSpec) -> AttestSpec:
    """The attestations of an image that is pushed: buildx's default (`mode=min`
    provenance) added unless the build said anything about provenance or the defaults are
    off."""
    return spec.with_default() if default_attestations() else spec


def _attested(
    builder: Builder,
    options: BuildOptions,
    spec: AttestSpec,
    result: BuildResult,
    refs: Sequence[Reference],
    sources: tuple[Path, Path, str],
    started: float,
) -> tuple[BuildResult, Callable[[Descriptor], Descriptor]]:
    """The build's image with its attestations attached (a new index in the store), and how
    to attach them to another form of the image (new manifests: its layers recompressed)."""
    import uuid  # noqa: PLC0415

    from polyarch import __version__  # noqa: PLC0415
    from polyarch.attest.make import SbomParts, attach  # noqa: PLC0415
    from polyarch.attest.provenance import BuildFacts, invocation_id  # noqa: PLC0415
    from polyarch.frontend.dockerfile.checks import looks_secret  # noqa: PLC0415
    from polyarch.frontend.files import read_context_file  # noqa: PLC0415
    from polyarch.image.assemble import timestamp  # noqa: PLC0415

    context, dockerfile, commit = sources
    epoch = _epoch(options)
    if epoch is not None:
        begun = ended = timestamp(epoch)
        invocation = invocation_id(
            [
                str(context.resolve()),
                str(dockerfile.resolve()),
                options.target or "",
                # (a secret-like argument's value is never in what is published, hashed or not)
                *sorted(f"{k}={v}" for k, v in options.build_args.items() if not looks_secret(k)),
            ]
        )
    else:
        begun, ended = _utc(started), _utc(time.time())
        invocation = uuid.uuid4().hex[:25]
    try:
        name = str(dockerfile.relative_to(context))
    except ValueError:
        name = dockerfile.name
    named_dirs = sorted(n for n, v in options.contexts.items()
                        if parse_git_ref(v) is None and "://" not in v)  # fmt: skip
    build = BuildFacts(
        dockerfile_name=name, dockerfile=read_context_file(dockerfile), started=begun,
        finished=ended, invocation_id=invocation, builder_platform=machine_platform(),
        polyarch_version=__version__, build_args=dict(options.build_args),
        labels=dict(options.labels), target=options.target,
        locals=() if commit else ("context", "dockerfile", *named_dirs),
        context_url=options.context if commit and isinstance(options.context, str) else "",
        context_commit=commit, vcs=None if commit else git_vcs(context, dockerfile),
        reproducible=epoch is not None,
    )  # fmt: skip
    names = [*refs, *(t for o in options.outputs if isinstance(o, RegistryOutput)
                      for t in registry_targets(o, refs) if t not in refs)]  # fmt: skip
    parts = SbomParts({p: [(s.stage, s.layers) for s in stages]
                       for p, stages in result.sbom_stages.items()},
                      _context_packages(context, dockerfile) if result.sbom_context
                      else None, builder.workspace.sbom_layers)  # fmt: skip

    def again(top: Descriptor) -> Descriptor:
        manifests = _platform_manifests(builder.layout, top, result.manifests)
        return attach(builder.layout, top, manifests, spec, build, result.facts, names, parts)

    return dataclasses.replace(result, descriptor=again(result.descriptor)), again


def _platform_manifests(
    layout: OciLayout, top: Descriptor, built: Mapping[Platform, Descriptor]
) -> dict[Platform, Descriptor]:
    """Each platform's manifest in the image `top` (`built`: the build's, for one platform)."""
    from polyarch.oci.models import Index, parse_document  # noqa: PLC0415

    if top.media_type == OCI_INDEX:
        document = parse_document(layout.read_document(top), top.media_type)
        assert isinstance(document, Index)
        return {d.platform: d for d in document.images() if d.platform is not None}
    (platform,) = built
    return {platform: dataclasses.replace(top, platform=platform)}


def _context_packages(context: Path, dockerfile: Path) -> list[Package]:
    """The packages the build context's files name (BUILDKIT_SBOM_SCAN_CONTEXT), its
    .dockerignore applied."""
    from polyarch.attest.sbom import scan  # noqa: PLC0415
    from polyarch.patterns import IgnoreMatcher  # noqa: PLC0415

    matcher = IgnoreMatcher(ignore_patterns(dockerfile, context))
    return scan.packages(scan.directory_files(context, matcher.matches))


def _no_stage_scans_on_nodes(parsed: Dockerfile, options: BuildOptions) -> None:
    """An SBOM of a build stage reads its layers here; a node's stages stay there."""
    from polyarch.attest.sbom.targets import scan_targets  # noqa: PLC0415

    every = {stage.display for stage in parsed.stages}
    for stage in parsed.stages:
        _context, stages = scan_targets(parsed, options.build_args, stage.display, every)
        if stages:
            raise UsageError("--sbom with BUILDKIT_SBOM_SCAN_STAGE on a builder's nodes: the "
                             "stages a node builds stay there to be scanned; build here "
                             "(--builder default), or scan the final image only")  # fmt: skip


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
