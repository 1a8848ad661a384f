"""The one module that wires the pure core to its effects, for the CLI and for library users."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform as _host
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from polyarch.errors import DockerfileError, NotFoundError, PolyarchError, UsageError
from polyarch.export.outputs import (
    DockerOutput,
    LocalOutput,
    OciOutput,
    RegistryOutput,
    TarOutput,
)
from polyarch.export.outputs import Output as OutputSpec
from polyarch.frontend.convert import (
    BaseImage,
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
from polyarch.oci.models import (
    Descriptor,
    Document,
    ImageConfig,
    Index,
    Manifest,
    parse_document,
)
from polyarch.platform import Platform, from_uname
from polyarch.progress import Event, Progress, silent
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.registry.credentials import DockerConfigCredentials
from polyarch.registry.retry import RetryPolicy
from polyarch.registry.transport import DEFAULT_IDLE
from polyarch.remotecache.format import parse_cache_spec
from polyarch.store.layout import OciLayout
from polyarch.transfer.copy import TransferProgress, TransferReport, copy_image, create_index
from polyarch.transfer.endpoints import (
    ImageSource,
    ImageTarget,
    LayoutRepository,
    RegistryRepository,
    StoreSource,
    StoreThenRegistry,
    read_small_blob,
)
from polyarch.transfer.location import LayoutLocation, Location, parse_location
from polyarch.version import version

if TYPE_CHECKING:
    from polyarch.build import Builder, BuildRequest, BuildResult
    from polyarch.image.annotations import Annotation
    from polyarch.layers.compare import ImageDiff
    from polyarch.nodes.farm import Farm, Route
    from polyarch.verify import RunSpec, VerifyReport
    from polyarch.worker.local.gc import PruneReport, Usage
    from polyarch.worker.local.mounts import SecretSource, SshSource


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    authfile: Path | None = None
    insecure: tuple[str, ...] = ()
    certs_dirs: tuple[Path, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Seconds a transfer may go without progress (stalled, or trickling) before it fails and
    # is tried again within the operation's retries.
    idle_timeout: float = DEFAULT_IDLE

    @classmethod
    def from_environment(
        cls,
        *,
        authfile: Path | None = None,
        insecure: Sequence[str] = (),
        certs_dirs: Sequence[Path] = (),
        idle_timeout: float | None = None,
    ) -> RegistryOptions:
        """Options from flags, plus `POLYARCH_INSECURE_REGISTRIES` (comma separated) and
        `POLYARCH_IDLE_TIMEOUT` (seconds)."""
        from_env = [
            h.strip()
            for h in os.environ.get("POLYARCH_INSECURE_REGISTRIES", "").split(",")
            if h.strip()
        ]
        if idle_timeout is None:
            text = os.environ.get("POLYARCH_IDLE_TIMEOUT", "").strip()
            try:
                idle_timeout = float(text) if text else DEFAULT_IDLE
            except ValueError:
                raise UsageError(f"POLYARCH_IDLE_TIMEOUT={text!r}: want seconds") from None
        if not 0 < idle_timeout <= 86400:
            raise UsageError(f"idle timeout {idle_timeout:g}: want seconds, above 0")
        return cls(authfile, tuple(insecure) + tuple(from_env), tuple(certs_dirs),
                   idle_timeout=idle_timeout)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """What `polyarch inspect` shows of one image manifest."""

    location: str
    manifest: Manifest
    digest: str
    config: ImageConfig


@dataclass(frozen=True, slots=True)
class IndexSummary:
    location: str
    index: Index
    digest: str


class Session:
    """A registry client with credentials, and the operations the CLI offers."""

    def __init__(self, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self.client = RegistryClient(
            credentials=DockerConfigCredentials.load(self.options.authfile),
            insecure=self.options.insecure,
            certs_dirs=self.options.certs_dirs,
            retry=self.options.retry,
            idle_timeout=self.options.idle_timeout,
        )
        self._fast: RegistryClient | None = None

    def fast_client(self) -> RegistryClient:
        """A client with the same credentials and trust that gives up after one retry: for
        registry mirrors, where the next source is better than waiting."""
        if self._fast is None:
            self._fast = RegistryClient(
                credentials=DockerConfigCredentials.load(self.options.authfile),
                insecure=self.options.insecure, certs_dirs=self.options.certs_dirs,
                retry=RetryPolicy(attempts=2, base_delay=0.1, max_delay=1.0, window=2.0),
                timeout=30.0,
            )  # fmt: skip
        return self._fast

    def close(self) -> None:
        self.client.close()
        if self._fast is not None:
            self._fast.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # endpoints ---------------------------------------------------------------------------

    def source(self, location: Location | str) -> ImageSource:
        where = parse_location(location) if isinstance(location, str) else location
        if isinstance(where, LayoutLocation):
            return LayoutRepository(where, create=False)
        return RegistryRepository(self.client, where)

    def target(self, location: Location | str, *, default_name: str = "latest") -> ImageTarget:
        where = parse_location(location) if isinstance(location, str) else location
        if isinstance(where, LayoutLocation):
            return LayoutRepository(where, create=True, default_name=default_name)
        return RegistryRepository(self.client, where)

    # operations --------------------------------------------------------------------------

    def fetch(self, location: str) -> tuple[ImageSource, Document, str]:
        source = self.source(location)
        fetched = source.resolve()
        return source, fetched.document, str(fetched.digest)

    def inspect(
        self, location: str, platform: Platform | None = None
    ) -> ImageSummary | IndexSummary:
        source, document, digest = self.fetch(location)
        if isinstance(document, Index):
            if platform is None:
                return IndexSummary(str(source), document, digest)
            entry = document.image_for(platform)
            if entry is None:
                have = document.platforms_text()
                raise UsageError(f"{source} has no image for {platform} (it has: {have})")
            child = source.fetch_document(entry)
            if not isinstance(child, Manifest):
                raise UsageError(f"{source}: the {platform} entry is itself an index")
            document, digest = child, str(entry.digest)
        config = ImageConfig.parse(read_small_blob(source, document.config))
        if platform is not None and not platform.matches(config.platform):
            raise UsageError(f"{source} is an image for {config.platform}, not {platform}")
        return ImageSummary(str(source), document, digest, config)

    def copy(
        self,
        src: str | Location,
        dst: str | Location,
        *,
        platforms: Sequence[Platform] = (),
        jobs: int = 8,
        progress: TransferProgress | None = None,
    ) -> TransferReport:
        source_location = parse_location(src) if isinstance(src, str) else src
        default_name = "latest"
        if isinstance(source_location, Reference) and source_location.tag:
            default_name = source_location.tag
        return copy_image(
            self.source(source_location),
            self.target(dst, default_name=default_name),
            platforms=platforms,
            jobs=jobs,
            progress=progress,
        )

    def create_index(
        self,
        dst: str,
        srcs: Sequence[str],
        *,
        annotations: dict[str, str] | None = None,
        jobs: int = 8,
        progress: TransferProgress | None = None,
    ) -> TransferReport:
        return create_index(
            [self.source(s) for s in srcs],
            self.target(dst),
            annotations=annotations,
            jobs=jobs,
            progress=progress,
        )


def index_sources(dst: str, srcs: Sequence[str], metadata_files: Sequence[Path] = ()) -> list[str]:
    """The images `index create DST` assembles: each SRC as given, a bare `sha256:...` meaning
    that digest in DST's repository, and the image each `--metadata-file` of a single-platform
    build names (`image.name` and `containerimage.digest`: the CI-matrix path, one runner per
    platform pushing by digest)."""
    target = parse_location(dst)
    out: list[str] = []
    for src in srcs:
        if src.startswith("sha256:"):
            if isinstance(target, LayoutLocation):
                raise UsageError(f"{src}: a bare digest needs a registry DST, not {dst}")
            out.append(f"{target.name}@{src}")
        else:
            out.append(src)
    for path in metadata_files:
        out.append(_metadata_source(path, target))
    if not out:
        raise UsageError("index create needs at least one SRC or --from-metadata FILE")
    return out


def _metadata_source(path: Path, target: Location) -> str:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a build metadata file (want a JSON object)")
    digest, names = data.get("containerimage.digest"), data.get("image.name")
    if not isinstance(digest, str) or not isinstance(names, str) or not names:
        raise UsageError(f"{path}: no containerimage.digest and image.name (write it with "
                         "`polyarch build --push ... --metadata-file FILE`)")  # fmt: skip
    candidates = []
    for name in names.split(","):
        try:
            candidates.append(Reference.parse(name.strip(), default_tag=None))
        except PolyarchError as exc:
            raise UsageError(f"{path}: image.name {name!r}: {exc}") from None
    same = [c for c in candidates if isinstance(target, Reference) and c.name == target.name]
    chosen = (same or candidates)[0]
    return f"{chosen.name}@{digest}"


def default_root() -> Path:
    """Where polyarch keeps its store, cache and snapshots: `POLYARCH_ROOT`, else the
    platform's data directory (as root: /var/lib/polyarch)."""
    if os.environ.get("POLYARCH_ROOT"):
        return Path(os.environ["POLYARCH_ROOT"])
    from polyarch.runtime.userns import rootless  # noqa: PLC0415

    if os.geteuid() == 0 and not rootless():
        return Path("/var/lib/polyarch")
    return Path(platformdirs.user_data_dir("polyarch"))  # an ordinary user's, rootless too


