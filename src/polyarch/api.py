"""The one module that wires the pure core to its effects, for the CLI and for library users."""

from __future__ import annotations

import dataclasses
import errno
import os
import platform as _host
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from polyarch.errors import DockerfileError, UsageError
from polyarch.export import write_docker_archive
from polyarch.frontend.convert import ConvertRequest, convert
from polyarch.frontend.dockerfile import Dockerfile, ParseResult, build, parse
from polyarch.graph.model import BuildGraph
from polyarch.oci.models import (
    Descriptor,
    Document,
    ImageConfig,
    Index,
    Manifest,
    parse_document,
)
from polyarch.platform import Platform, from_uname
from polyarch.progress import Progress, silent
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.registry.credentials import DockerConfigCredentials
from polyarch.registry.retry import RetryPolicy
from polyarch.store.layout import OciLayout
from polyarch.transfer.copy import TransferProgress, TransferReport, copy_image, create_index
from polyarch.transfer.endpoints import (
    ImageSource,
    ImageTarget,
    LayoutRepository,
    RegistryRepository,
    read_small_blob,
)
from polyarch.transfer.location import LayoutLocation, Location, parse_location
from polyarch.version import version

if TYPE_CHECKING:
    from polyarch.build import BuildResult
    from polyarch.store.gc import PruneReport
    from polyarch.verify import RunSpec, VerifyReport


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    authfile: Path | None = None
    insecure: tuple[str, ...] = ()
    certs_dirs: tuple[Path, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_environment(
        cls,
        *,
        authfile: Path | None = None,
        insecure: Sequence[str] = (),
        certs_dirs: Sequence[Path] = (),
    ) -> RegistryOptions:
        """Options from flags, plus `POLYARCH_INSECURE_REGISTRIES` (comma separated)."""
        from_env = [
            h.strip()
            for h in os.environ.get("POLYARCH_INSECURE_REGISTRIES", "").split(",")
            if h.strip()
        ]
        return cls(authfile, tuple(insecure) + tuple(from_env), tuple(certs_dirs))


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
        )

    def close(self) -> None:
        self.client.close()

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


def default_root() -> Path:
    """Where polyarch keeps its store, cache and snapshots: `POLYARCH_ROOT`, else the
    platform's data directory (as root: /var/lib/polyarch)."""
    if os.environ.get("POLYARCH_ROOT"):
        return Path(os.environ["POLYARCH_ROOT"])
    if os.geteuid() == 0:
        return Path("/var/lib/polyarch")
    return Path(platformdirs.user_data_dir("polyarch"))


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


