"""The one module that wires the pure core to its effects, for the CLI and for library users."""

from __future__ import annotations

import os
import platform as _host
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.dockerfile import Dockerfile, ParseResult, build, parse
from polyarch.errors import DockerfileError, UsageError
from polyarch.oci.models import Descriptor, Document, ImageConfig, Index, Manifest
from polyarch.plan import Plan, PlanRequest, make_plan
from polyarch.platform import Platform, best_match, from_uname
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.registry.credentials import DockerConfigCredentials
from polyarch.registry.retry import RetryPolicy
from polyarch.transfer.copy import Progress, TransferReport, copy_image, create_index
from polyarch.transfer.endpoints import (
    ImageSource,
    ImageTarget,
    LayoutRepository,
    RegistryRepository,
    read_small_blob,
)
from polyarch.transfer.location import LayoutLocation, Location, parse_location


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
            images = document.images()
            found = best_match(platform, [d.platform for d in images])
            if found is None:
                have = ", ".join(str(d.platform) for d in images if d.platform)
                raise UsageError(f"{source} has no image for {platform} (it has: {have})")
            entry = images[found]
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
        src: str,
        dst: str,
        *,
        platforms: Sequence[Platform] = (),
        jobs: int = 8,
        progress: Progress | None = None,
    ) -> TransferReport:
        source_location = parse_location(src)
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
        progress: Progress | None = None,
    ) -> TransferReport:
        return create_index(
            [self.source(s) for s in srcs],
            self.target(dst),
            annotations=annotations,
            jobs=jobs,
            progress=progress,
        )


def machine_platform() -> Platform:
    """The platform of the machine polyarch runs on."""
    return from_uname(_host.system(), _host.machine())


def read_dockerfile(path: Path) -> tuple[ParseResult, Dockerfile]:
    """Read, parse and check a Dockerfile; errors name the file and line."""
    try:
        text = path.read_bytes().decode("utf-8")  # not read_text: keep \r\n as BuildKit does
    except FileNotFoundError:
        raise DockerfileError("no such file", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DockerfileError(f"cannot read: {exc}", path=str(path)) from None
    result = parse(text, str(path))
    return result, build(result, str(path))


def plan_build(
    dockerfile: Path,
    *,
    platforms: Sequence[Platform] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    build_platform: Platform | None = None,
) -> Plan:
    """The plan of a build, without building: what runs where, once or per platform."""
    _result, parsed = read_dockerfile(dockerfile)
    machine = build_platform or machine_platform()
    return make_plan(
        PlanRequest(
            parsed,
            tuple(platforms) or (machine,),
            machine,
            dict(build_args or {}),
            target,
        )
    )


__all__ = [
    "Descriptor",
    "ImageSummary",
    "IndexSummary",
    "RegistryOptions",
    "Session",
    "machine_platform",
    "plan_build",
    "read_dockerfile",
]