@dataclass(frozen=True, slots=True)
class LocalImage:
    name: str
    descriptor: Descriptor
    platforms: tuple[str, ...]
    size: int


def local_images(root: Path) -> list[LocalImage]:
    """Images kept in the local store, by name."""
    layout = OciLayout(root / "store")
    out: list[LocalImage] = []
    for name, entry in sorted(layout.refs().items()):
        document = parse_document(layout.read_document(entry), entry.media_type)
        if isinstance(document, Index):
            platforms = tuple(str(d.platform) for d in document.images() if d.platform)
            size = 0
            for child in document.images():
                sub = parse_document(layout.read_document(child), child.media_type)
                if isinstance(sub, Manifest):
                    size += sum(b.size for b in sub.blobs())
        else:
            config = ImageConfig.parse(layout.blobs.read_bytes(document.config.digest))
            platforms = (str(config.platform),)
            size = sum(b.size for b in document.blobs())
        out.append(LocalImage(name, entry, platforms, size))
    return out


def git_version(directory: Path, base_version: str) -> str:
    """The seed's version of the git work tree at `directory` (see polyarch.version)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise UsageError("git is not installed") from None
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
            if "not a git repository" in done.stderr:
                raise UsageError(f"{directory} is not in a git repository") from None
            raise UsageError(f"git {' '.join(args)} failed: {message}")
        return done.stdout

    head = git("rev-parse", "HEAD").strip()
    tags = git("tag", "--contains", head).splitlines()
    dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    return version(tags, head, base_version, dirty=dirty)


def machine_platform() -> Platform:
    """The platform of the machine polyarch runs on."""
    return from_uname(_host.system(), _host.machine())


def plan_build(
    dockerfile: Path,
    *,
    platforms: Sequence[Platform] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    build_platform: Platform | None = None,
    build_once: str | frozenset[str] = "auto",
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
    build_once: str | frozenset[str] = "auto"
    ca_certs: Path | None = None
    allow: frozenset[str] = frozenset()
    secrets: tuple[str, ...] = ()  # --secret id=ID[,src=FILE|,env=VAR]
    # Secrets whose values come from elsewhere (a node's: the client that started the build).
    secret_sources: Mapping[str, SecretSource] = field(default_factory=dict)
    ssh_sources: Mapping[str, SshSource] = field(default_factory=dict)  # a node's: the client's
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


@dataclass(frozen=True, slots=True)
class Output:
    """An output written: `kind` registry (pushed to `name`), oci, docker (archives, or a
    directory: `name` is where, "-" for stdout), load (`name`: what the engine said), local
    or tar (the final stage's files)."""

    kind: str
    name: str
    digest: str = ""


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
    from polyarch.build import Builder, BuildRequest  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    if os.geteuid() != 0:  # the CLI enters its user namespace first (polyarch.runtime.userns)
        raise UsageError("building needs root, or polyarch's rootless user namespace: run "
                         "the polyarch command, which enters it, or run as root")  # fmt: skip
    refs = [Reference.parse(t) for t in options.tags]
    if not options.explain_as:
        options = dataclasses.replace(options, explain_as=_explain_as(options))
    epoch_env = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch_env and "SOURCE_DATE_EPOCH" not in options.build_args:
        # As buildx: the environment's SOURCE_DATE_EPOCH is a build argument, so `ARG
        # SOURCE_DATE_EPOCH` sees it and a builder's node builds with it too.
        args = {**options.build_args, "SOURCE_DATE_EPOCH": epoch_env}
        options = dataclasses.replace(options, build_args=args)
    for output in options.outputs:  # checked before anything runs
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
                                           o.compression.is_default
                                           for o in options.outputs or (None,)):  # fmt: skip
        raise UsageError("--push-from-nodes needs --push (or --output type=registry) and no "
                         "other output: the nodes' platforms are pushed from the nodes and do "
                         "not come to this machine, so nothing here can export them")  # fmt: skip
    push_to = sorted({f"{t.registry}/{t.repository}" for output in options.outputs
                      if isinstance(output, RegistryOutput)
                      for t in _registry_targets(output, refs)})  # fmt: skip
    annotations = parse_annotations(options.annotations)
    if len(options.platforms) < 2 and any(a.level != "manifest" for a in annotations):
        raise UsageError("index and manifest-descriptor annotations need an index: build two "
                         "or more platforms, or annotate the manifest")  # fmt: skip
    machine = machine_platform()
    args = dict(options.build_args)
    epoch_text = args.get("SOURCE_DATE_EPOCH")
    epoch = int(epoch_text) if epoch_text and epoch_text.isdigit() else None
    if builder is None:
        builder = Builder(Workspace(options.root or default_root()), session.client,
                          progress=progress or silent, mirrors=options.mirrors,
                          mirror_client=session.fast_client())  # fmt: skip
    contexts, context_dirs = parse_contexts(options.contexts)
    with contextlib.ExitStack() as stack:
        context, dockerfile = _context_and_dockerfile(options, stack)
        _result, parsed = read_dockerfile(dockerfile)
        wanted = options.platforms or (machine,)
        farm, routes = _farm(options, wanted, progress or silent)
        if farm is not None:
            plans = _node_plans(options, dockerfile)
            farm.bases, farm.export_base = _base_images(session, plans)
            farm.context_paths = _context_paths(plans)
            stack.callback(farm.close)
        elif options.push_from_nodes:
            said = "--push-from-nodes: no platform is built on a node; pushed from here"
            (progress or silent)(Event("note", "", "builder", text=said))
        local = tuple(r.platform for r in routes if r.node is None) if farm else wanted
        request = BuildRequest(
            parsed, context, dockerfile, local, machine, args,
            options.target, dict(options.labels), options.no_cache, epoch, options.jobs,
            options.build_once, options.ca_certs, options.allow,
            {**{s.id: s for s in map(parse_secret, options.secrets)}, **options.secret_sources},
            {**{s.id: s for s in map(parse_ssh, options.ssh)}, **options.ssh_sources},
            contexts, context_dirs,
            tuple(parse_cache_spec(c, export=False) for c in options.cache_from),
            parse_cache_spec(options.cache_to, export=True) if options.cache_to else None,
            options.step_timeout,
            annotations if farm is None else tuple(a for a in annotations
                                                   if a.level == "manifest"),
            extra_hosts=options.add_hosts, network=options.network, ulimits=options.ulimits,
            shm_size=options.shm_size,
            no_cache_filter=frozenset(s.lower() for s in options.no_cache_filter),
            emulator_install=options.emulator_install, explain_as=options.explain_as,
        )  # fmt: skip
        if pending:
            return builder.warm(request, pending)
        if farm is None:
            result = builder.build(request)
        else:
            pushing = push_to if options.push_from_nodes else []
            result = _build_with_nodes(farm, routes, builder, request, options, wanted,
                                       annotations, pushing)  # fmt: skip
    # Pushed from the nodes: the image is not whole here, so it is not kept under a name.
    from_nodes = options.push_from_nodes and farm is not None
    names = [] if from_nodes else [str(r) for r in refs] or [str(result.descriptor.digest)]
    for name in names:
        builder.layout.set_ref(name, result.descriptor)
    for owner in sorted({r.name for r in refs}):
        builder.cache.claim(result.cache_keys, owner)  # what `polyarch clean` may forget
    sink = progress or silent
    written = tuple(
        _write_output(output, session, builder, result, refs, from_nodes, epoch, sink)
        for output in options.outputs
    )
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
) -> tuple[Path, Path]:
    """The build context as a directory (a git URL cloned, removed when `stack` closes) and
    the Dockerfile's path."""
    context, dockerfile = options.context, options.dockerfile
    if isinstance(context, str):
        # Not in the workspace's scratch: a build clears that when it starts.
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="polyarch-git-")))
        keep = options.build_args.get("BUILDKIT_CONTEXT_KEEP_GIT_DIR", "") in ("1", "true")
        context = _git_context(context, scratch, keep)
        if dockerfile is not None and not dockerfile.is_absolute():
            dockerfile = context / dockerfile  # a relative -f names a file of the repository
    return context, dockerfile or context / "Dockerfile"


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
        context, dockerfile = _context_and_dockerfile(options, stack)
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
        images = builder.base_configs(base_images(draft))
        return check_dockerfile(parsed, path, args, lambda df: request(df, images))


