"""OCI documents as frozen values that keep the exact bytes they were read from.

A digest names exact bytes, so a document read from a registry or a layout is never
re-serialised: `raw` travels with it and is what gets pushed or written. Documents polyarch makes
itself are serialised once, by `Index.create` / `Manifest.create`, and carry those bytes.

Parsing refuses what is ambiguous or unsupported: duplicate JSON keys, a document that has both
`manifests` and `layers`, a `mediaType` that disagrees with the one the document was served as,
Docker schema 1, malformed descriptors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from polyarch.digest import Digest
from polyarch.errors import (
    InvalidDigestError,
    InvalidPlatformError,
    ManifestError,
    UnsupportedSchemaError,
)
from polyarch.oci import mediatypes as mt
from polyarch.oci._json import MAX_DOCUMENT_SIZE, empty_map, load_json, str_field, str_map
from polyarch.oci.config import ImageConfig
from polyarch.platform import Platform, best_match

__all__ = ["MAX_DOCUMENT_SIZE", "Descriptor", "Document", "ImageConfig", "Index", "Manifest",
           "canonical_json", "load_json", "parse_document"]  # fmt: skip


def _platform_from(obj: Any, what: str) -> Platform | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ManifestError(f"{what}: platform must be an object")
    os_ = str_field(obj, "os", what)
    arch = str_field(obj, "architecture", what)
    variant = str_field(obj, "variant", what, required=False)
    assert os_ is not None and arch is not None
    if os_ == "unknown" or arch == "unknown":
        # BuildKit's attestation manifests: kept exactly, never matched against a platform.
        return Platform(os_, arch, variant)
    try:
        platform = Platform.of(os_, arch, variant)
    except InvalidPlatformError:
        return Platform(os_, arch, variant)
    os_version = str_field(obj, "os.version", what, required=False)
    if os_version:
        platform = Platform(platform.os, platform.architecture, platform.variant, os_version)
    return platform


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=empty_map, hash=False)
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    data: str | None = None  # the content, base64 (OCI's embedded data; the empty config's)

    @classmethod
    def from_json(cls, obj: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise ManifestError(f"{what} must be an object")
        media_type = str_field(obj, "mediaType", what)
        digest_text = str_field(obj, "digest", what)
        size = obj.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"{what}: size must be a non-negative integer")
        try:
            digest = Digest.parse(digest_text or "")
        except InvalidDigestError as exc:
            raise ManifestError(f"{what}: {exc}") from None
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"{what}: urls must be a list of strings")
        assert media_type is not None
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            platform=_platform_from(obj.get("platform"), what),
            annotations=str_map(obj, "annotations", what),
            urls=tuple(urls),
            artifact_type=str_field(obj, "artifactType", what, required=False),
            data=str_field(obj, "data", what, required=False),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.data is not None:
            out["data"] = self.data
        if self.platform is not None:
            out["platform"] = self.platform.oci_fields()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @property
    def is_attestation(self) -> bool:
        """An index entry that is not an image for a platform (BuildKit's provenance, SBOMs)."""
        if self.annotations.get(mt.ANNOTATION_REFERENCE_TYPE):
            return True
        platform = self.platform
        return platform is not None and "unknown" in (platform.os, platform.architecture)


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    annotations: Mapping[str, str] = field(default_factory=empty_map, hash=False)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    def descriptor(self, platform: Platform | None = None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), platform=platform)

    def blobs(self) -> tuple[Descriptor, ...]:
        """Config then layers: what must exist before this manifest may be pushed."""
        return (self.config, *self.layers)

    @classmethod
    def create(
        cls,
        config: Descriptor,
        layers: Sequence[Descriptor],
        *,
        media_type: str = mt.OCI_MANIFEST,
        annotations: Mapping[str, str] | None = None,
        artifact_type: str | None = None,
        subject: Descriptor | None = None,
    ) -> Manifest:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
        if artifact_type:
            doc["artifactType"] = artifact_type
        doc["config"] = config.to_json()
        doc["layers"] = [layer.to_json() for layer in layers]
        if subject is not None:
            doc["subject"] = subject.to_json()
        if annotations:
            doc["annotations"] = dict(sorted(annotations.items()))
        raw = canonical_json(doc)
        return cls(
            media_type, config, tuple(layers), raw, MappingProxyType(dict(annotations or {})),
            subject, artifact_type,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (OCI) or manifest list (Docker)."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    annotations: Mapping[str, str] = field(default_factory=empty_map, hash=False)
    subject: Descriptor | None = None

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw))

    def images(self) -> tuple[Descriptor, ...]:
        """Entries that are images for a platform (attestations left out)."""
        return tuple(d for d in self.manifests if not d.is_attestation)

    def image_for(self, platform: Platform) -> Descriptor | None:
        """The entry that suits `platform` best (containerd's matching), or None."""
        images = self.images()
        found = best_match(platform, [d.platform for d in images])
        return None if found is None else images[found]

    def platforms_text(self) -> str:
        """The platforms this index has, for messages."""
        return ", ".join(str(d.platform) for d in self.images() if d.platform) or "none"

    @classmethod
    def create(
        cls,
        manifests: Sequence[Descriptor],
        *,
        media_type: str = mt.OCI_INDEX,
        annotations: Mapping[str, str] | None = None,
    ) -> Index:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
        doc["manifests"] = [m.to_json() for m in manifests]
        if annotations:
            doc["annotations"] = dict(sorted(annotations.items()))
        raw = canonical_json(doc)
        return cls(media_type, tuple(manifests), raw, MappingProxyType(dict(annotations or {})))


