"""Signing images and checking their signatures on a registry, in cosign's formats: by
default the signatures of a digest live under the repository's `sha256-<hex>.sig` tag
(`polyarch.attest.sign`; cosign v2 and v3 and containers/image read it), the only tag
signing writes; on request as cosign v3's Sigstore bundles, referrers of the signed manifest
(`polyarch.attest.bundle`; the referrers tag schema on a registry without the API). A check
accepts either form."""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.api.session import Session, registry_location
from polyarch.attest import bundle as sigstore
from polyarch.attest import sign as cosign
from polyarch.digest import Digest
from polyarch.errors import NotFoundError, PolyarchError, UsageError
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.reference import Reference
from polyarch.registry.referrers import list_referrers, push_referrer


class SignatureForm(enum.Enum):
    """Where a signature is stored: cosign's `.sig` tag, or cosign v3's bundle referrer."""

    TAG = "tag"
    BUNDLE = "bundle"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A release's signing: the private key's PEM, its password, and the form to store."""

    pem: bytes
    password: bytes
    form: SignatureForm = SignatureForm.TAG

    def sign(self, session: Session, location: str) -> list[tuple[str, Digest]]:
        return sign_image(session, location, self.pem, self.password, form=self.form)


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
    session: Session,
    location: str,
    key_pem: bytes,
    password: bytes,
    *,
    recursive: bool = True,
    form: SignatureForm = SignatureForm.TAG,
) -> list[tuple[str, Digest]]:
    """Sign the image at `location` (and each platform's image of an index) with the key;
    returns what was signed. A signature already there is kept, never duplicated."""
    ref = _registry_ref(location)
    key = cosign.read_private(key_pem, password)
    signed = _digests(session, ref, recursive)
    for _what, digest in signed:
        if form is SignatureForm.BUNDLE:
            _sign_bundle(session, ref, key, digest)
        else:
            _sign_tag(session, ref, key, digest)
    return signed


def _sign_tag(session: Session, ref: Reference, key: cosign.PrivateKey, digest: Digest) -> None:
    payload = cosign.payload(ref.name, digest)
    existing = cosign.signature_layers(_signatures(session, ref, digest))
    if any(cosign.verifies(key.public_key(), _payload(session, ref, x.payload), x.signature)
           for x in existing):  # fmt: skip
        return
    layer = cosign.SignedLayer(
        Descriptor(cosign.SIMPLE_SIGNING, Digest.of(payload), len(payload)),
        cosign.sign(key, payload),
    )
    manifest, config = cosign.signature_manifest([*existing, layer])
    for blob in (payload, config):
        session.client.upload_bytes(ref, blob)
    session.client.put_manifest(ref.with_tag(cosign.signature_tag(digest)), manifest.raw,
                                manifest.media_type)  # fmt: skip


def _sign_bundle(session: Session, ref: Reference, key: cosign.PrivateKey, digest: Digest) -> None:
    if any(str(digest) in sigstore.signed_digests(raw, key.public_key())
           for raw in _bundles(session, ref, digest)):  # fmt: skip
        return
    target = session.client.head_manifest(ref.with_digest(digest))
    if target is None:
        raise NotFoundError(f"{ref.name}@{digest} is not in the registry")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest, blobs = sigstore.bundle_manifest(target, sigstore.make_bundle(key, digest), now)
    push_referrer(session.client, ref, manifest, blobs)


def _bundles(session: Session, ref: Reference, digest: Digest) -> list[bytes]:
    """The Sigstore bundles attached to `digest` as referrers (unread: not bundles, not of
    this digest, or too large to be a signature)."""
    out = []
    for entry in list_referrers(session.client, ref, digest):
        if not sigstore.is_bundle_referrer(entry):
            continue
        document = session.client.get_manifest(ref.with_digest(entry.digest)).document
        if not isinstance(document, Manifest) or document.subject is None or (
                document.subject.digest != digest):  # fmt: skip
            continue
        out += [b"".join(session.client.get_blob(ref, layer)) for layer in document.layers
                if layer.media_type in sigstore.BUNDLE_TYPES
                and layer.size <= sigstore.MAX_BUNDLE]  # fmt: skip
    return out


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
    signature by the public key, in either form: a `.sig` payload naming this repository and
    that digest, or a bundle whose statement names that digest."""
    ref = _registry_ref(location)
    key = cosign.read_public(public_pem)
    check = SignatureCheck(str(ref))
    for what, digest in _digests(session, ref, recursive):
        good = _tag_signed(session, ref, key, digest) or any(
            str(digest) in sigstore.signed_digests(raw, key)
            for raw in _bundles(session, ref, digest))  # fmt: skip
        (check.signed if good else check.unsigned).append((what, str(digest)))
    return check


def _tag_signed(session: Session, ref: Reference, key: cosign.PublicKey, digest: Digest) -> bool:
    for layer in cosign.signature_layers(_signatures(session, ref, digest)):
        payload = _payload(session, ref, layer.payload)
        try:
            identity, claimed = cosign.read_payload(payload)
        except cosign.SignatureError:
            continue
        if (claimed == str(digest) and _same_repository(identity, ref)
                and cosign.verifies(key, payload, layer.signature)):  # fmt: skip
            return True
    return False


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