def _registry_targets(output: RegistryOutput, refs: Sequence[Reference]) -> list[Reference]:
    """Where a registry output pushes: its `name=` (comma separated), else the tags."""
    if output.names:
        return [Reference.parse(n) for n in output.names]
    return list(refs)


def _write_output(
    output: OutputSpec,
    session: Session,
    builder: Builder,
    result: BuildResult,
    refs: Sequence[Reference],
    from_nodes: bool,
    epoch: int | None,
    progress: Progress,
) -> Output:
    """One output of a build, from the store (its layers recompressed first when it asks)."""
    from polyarch.export import docker_archive, engine, rootfs  # noqa: PLC0415
    from polyarch.export.recompress import recompressed  # noqa: PLC0415

    layout = builder.layout
    top = result.descriptor
    compression = getattr(output, "compression", None)
    if compression is not None and not compression.is_default:
        with _TransferRow(progress, f"compress layers ({compression.kind})", layout, ()):
            top = recompressed(layout, top, compression, result.base_layers)
    rows = result.manifests.values()
    tags = [str(r) for r in refs]
    if isinstance(output, RegistryOutput):
        pushed: list[str] = []
        for target in _registry_targets(output, refs):
            pinned = Reference(target.registry, target.repository, None, top.digest)
            destination = pinned if output.push_by_digest else target
            with _TransferRow(progress, f"push {destination}", layout, rows) as row:
                if from_nodes:  # the nodes' platforms are in the repository already
                    there = RegistryRepository(session.client, target)
                    merged = StoreThenRegistry(layout, top, there)
                    report = copy_image(merged, session.target(str(destination)),
                                        progress=row.blob)  # fmt: skip
                else:
                    report = copy_image(StoreSource(layout, top),
                                        session.target(str(destination)),
                                        progress=row.blob)  # fmt: skip
                row.summary = (f"{report.uploaded} uploaded, {report.mounted} mounted, "
                               f"{report.existing} already there")  # fmt: skip
            pushed.append(str(report.name))
        return Output("registry", ",".join(pushed), str(top.digest))
    if isinstance(output, OciOutput):
        name = output.name or (refs[0].tag if refs and refs[0].tag else "latest")
        with _TransferRow(progress, f"export to {output.dest}", layout, rows) as row:
            if not output.tar:
                report = copy_image(StoreSource(layout, top),
                                    session.target(LayoutLocation(output.dest, name)),
                                    progress=row.blob)  # fmt: skip
            else:
                full = [output.name] if output.name else tags[:1]
                _to_dest(output.dest, lambda out: docker_archive.write_oci_archive(
                    layout, top, full, out))  # fmt: skip
        return Output("oci", output.dest, str(top.digest))
    if isinstance(output, DockerOutput):
        named = [output.name] if output.name else tags
        if output.load:
            with _TransferRow(progress, "load into the local engine", layout, rows) as row:
                row.summary = engine.load_image(layout, top, named)
            return Output("load", row.summary, str(top.digest))
        with _TransferRow(progress, f"write docker archive {output.dest}", layout, rows):
            _to_dest(output.dest, lambda out: docker_archive.write_docker_archive(
                layout, top, named, out))  # fmt: skip
        return Output("docker", output.dest, str(top.digest))
    if isinstance(output, LocalOutput):
        with _TransferRow(progress, f"copy files to {output.dest}", layout, ()):
            rootfs.write_local(layout, top, Path(output.dest), output.platform_split)
        return Output("local", output.dest, str(top.digest))
    with _TransferRow(progress, f"write files as tar {output.dest}", layout, ()):
        _to_dest(output.dest, lambda out: rootfs.write_tar(
            layout, top, out, output.platform_split, epoch, builder.workspace.tmp))  # fmt: skip
    return Output("tar", output.dest, str(top.digest))


