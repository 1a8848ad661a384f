"""Signing images and checking their signatures on a registry, in cosign's format
(`polyarch.attest.sign`): the signatures of a digest live under the repository's
`sha256-<hex>.sig` tag, which is the only tag signing writes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.api.session import Session, registry_location
from polyarch.attest import sign as cosign
from polyarch.digest import Digest
from polyarch.errors import NotFoundError, PolyarchError, UsageError
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.reference import Reference


def _registry_ref(location: str) -> Reference:
    return registry_location(location, "signatures live")


def _digests(session: Session, ref: Reference, recursive: bool) -> list[tuple[str, Digest]]:
    """What is signed: the image (index or manifest) and, `recursive`, each platform's."""
    fetched = session.client.get_manifest(ref)
    out = [("image", fetched.digest)]
    if recursive and isinstance(fetched.document, Index):
        out += [(str(d.platform), d.digest) for d in fetched.document.images()]
    return out


def _signatures(session: Session, ref: Reference, digest: Digest) -> Manifest | None:
    try:
        found = session.client.get_manifest(ref.with_tag(cosign.signature_tag(digest)))
    except NotFoundError:
        return None
    document = found.document
    if not isinstance(document, Manifest):
        raise UsageError(f"{ref.name}:{cosign.signature_tag(digest)} is not a signature "
                         "manifest")  # fmt: skip
    return document


def sign_image(
    session: Session, location: str, key_pem: bytes, password: bytes, *, recursive: bool = True
) -> list[tuple[str, Digest]]:
    """Sign the image at `location` (and each platform's image of an index) with the key;
    returns what was signed. A signature already there is kept, never duplicated."""
    ref = _registry_ref(location)
    key = cosign.read_private(key_pem, password)
    repository = ref.name
    public = key.public_key()
    signed = _digests(session, ref, recursive)
    for _what, digest in signed:
        payload = cosign.payload(repository, digest)
        existing = cosign.signature_layers(_signatures(session, ref, digest))
        if any(cosign.verifies(public, _payload(session, ref, x.payload), x.signature)
               for x in existing):  # fmt: skip
            continue
        layer = cosign.SignedLayer(
            Descriptor(cosign.SIMPLE_SIGNING, Digest.of(payload), len(payload)),
            cosign.sign(key, payload),
        )
        manifest, config = cosign.signature_manifest([*existing, layer])
        for blob in (payload, config):
            session.client.upload_bytes(ref, blob)
        session.client.put_manifest(ref.with_tag(cosign.signature_tag(digest)), manifest.raw,
                                    manifest.media_type)  # fmt: skip
    return signed


def _payload(session: Session, ref: Reference, descriptor: Descriptor) -> bytes:
    if descriptor.size > 1 << 20:
        raise UsageError(f"signature payload {descriptor.digest} is {descriptor.size} bytes")
    return b"".join(session.client.get_blob(ref, descriptor))


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Which of an image's digests carry a signature by the key."""

    reference: str
    signed: list[tuple[str, str]] = field(default_factory=list)  # (what, digest)
    unsigned: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unsigned and bool(self.signed)


def check_signatures(
    session: Session, location: str, public_pem: bytes, *, recursive: bool = False
) -> SignatureCheck:
    """Whether the image at `location` (and, `recursive`, each platform's) carries a valid
    signature by the public key: the payload names this repository and that digest."""
    ref = _registry_ref(location)
    key = cosign.read_public(public_pem)
    check = SignatureCheck(str(ref))
    for what, digest in _digests(session, ref, recursive):
        good = False
        for layer in cosign.signature_layers(_signatures(session, ref, digest)):
            payload = _payload(session, ref, layer.payload)
            try:
                identity, claimed = cosign.read_payload(payload)
            except cosign.SignatureError:
                continue
            if (claimed == str(digest) and _same_repository(identity, ref)
                    and cosign.verifies(key, payload, layer.signature)):  # fmt: skip
                good = True
                break
        (check.signed if good else check.unsigned).append((what, str(digest)))
    return check


def _same_repository(identity: str, ref: Reference) -> bool:
    """A payload's docker-reference names the repository (cosign writes it without a tag;
    containers/image with one)."""
    try:
        return Reference.parse(identity, default_tag=None).name == ref.name
    except PolyarchError:
        return False


def generate_key_pair(directory: Path, password: bytes) -> tuple[Path, Path]:
    """`cosign.key` (encrypted with `password`) and `cosign.pub` in `directory`, as
    `cosign generate-key-pair` writes them; refuses to overwrite either."""
    private, public = directory / "cosign.key", directory / "cosign.pub"
    for path in (private, public):
        if path.exists():
            raise UsageError(f"{path} exists; move it away first (it is never overwritten)")
    key = cosign.generate()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cosign.encrypted_pem(key, password))
    public.write_bytes(cosign.public_pem(key))
    return private, public
