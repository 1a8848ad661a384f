"""in-toto statements (https://in-toto.io/Statement/v1) about an image, and the package URLs
that name images and packages in them. Pure.

A statement's subject is the platform's image manifest, named as BuildKit names it: one
`pkg:docker/NAME@TAG?platform=P` per name the image is pushed or kept as, or `_` when it has
none. Statements are compact JSON with their keys in BuildKit's order (`_type`,
`predicateType`, `subject`, `predicate`), so the same predicate gives the same bytes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from packageurl import PackageURL

from polyarch.digest import Digest
from polyarch.platform import Platform
from polyarch.reference import Reference

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
MEDIA_TYPE: Final = "application/vnd.in-toto+json"  # an attestation layer's media type
PREDICATE_SLSA1: Final = "https://slsa.dev/provenance/v1"
PREDICATE_SLSA02: Final = "https://slsa.dev/provenance/v0.2"
PREDICATE_SPDX: Final = "https://spdx.dev/Document"
PREDICATE_VSA: Final = "https://slsa.dev/verification_summary/v1"
PREDICATE_ANNOTATION: Final = "in-toto.io/predicate-type"  # on each attestation layer


def image_purl(ref: Reference | str, platform: Platform | None = None, *,
               local: bool = False) -> str:  # fmt: skip
    """An image reference as a package URL, as BuildKit's `purl.RefToPURL` makes it: the
    familiar name split into namespace and name, the tag (default `latest`) as the version,
    the digest and the platform as qualifiers. `local`: an OCI layout (`pkg:oci`)."""
    if local and isinstance(ref, str):  # a layout's path: its last part names it
        path, _, tag = ref.rpartition(":") if ":" in ref.rpartition("/")[2] else (ref, "", "")
        name = path.rstrip("/").rpartition("/")[2].lower() or "layout"
        return PackageURL(type="oci", name=name, version=tag or None,
                          qualifiers={"platform": str(platform)} if platform else None
                          ).to_string()  # fmt: skip
    parsed = Reference.parse(ref, default_tag=None) if isinstance(ref, str) else ref
    name = parsed.name
    if parsed.registry == "docker.io":
        name = name.removeprefix("docker.io/").removeprefix("library/")
    namespace, _, last = name.rpartition("/")
    qualifiers: dict[str, str] = {}
    if parsed.digest is not None:
        qualifiers["digest"] = str(parsed.digest)
    version = parsed.tag or ("latest" if parsed.digest is None else None)
    if platform is not None:
        qualifiers["platform"] = str(platform)
    return PackageURL(type="oci" if local else "docker", namespace=namespace or None,
                      name=last, version=version or None,
                      qualifiers=qualifiers or None).to_string()  # fmt: skip


def subjects(names: Sequence[Reference], platform: Platform, digest: Digest
             ) -> list[dict[str, Any]]:  # fmt: skip
    """A platform image's subjects: one per name (BuildKit's), or `_` for an unnamed image."""
    digests = {digest.algorithm: digest.hex}
    if not names:
        return [{"name": "_", "digest": digests}]
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(image_purl(name, platform))
    return [{"name": n, "digest": digests} for n in seen]


def statement(predicate_type: str, subject: Sequence[Mapping[str, Any]],
              predicate: Mapping[str, Any]) -> bytes:  # fmt: skip
    """The statement's bytes: compact JSON, keys of the predicate in the order given."""
    doc = {"_type": STATEMENT_TYPE, "predicateType": predicate_type,
           "subject": list(subject), "predicate": predicate}  # fmt: skip
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