def _to_dest(dest: str, write: Callable[[Any], None]) -> None:
    """`write` into the file `dest` (written whole or not at all), or stdout for "-"."""
    if dest == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    path = Path(dest)
    if path.is_dir():
        raise UsageError(f"--output: dest={dest} is a directory; name the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as out:
            write(out)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class _TransferRow:
    """A push or an export as a row of the build's progress: bytes of the image's blobs done of
    the total (each blob counted when it is at the target: copied, mounted or already there)."""

    def __init__(
        self,
        progress: Progress,
        description: str,
        layout: OciLayout,
        manifests: Iterable[Descriptor],
    ) -> None:
        import threading  # noqa: PLC0415

        self.progress, self.description = progress, description
        self.total, self.done = sum(_image_blobs(layout, manifests).values()), 0
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.summary = ""

    def __enter__(self) -> _TransferRow:
        self.progress(Event("start", "", self.description))
        return self

    def blob(self, event: str, descriptor: Descriptor, _detail: str) -> None:
        if event != "blob":
            return
        with self.lock:
            self.done += descriptor.size
            done = self.done
        self.progress(Event("progress", "", self.description, current=done, total=self.total))

    def __exit__(self, kind: object, exc: object, _tb: object) -> None:
        if exc is None:
            self.progress(Event("done", "", self.description, text=self.summary,
                                seconds=time.monotonic() - self.started))  # fmt: skip
        else:
            self.progress(Event("error", "", self.description, text=str(exc)))


def open_builder(
    builder: str | None,
    platforms: Sequence[Platform],
    progress: Progress,
    *,
    fallback: bool = True,
) -> tuple[Farm, list[Route]] | None:
    """The builder's nodes reached and each platform routed (the caller closes the farm), or
    None when the builder (default: the current one) is this machine alone."""
    from polyarch.nodes.builders import BuilderStore  # noqa: PLC0415
    from polyarch.nodes.farm import Farm  # noqa: PLC0415
    from polyarch.runtime import binfmt  # noqa: PLC0415

    spec = BuilderStore().get(builder)
    if not spec.nodes:
        return None
    farm = Farm(spec, progress, fallback=fallback)
    farm.open()
    machine = machine_platform()
    return farm, farm.routes(platforms, machine, binfmt.registered(machine))


def _farm(
    options: BuildOptions, wanted: Sequence[Platform], progress: Progress
) -> tuple[Farm | None, list[Route]]:
    """The builder's nodes reached and the platforms routed, or (None, []) for this machine."""
    opened = open_builder(options.builder, wanted, progress, fallback=options.fallback)
    if opened is None:
        return None, []
    farm, routes = opened
    for route in routes:
        farm.note(f"{route.platform} is built on {route.where}: {route.why}")
    if all(r.node is None for r in routes):
        farm.close()
        return None, []
    return farm, routes


_NodePlan = Callable[[Platform, Platform, Collection[str]], BuildGraph]


def _node_plans(options: BuildOptions, dockerfile: Path) -> _NodePlan:
    """A node's plan of one platform (on its machine, with the stages it is sent replaced, as
    it plans them), each made once: what its base images and context paths are read from."""
    import functools  # noqa: PLC0415

    named, _dirs = parse_contexts(options.contexts)  # --build-context, as the node has them

    @functools.cache
    def plan(platform: Platform, machine: Platform, replaced: frozenset[str]) -> BuildGraph:
        sent = {name: NamedContext("layout", "-") for name in replaced}
        return plan_build(dockerfile, platforms=(platform,), build_args=options.build_args,
                          target=options.target, build_platform=machine,
                          build_once=options.build_once,
                          contexts={**named, **sent})  # fmt: skip

    return lambda platform, machine, replaced: plan(platform, machine, frozenset(replaced))


def _base_images(
    session: Session, plans: _NodePlan
) -> tuple[
    Callable[[Platform, Platform, Collection[str]], dict[str, set[Platform]]],
    Callable[[str, set[Platform], Path], None],
]:
    """For a node that cannot pull: which base images a platform's build uses (keyed as its
    FROM lines can name them), and their export from this machine as an OCI layout."""
    from polyarch.frontend.convert import familiar_name  # noqa: PLC0415
    from polyarch.graph.ops import ImageSource  # noqa: PLC0415

    def bases(
        platform: Platform, build_platform: Platform, replaced: Collection[str]
    ) -> dict[str, set[Platform]]:
        out: dict[str, set[Platform]] = {}
        for vertex in plans(platform, build_platform, replaced).vertices.values():
            if isinstance(vertex.op, ImageSource):
                out.setdefault(familiar_name(vertex.op.ref), set()).add(vertex.op.platform)
        return out

    def export(ref: str, platforms: set[Platform], layout: Path) -> None:
        session.copy(ref, LayoutLocation(str(layout), "base"),
                     platforms=sorted(platforms, key=str))  # fmt: skip

    return bases, export


def _context_paths(plans: _NodePlan) -> Callable[[Platform, Platform, Collection[str]], set[str]]:
    """What a node's build of a platform takes from the main context (the paths its copies
    and mounts name)."""
    from polyarch.graph.ops import ContextSource  # noqa: PLC0415

    def paths(platform: Platform, machine: Platform, shared: Collection[str]) -> set[str]:
        return {path for vertex in plans(platform, machine, shared).vertices.values()
                if isinstance(vertex.op, ContextSource) and vertex.op.name == "context"
                for path in vertex.op.includes}  # fmt: skip

    return paths


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
    """Nodes build their platforms while this machine builds its own; then one index here.
    With `push_to` (repositories), each node pushes its platforms there by digest and only
    their manifests and configs come here."""
    import threading  # noqa: PLC0415
    from concurrent.futures import Future  # noqa: PLC0415

    from polyarch.build import BuildResult, PlatformImage  # noqa: PLC0415
    from polyarch.image.annotations import for_level  # noqa: PLC0415
    from polyarch.image.assemble import write_index  # noqa: PLC0415
    from polyarch.nodes.farm import remote_request  # noqa: PLC0415
    from polyarch.worker.local.mounts import Agents  # noqa: PLC0415

    started = time.monotonic()
    remote_build = remote_request(options, request.context, request.dockerfile_path)
    # The secrets' ids only: a node asks for a value when one of its steps mounts it, and
    # keeps it in memory (NodeConnection answers from request.secrets).
    ask = dataclasses.replace(remote_build.ask, secrets=tuple(sorted(request.secrets)),
                              push=tuple(push_to))  # fmt: skip
    remote: dict[Platform, Any] = {}
    failed: list[Platform] = []
    errors: list[BaseException] = []
    # Build-once stages run here, once, and their outputs go to the nodes; meanwhile each
    # node runs what does not wait for them.
    routed = dataclasses.replace(request, platforms=tuple(r.platform for r in routes if r.node))
    candidates = builder.planned_shared_stages(routed)
    # --cache-to: one export, here, of this machine's entries and the nodes' (below).
    cache_to, request = request.cache_to, dataclasses.replace(request, cache_to=None)
    ask = dataclasses.replace(ask, cache_export=cache_to.mode if cache_to else None)
    shared: Future[dict[str, Descriptor]] = Future()

    agents = Agents(dict(request.ssh))  # this machine's, for the nodes' steps (by channel)

    def on_nodes() -> None:
        try:
            done, lost = farm.build(routes, dataclasses.replace(remote_build, ask=ask),
                                    request.context, request.dockerfile_path,
                                    builder.layout, shared, candidates,
                                    secrets=request.secrets, agents=agents,
                                    tokens=builder.registry.pull_token)  # fmt: skip
            remote.update(done)
            failed.extend(lost)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=on_nodes, daemon=True)
    thread.start()
    try:
        stages, shared_run, shared_keys = (builder.build_shared_stages(routed) if candidates
                                           else ({}, 0, frozenset()))  # fmt: skip
        shared.set_result(stages)
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
            image_keys=local.image_keys | again.image_keys)  # fmt: skip
    manifests: dict[Platform, Descriptor] = {}
    images = []
    for platform in wanted:
        if platform in remote:
            descriptor = remote[platform].descriptor
            size = sum(_image_blobs(builder.layout, [descriptor]).values())
            images.append(PlatformImage(platform, descriptor, size))
        else:
            assert local is not None
            descriptor = local.manifests[platform]
            images += [i for i in local.images if i.platform == platform]
        entry = for_level(annotations, "manifest-descriptor", platform)
        manifests[platform] = dataclasses.replace(
            descriptor, annotations=dict(sorted(entry.items()))
        )
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
    if local is not None:
        return dataclasses.replace(
            local, descriptor=top, manifests=manifests, images=tuple(images),
            steps_run=local.steps_run + steps_run,
            # The shared stages' steps ran once, above; here they were taken from the cache.
            steps_cached=max(0, local.steps_cached - shared_run) + steps_cached,
            seconds=time.monotonic() - started, cache_export=exported)  # fmt: skip
    return BuildResult(top, manifests, None, steps_run, steps_cached,
                       seconds=time.monotonic() - started, images=tuple(images),
                       cache_export=exported)  # fmt: skip


