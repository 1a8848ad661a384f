"""A build's attestations made and attached: per platform, the provenance statement (from the
build's facts and the platform's) and the SBOM statement (from the image's layers, read
here), stored in the image's index (`polyarch.attest.store`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch.attest import intoto
from polyarch.attest.provenance import BuildFacts, Facts, PlatformFacts, predicate
from polyarch.attest.sbom import scan, spdx
from polyarch.attest.sbom.packages import Package
from polyarch.attest.spec import AttestSpec
from polyarch.attest.store import with_attestations
from polyarch.digest import Digest
from polyarch.oci.config import ImageConfig
from polyarch.oci.models import Descriptor, Manifest, parse_document
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.store.layout import OciLayout


def sbom_statement_predicate(layout: OciLayout, manifest_descriptor: Descriptor, name: str,
                             purl: str, created: str, tool: str,
                             cache: Path | None = None) -> dict[str, object]:  # fmt: skip
    """The SPDX document of a stored platform image."""
    document = parse_document(layout.read_document(manifest_descriptor),
                              manifest_descriptor.media_type)  # fmt: skip
    assert isinstance(document, Manifest)
    config = ImageConfig.parse(layout.blobs.read_bytes(document.config.digest,
                                                       document.config.size))  # fmt: skip
    found = scan.packages(scan.image_files(layout.blobs, document, config, cache))
    return spdx.document(found, image_name=name, image_purl=purl,
                         manifest_digest=str(manifest_descriptor.digest), created=created,
                         tool=tool)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SbomParts:
    """What an SBOM covers beside the final image (BUILDKIT_SBOM_SCAN_STAGE and _CONTEXT):
    per platform, stages as their layers; the build context's packages."""

    stages: Mapping[Platform, Sequence[tuple[str, Sequence[tuple[Descriptor, Digest]]]]]
    context: Sequence[Package] | None = None
    cache: Path | None = None  # each layer's scan kept by diffID (the workspace's)


def attach(
    layout: OciLayout,
    top: Descriptor,
    manifests: Mapping[Platform, Descriptor],
    spec: AttestSpec,
    build: BuildFacts,
    platforms: Mapping[Platform, PlatformFacts],
    names: Sequence[Reference],
    parts: SbomParts | None = None,
) -> Descriptor:
    """The image `top` with its attestations; returns the new index."""
    statements: dict[Platform, list[bytes]] = {}
    tool = f"polyarch-{build.polyarch_version}"
    for platform, manifest in manifests.items():
        subject = intoto.subjects(names, platform, manifest.digest)
        made: list[bytes] = []
        if spec.sbom is not None:
            name = names[0].familiar if names else str(manifest.digest)
            purl = intoto.image_purl(names[0], platform) if names else subject[0]["name"]
            cache = parts.cache if parts else None
            document = sbom_statement_predicate(layout, manifest, name, purl, build.finished,
                                                tool, cache)  # fmt: skip
            made.append(intoto.statement(intoto.PREDICATE_SPDX, subject, document))
            extra: list[tuple[str, Sequence[Package]]] = [
                (f"stage {stage}", scan.packages(scan.layer_files(layout.blobs, layers, cache)))
                for stage, layers in (parts.stages.get(platform, ()) if parts else ())
            ]
            if parts is not None and parts.context is not None:
                extra.append(("context", parts.context))
            for part, found in extra:
                document = spdx.document(
                    found,
                    image_name=name,
                    image_purl=purl,
                    manifest_digest=str(manifest.digest),
                    created=build.finished,
                    tool=tool,
                    part=part,
                )
                made.append(intoto.statement(intoto.PREDICATE_SPDX, subject, document))
        if spec.provenance is not None:
            facts = Facts(build, platforms.get(platform, PlatformFacts()))
            kind, body = predicate(facts, spec.provenance)
            made.append(intoto.statement(kind, subject, body))
        statements[platform] = made
    return with_attestations(layout, top, manifests, statements)
