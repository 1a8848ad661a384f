"""Registry work for the CLI and library users: inspecting, copying and indexing images by
reference (a `Session` holds the registry client, its credentials and TLS settings)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.attest.intoto import PREDICATE_ANNOTATION
from polyarch.digest import Digest
from polyarch.errors import PolyarchError, UsageError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import (
    Document,
    ImageConfig,
    Index,
    Manifest,
)
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.registry.credentials import DockerConfigCredentials
from polyarch.registry.retry import RetryPolicy
from polyarch.registry.transport import DEFAULT_IDLE
from polyarch.transfer.copy import TransferProgress, TransferReport, copy_image, create_index
from polyarch.transfer.endpoints import (
    ImageSource,
    ImageTarget,
    LayoutRepository,
    RegistryRepository,
    read_small_blob,
)
from polyarch.transfer.location import LayoutLocation, Location, parse_location

if TYPE_CHECKING:
    from polyarch.oci.models import Descriptor


def registry_location(location: str, what: str) -> Reference:
    """`location` as a registry reference, or a usage error saying `what` lives on one."""
    where = parse_location(location)
    if not isinstance(where, Reference):
        raise UsageError(f"{location}: {what} on a registry; give REGISTRY/NAME:TAG or "
                         "REGISTRY/NAME@DIGEST")  # fmt: skip
    return where


def _statement(source: ImageSource, layer: Descriptor) -> Mapping[str, Any]:
    if layer.size > MAX_STATEMENT:
        raise UsageError(f"attestation {layer.digest} is {layer.size} bytes; refusing over "
                         f"{MAX_STATEMENT}")  # fmt: skip
    raw = b"".join(source.open_blob(layer))
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"attestation {layer.digest} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"attestation {layer.digest} is not a JSON object")
    return value


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


@dataclass(frozen=True, slots=True)
class Attestation:
    """An in-toto statement attached to a platform's image (`inspect` lists them)."""

    platform: Platform | None  # the image's, None when the index does not say
    subject: str  # the image manifest's digest
    predicate_type: str
    digest: str  # of the statement
    size: int
    statement: Mapping[str, Any] | None = None  # read when asked for


MAX_STATEMENT = 40 << 20  # BuildKit's limit for an attestation file


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

    def attestations(
        self, location: str, *, read: Collection[str] = (), platform: Platform | None = None
    ) -> list[Attestation]:
        """The attestations of an image's platforms: in its index (BuildKit's storage) and,
        on a registry, attached to each platform's manifest as referrers (verification
        summaries). The statements of the predicate types `read` are read (checked against
        their digests), of `platform` only when given."""
        source, document, digest = self.fetch(location)
        images = ([(d.platform, d.digest) for d in document.images()]
                  if isinstance(document, Index) else [(None, Digest.parse(digest))])  # fmt: skip
        platforms = {str(d): p for p, d in images}
        found: list[Descriptor] = [d for d in document.manifests if d.is_attestation] if (
            isinstance(document, Index)) else []  # fmt: skip
        if isinstance(source, RegistryRepository):
            from polyarch.registry.referrers import list_referrers  # noqa: PLC0415

            for _platform, image in images:
                found += [dataclasses.replace(d, annotations={
                    **d.annotations, mt.ANNOTATION_REFERENCE_DIGEST: str(image)})
                    for d in list_referrers(self.client, source.ref, image)
                    if d.artifact_type == mt.ATTESTATION_MANIFEST]  # fmt: skip
        out: list[Attestation] = []
        for entry in found:
            subject = entry.annotations.get(mt.ANNOTATION_REFERENCE_DIGEST, "")
            manifest = source.fetch_document(entry)
            if not isinstance(manifest, Manifest):
                continue
            target = platforms.get(subject)
            wanted = platform is None or (target is not None and platform.matches(target))
            for layer in manifest.layers:
                kind = layer.annotations.get(PREDICATE_ANNOTATION, "")
                statement = None
                if kind in read and wanted:
                    statement = _statement(source, layer)
                    kind = str(statement.get("predicateType", kind))
                out.append(Attestation(target, subject, kind, str(layer.digest), layer.size,
                                       statement))  # fmt: skip
        return out

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