def read_dockerfile(path: Path) -> tuple[ParseResult, Dockerfile]:
    """Read, parse and check a Dockerfile; errors name the file and line."""
    try:
        text = read_context_file(path).decode("utf-8")  # bytes: keep \r\n as BuildKit does
    except FileNotFoundError:
        raise DockerfileError("no such file", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DockerfileError(f"cannot read: not UTF-8 ({exc.reason})", path=str(path)) from None
    except OSError as exc:
        raise DockerfileError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    result = parse(text, str(path))
    return result, build(result, str(path))


MAX_DOCKERFILE = 16 * 1024 * 1024


def read_context_file(path: Path, limit: int = MAX_DOCKERFILE) -> bytes:
    """A Dockerfile or ignore file: never through a symlink (a context is not trusted: it
    could point at a host secret, which an error would then show), never a device or a
    pipe, never more than `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            target = path.readlink()
            raise OSError(exc.errno, f"it is a symlink (to {target}): give that file with -f"
                          ) from None  # fmt: skip
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"over {limit} bytes")
    return data


def plan_build(
    dockerfile: Path,
    *,
    platforms: Sequence[Platform] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    build_platform: Platform | None = None,
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
        )
    )


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """What to build and how (the flags of `polyarch build`, resolved)."""

    context: Path
    dockerfile: Path
    tags: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    outputs: tuple[Mapping[str, str], ...] = ()
    root: Path | None = None
    jobs: int = 1
    build_once: str | frozenset[str] = "auto"
    ca_certs: Path | None = None
    allow: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Output:
    """An output written: `kind` registry (pushed to `name`), oci (a layout) or docker."""

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
    session: Session, options: BuildOptions, *, progress: Progress | None = None
) -> BuildReport:
    """Build, keep the image in the local store under each tag, then push or export it."""
    # Imported here, not at the top: registry-only commands start faster without the engine.
    from polyarch.build import Builder, BuildRequest  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    refs = [Reference.parse(t) for t in options.tags]
    _result, parsed = read_dockerfile(options.dockerfile)
    machine = machine_platform()
    args = dict(options.build_args)
    epoch_text = args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    epoch = int(epoch_text) if epoch_text and epoch_text.isdigit() else None
    workspace = Workspace(options.root or default_root())
    builder = Builder(workspace, session.client, progress=progress or silent)
    request = BuildRequest(
        parsed, options.context, options.dockerfile, options.platforms or (machine,), machine,
        args, options.target, dict(options.labels), options.no_cache, epoch, options.jobs,
        options.build_once, options.ca_certs, options.allow,
    )  # fmt: skip
    result = builder.build(request)
    names = [str(r) for r in refs] or [str(result.descriptor.digest)]
    for name in names:
        builder.layout.set_ref(name, result.descriptor)
    for owner in sorted({r.name for r in refs}):
        builder.cache.claim(result.cache_keys, owner)  # what `polyarch clean` may forget
    written: list[Output] = []
    store = workspace.store
    for output in options.outputs:
        kind = output.get("type")
        if kind == "registry":
            if not refs:
                raise UsageError("pushing needs a tag (-t REGISTRY/NAME:TAG)")
            for ref in refs:
                report = session.copy(LayoutLocation(str(store), str(ref)), str(ref))
                written.append(Output("registry", str(report.name), str(report.digest)))
        elif kind == "oci":
            name = refs[0].tag if refs and refs[0].tag else "latest"
            report = session.copy(
                LayoutLocation(str(store), names[0]), LayoutLocation(output["dest"], name)
            )
            written.append(Output("oci", str(report.name), str(report.digest)))
        elif kind == "docker":
            write_docker_archive(
                builder.layout, result.descriptor, [str(r) for r in refs], Path(output["dest"])
            )
            written.append(Output("docker", output["dest"], str(result.descriptor.digest)))
    return BuildReport(result, tuple(names), tuple(written))


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
) -> ReleaseResult:
    """Build, push by digest, verify every platform, and only then move the tags."""
    built = build_image(session, dataclasses.replace(options, outputs=()), progress=progress)
    pinned = [push_pinned(session, name, options.root) for name in built.names]
    report = verify_image(session, pinned[0], platforms=options.platforms, run=run,
                          root=options.root, note=note)  # fmt: skip
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
) -> VerifyReport:
    """Check every platform of a pushed image (see polyarch.verify), and run each one."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415 (the engine when needed)
    from polyarch.verify import Verifier  # noqa: PLC0415
    from polyarch.worker.local.worker import BuildSession, LocalWorker  # noqa: PLC0415

    workspace = Workspace(root or default_root())
    machine = machine_platform()
    worker = LocalWorker(workspace, BuildSession(), machine, on_note=note)
    with workspace.exclusive():  # what clean removes is not under a running image
        return Verifier(session.source(location), worker, machine, note=note).verify(
            platforms, run, jobs=jobs
        )


def clean_images(repository: str, root: Path | None = None) -> PruneReport:
    """Remove the local images of `repository`, the cache entries only they used, and every
    blob and snapshot nothing else needs."""
    from polyarch.store.gc import remove_images  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    return remove_images(Workspace(root or default_root()), repository)


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
    "push_pinned",
    "read_dockerfile",
    "release",
    "verify_image",
]