def _image_blobs(layout: OciLayout, manifests: Iterable[Descriptor]) -> dict[str, int]:
    """The config and layers of these stored manifests (each blob once): digest -> size."""
    blobs: dict[str, int] = {}
    for descriptor in manifests:
        document = parse_document(layout.blobs.read_bytes(descriptor.digest, descriptor.size))
        if isinstance(document, Manifest):
            blobs.update({str(b.digest): b.size for b in document.blobs()})
    return blobs


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


def _git_context(url: str, scratch: Path, keep_git_dir: bool) -> Path:
    """A git build context (`URL[#REF[:SUBDIR]]`): the tree at REF checked out in `scratch`
    with the host's git; SUBDIR of it when given."""
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
    return tree


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """`release`: the build, what was pushed by digest, the verification, and the tags moved
    (none when a check failed: the tags were left as they were)."""

    build: BuildReport
    pinned: str
    verify: VerifyReport
    released: tuple[tuple[str, str], ...] = ()  # (tag, digest)

    @property
    def ok(self) -> bool:
        return self.verify.ok


def release(
    session: Session,
    options: BuildOptions,
    run: RunSpec | None,
    *,
    progress: Progress | None = None,
    note: Callable[[str], None] = lambda _line: None,
    arch_check: bool = True,
) -> ReleaseResult:
    """Build, push by digest, verify every platform, and only then move the tags."""
    built = build_image(session, dataclasses.replace(options, outputs=()), progress=progress)
    pinned = [push_pinned(session, name, options.root) for name in built.names]
    report = verify_image(session, pinned[0], platforms=options.platforms, run=run,
                          root=options.root, note=note, arch_check=arch_check)  # fmt: skip
    if not report.ok:
        return ReleaseResult(built, pinned[0], report)
    moved = tuple((name, move_tag(session, name, options.root)) for name in built.names)
    return ReleaseResult(built, pinned[0], report, moved)