Document = Manifest | Index


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The bytes polyarch writes for a document it creates: stable, compact, UTF-8."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_document(
    raw: bytes, media_type: str | None = None, *, what: str = "manifest"
) -> Document:
    """Parse a manifest or index from its exact bytes.

    `media_type` is what the document was served or described as (Content-Type header or a
    descriptor's mediaType); it decides the kind when the document omits `mediaType`.
    """
    if media_type in mt.SCHEMA1_TYPES:
        raise _schema1(what)
    doc = load_json(raw, what)
    version = doc.get("schemaVersion")
    if isinstance(version, bool):
        raise UnsupportedSchemaError(f"{what}: schemaVersion must be 2, got {version!r}")
    if version == 1:
        raise _schema1(what)
    if version != 2:
        raise UnsupportedSchemaError(f"{what}: schemaVersion must be 2, got {version!r}")
    declared = str_field(doc, "mediaType", what, required=False)
    has_manifests = "manifests" in doc
    has_image_parts = "layers" in doc or "config" in doc
    if has_manifests and has_image_parts:
        raise ManifestError(
            f"{what} has both 'manifests' and 'layers'/'config': refusing an ambiguous document"
        )
    if (
        declared is not None
        and media_type in mt.DOCUMENT_TYPES
        and declared in mt.DOCUMENT_TYPES
        and declared != media_type
    ):
        raise ManifestError(f"{what} declares mediaType {declared} but was served as {media_type}")
    kind = declared or (media_type if media_type in mt.DOCUMENT_TYPES else None)
    if kind is None:
        kind = mt.OCI_INDEX if has_manifests else mt.OCI_MANIFEST
    if kind in mt.INDEX_TYPES:
        if has_image_parts:
            raise ManifestError(f"{what}: an index must not carry 'layers' or 'config'")
        return _parse_index(doc, raw, kind, what)
    if kind in mt.MANIFEST_TYPES:
        if has_manifests:
            raise ManifestError(f"{what}: an image manifest must not carry 'manifests'")
        return _parse_manifest(doc, raw, kind, what)
    raise UnsupportedSchemaError(f"{what}: unsupported media type {kind!r}")


def _schema1(what: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError(
        f"{what} is Docker image manifest schema 1, which polyarch does not support "
        "(deprecated since 2017; re-push the image with a current client to get schema 2 or OCI)"
    )


def _parse_manifest(doc: dict[str, Any], raw: bytes, kind: str, what: str) -> Manifest:
    config = Descriptor.from_json(doc.get("config"), f"{what} config")
    layers_json = doc.get("layers")
    if not isinstance(layers_json, list):
        raise ManifestError(f"{what}: 'layers' must be a list")
    layers = tuple(
        Descriptor.from_json(layer, f"{what} layer {i}") for i, layer in enumerate(layers_json)
    )
    subject = doc.get("subject")
    return Manifest(
        media_type=kind,
        config=config,
        layers=layers,
        raw=raw,
        annotations=str_map(doc, "annotations", what),
        subject=Descriptor.from_json(subject, f"{what} subject") if subject else None,
        artifact_type=str_field(doc, "artifactType", what, required=False),
    )


def _parse_index(doc: dict[str, Any], raw: bytes, kind: str, what: str) -> Index:
    manifests_json = doc.get("manifests")
    if not isinstance(manifests_json, list):
        raise ManifestError(f"{what}: 'manifests' must be a list")
    manifests = tuple(
        Descriptor.from_json(m, f"{what} entry {i}") for i, m in enumerate(manifests_json)
    )
    subject = doc.get("subject")
    return Index(
        media_type=kind,
        manifests=manifests,
        raw=raw,
        annotations=str_map(doc, "annotations", what),
        subject=Descriptor.from_json(subject, f"{what} subject") if subject else None,
    )
