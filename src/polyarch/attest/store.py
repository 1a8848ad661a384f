"""Attestations stored as BuildKit stores them (`docs/attestations/attestation-storage.md`,
OCI-artifact form, BuildKit's default since compatibility version 0.31): per platform one
attestation manifest (artifactType `application/vnd.docker.attestation.manifest.v1+json`,
the empty config, one `application/vnd.in-toto+json` layer per statement annotated with its
predicate type, `subject` the platform's manifest), listed in the index after the images
with platform `unknown/unknown` and the `vnd.docker.reference.*` annotations. An image that
was one manifest becomes an index of it and its attestations, as BuildKit makes it."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence

from polyarch.attest.intoto import MEDIA_TYPE, PREDICATE_ANNOTATION
from polyarch.digest import Digest
from polyarch.errors import ManifestError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest, parse_document
from polyarch.platform import Platform
from polyarch.store.layout import OciLayout

UNKNOWN = Platform("unknown", "unknown")
EMPTY_JSON = b"{}"


def empty_config() -> Descriptor:
    return Descriptor(mt.OCI_EMPTY, Digest.of(EMPTY_JSON), len(EMPTY_JSON),
                      data=base64.b64encode(EMPTY_JSON).decode("ascii"))  # fmt: skip


def attestation_document(
    target: Descriptor, statements: Sequence[bytes]
) -> tuple[Manifest, dict[Digest, bytes]]:
    """The attestation manifest of `statements` about `target` (a platform's manifest), and
    the blobs it needs (the statements and the empty config)."""
    layers = []
    blobs: dict[Digest, bytes] = {}
    for raw in statements:
        predicate_type = json.loads(raw)["predicateType"]
        digest = Digest.of(raw)
        blobs[digest] = raw
        layers.append(
            Descriptor(
                MEDIA_TYPE, digest, len(raw), annotations={PREDICATE_ANNOTATION: predicate_type}
            )
        )
    config = empty_config()
    blobs[config.digest] = EMPTY_JSON
    subject = Descriptor(target.media_type, target.digest, target.size)
    manifest = Manifest.create(config, layers, artifact_type=mt.ATTESTATION_MANIFEST,
                               subject=subject)  # fmt: skip
    return manifest, blobs


def attestation_manifest(
    layout: OciLayout, target: Descriptor, statements: Sequence[bytes]
) -> Descriptor:
    """The statements about `target` written as blobs, and their attestation manifest;
    returns its index entry."""
    manifest, blobs = attestation_document(target, statements)
    for digest, raw in blobs.items():
        layout.blobs.put_bytes(raw, digest)
    layout.write_document(manifest.raw)
    return Descriptor(mt.OCI_MANIFEST, manifest.digest, len(manifest.raw), platform=UNKNOWN,
                      annotations={mt.ANNOTATION_REFERENCE_DIGEST: str(target.digest),
                                   mt.ANNOTATION_REFERENCE_TYPE:
                                       mt.ANNOTATION_REFERENCE_TYPE_ATTESTATION})  # fmt: skip


def with_attestations(
    layout: OciLayout,
    top: Descriptor,
    manifests: Mapping[Platform, Descriptor],
    statements: Mapping[Platform, Sequence[bytes]],
) -> Descriptor:
    """The image `top` (an index, or one platform's manifest) with each platform's
    statements attached; the new index is written to the layout and returned."""
    entries: list[Descriptor]
    annotations: Mapping[str, str] | None = None
    media_type = mt.OCI_INDEX
    if top.media_type in mt.INDEX_TYPES:
        index = parse_document(layout.read_document(top), top.media_type, what="image index")
        assert isinstance(index, Index)
        entries = [d for d in index.manifests if not d.is_attestation]
        annotations, media_type = index.annotations, index.media_type
    else:
        ((platform, manifest),) = manifests.items()
        entries = [dataclasses.replace(top, platform=manifest.platform or platform)]
    if media_type != mt.OCI_INDEX:
        raise ManifestError("attestations need an OCI index; this image is a Docker manifest "
                            "list (build with OCI media types)")  # fmt: skip
    by_digest = {d.digest: d for d in entries}
    attached = []
    for platform, target in manifests.items():
        if statements.get(platform):
            entry = by_digest.get(target.digest, target)
            attached.append(attestation_manifest(layout, entry, statements[platform]))
    index = Index.create([*entries, *attached], annotations=dict(annotations or {}) or None)
    layout.write_document(index.raw)
    return index.descriptor()


def without_attestations(layout: OciLayout, top: Descriptor) -> tuple[Descriptor, list[Descriptor]]:
    """The image `top` without its attestations (one platform: its manifest; several: an
    index of the images, written to the layout), and the attestation entries it had."""
    if top.media_type not in mt.INDEX_TYPES:
        return top, []
    document = parse_document(layout.read_document(top), top.media_type, what="image index")
    assert isinstance(document, Index)
    attached = [d for d in document.manifests if d.is_attestation]
    if not attached:
        return top, []
    images = document.images()
    if len(images) == 1 and not document.annotations:
        return dataclasses.replace(images[0], platform=None, annotations={}), attached
    index = Index.create(images, media_type=document.media_type,
                         annotations=dict(document.annotations) or None)  # fmt: skip
    layout.write_document(index.raw)
    return index.descriptor(), attached