def push_pinned(session: Session, name: str, root: Path | None = None) -> str:
    """Push the locally kept image `name` by digest only: every blob, manifest and the index
    reach the registry, and no tag moves. Returns `REPOSITORY@DIGEST`."""
    store = (root or default_root()) / "store"
    ref = Reference.parse(name)
    descriptor = OciLayout(store).resolve(str(ref))
    pinned = f"{ref.name}@{descriptor.digest}"
    session.copy(LayoutLocation(str(store), str(ref)), pinned)
    return pinned


def move_tag(session: Session, name: str, root: Path | None = None) -> str:
    """Point the registry tag `name` at the locally kept image of that name, already pushed by
    digest (one small PUT of the top document's exact bytes). Returns its digest."""
    layout = OciLayout((root or default_root()) / "store")
    ref = Reference.parse(name)
    descriptor = layout.resolve(str(ref))
    session.client.put_manifest(ref, layout.read_document(descriptor), descriptor.media_type)
    return str(descriptor.digest)


def verify_image(
    session: Session,
    location: str,
    *,
    platforms: Sequence[Platform] = (),
    run: RunSpec | None = None,
    root: Path | None = None,
    jobs: int = 4,
    note: Callable[[str], None] = lambda _line: None,
    arch_check: bool = True,
) -> VerifyReport:
    """Check every platform of a pushed image (see polyarch.verify), and run each one."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415 (the engine when needed)
    from polyarch.verify import Verifier  # noqa: PLC0415
    from polyarch.worker.local.worker import BuildSession, LocalWorker  # noqa: PLC0415

    workspace = Workspace(root or default_root())
    machine = machine_platform()
    worker = LocalWorker(workspace, BuildSession(), machine, on_note=note)
    with workspace.exclusive():  # what clean removes is not under a running image
        verifier = Verifier(session.source(location), worker, machine, note=note,
                            arch_check=arch_check)  # fmt: skip
        try:
            return verifier.verify(platforms, run, jobs=jobs)
        except NotFoundError as exc:
            local = _kept_locally(location, root or default_root())
            if local is None:
                raise
            raise NotFoundError(f"{exc.message}; {local} exists only in the local store: push "
                                f"it with `polyarch push {local}` first", status=exc.status,
                                code=exc.code, reference=exc.reference) from None  # fmt: skip


def _kept_locally(location: str, root: Path) -> str | None:
    """The local store's name for `location`, when it keeps an image by that name."""
    try:
        wanted = str(Reference.parse(location))
    except PolyarchError:
        return None
    for image in local_images(root):
        try:
            if str(Reference.parse(image.name)) == wanted:
                return image.name
        except PolyarchError:
            continue  # a digest, or a name that is not a reference
    return None


