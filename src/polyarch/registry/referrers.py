"""OCI 1.1 referrers: manifests that name another as their `subject` (attestations attached
after the fact), found through the registry's referrers API, or, on a registry without it
(Debian's Distribution 2.8), through the referrers tag schema: the tag `sha256-<hex>` of
the subject holds an index of its referrers, which the client that pushes one updates."""

from __future__ import annotations

from polyarch.digest import Digest
from polyarch.errors import NotFoundError, RegistryError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient


def referrers_tag(subject: Digest) -> str:
    return f"{subject.algorithm}-{subject.hex}"


def _tag_index(client: RegistryClient, ref: Reference, subject: Digest) -> Index | None:
    try:
        document = client.get_manifest(ref.with_tag(referrers_tag(subject))).document
    except NotFoundError:
        return None
    if not isinstance(document, Index):
        raise RegistryError(f"{ref.name}:{referrers_tag(subject)} is not a referrers index",
                            reference=str(ref))  # fmt: skip
    return document


def list_referrers(client: RegistryClient, ref: Reference, subject: Digest) -> list[Descriptor]:
    """The manifests that name `subject` (in `ref`'s repository) as theirs."""
    found = client.referrers(ref, subject)
    if found is None:
        found = _tag_index(client, ref, subject)
    return list(found.manifests) if found is not None else []


def push_referrer(
    client: RegistryClient, ref: Reference, manifest: Manifest, blobs: dict[Digest, bytes]
) -> Descriptor:
    """Push `manifest` (its `subject` set) with its blobs by digest, and list it among the
    subject's referrers: the registry does so itself when it has the referrers API; else the
    tag schema's index is updated (the only tag this writes)."""
    subject = manifest.subject
    if subject is None:
        raise RegistryError("a referrer needs a subject", reference=str(ref))
    for data in blobs.values():
        client.upload_bytes(ref, data)
    pinned = Reference(ref.registry, ref.repository, None, manifest.digest)
    client.put_manifest(pinned, manifest.raw, manifest.media_type)
    entry = Descriptor(
        manifest.media_type,
        manifest.digest,
        len(manifest.raw),
        annotations=dict(manifest.annotations),
        artifact_type=manifest.artifact_type or manifest.config.media_type,
    )
    if client.referrers(ref, subject.digest) is not None:
        return entry
    existing = _tag_index(client, ref, subject.digest)
    entries = [d for d in (existing.manifests if existing else ()) if d.digest != entry.digest]
    index = Index.create([*entries, entry], media_type=mt.OCI_INDEX)
    client.put_manifest(ref.with_tag(referrers_tag(subject.digest)), index.raw, index.media_type)
    return entry