def clean_images(repository: str, root: Path | None = None) -> PruneReport:
    """Remove the local images `repository` names (`NAME`: every tag; `NAME:TAG`,
    `NAME@DIGEST`, or `sha256:X` for an untagged one: only that), the cache entries only they
    used, and every blob and snapshot nothing else needs."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415
    from polyarch.worker.local.gc import remove_images  # noqa: PLC0415

    return remove_images(Workspace(root or default_root()), repository)


def workspace_usage(root: Path | None = None) -> list[Usage]:
    """What the workspace holds (`polyarch du`)."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415
    from polyarch.worker.local.gc import disk_usage  # noqa: PLC0415

    return disk_usage(Workspace(root or default_root()))


def prune_workspace(
    root: Path | None = None,
    *,
    cache_mounts: bool = False,
    keep_storage: int | None = None,
    older_than: float | None = None,
) -> PruneReport:
    """Free the workspace (`polyarch prune`): build steps, the untagged images of earlier
    builds, and cache mounts when asked; the tagged images stay."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415
    from polyarch.worker.local.gc import prune  # noqa: PLC0415

    return prune(Workspace(root or default_root()), cache_mounts=cache_mounts,
                 keep_storage=keep_storage, older_than=older_than)  # fmt: skip


__all__ = [
    "BuildOptions",
    "BuildReport",
    "Descriptor",
    "ImageSummary",
    "IndexSummary",
    "LocalImage",
    "Output",
    "RegistryOptions",
    "ReleaseResult",
    "Session",
    "build_image",
    "clean_images",
    "default_root",
    "git_version",
    "local_images",
    "machine_platform",
    "move_tag",
    "plan_build",
    "prune_workspace",
    "push_pinned",
    "read_dockerfile",
    "release",
    "verify_image",
    "workspace_usage",
]


def diff_images(
    session: Session,
    names: Sequence[str],
    platforms: Sequence[Platform] = (),
    root: Path | None = None,
) -> list[ImageDiff]:
    """Compare two images (or two platforms of one): see `polyarch.diff`. A name is looked up
    in the local store first (`polyarch images`), then as an OCI layout or registry
    reference."""
    from polyarch.diff import diff, local_source  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    workspace = Workspace(root or default_root())
    sources: list[ImageSource] = []
    for name in names:
        local = None if name.startswith("oci:") else local_source(workspace.layout, name)
        sources.append(local if local is not None else session.source(name))
    return diff(sources, platforms, workspace.layout.blobs, names)
