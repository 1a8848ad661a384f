"""Image signatures in cosign v3's form (pure: bytes in, bytes out): a Sigstore bundle v0.3
holding a DSSE envelope, stored as an OCI 1.1 referrer of the signed manifest.

What `cosign sign --new-bundle-format --key cosign.key` writes (cosign's `signDigestBundle`
and `WriteAttestationNewBundleFormat`, sigstore-go's `sign.Bundle`):
- the payload is an in-toto v1 statement whose subject is the manifest's digest and whose
  predicate type is `https://sigstore.dev/cosign/sign/v1` (an empty predicate);
- it is signed as DSSE (ECDSA P-256 over SHA-256 of the pre-authentication encoding), and
  the bundle names the key by its hint, base64(sha256(the public key's DER));
- the referrer is an OCI manifest with artifactType `application/vnd.dev.sigstore.bundle.v0.3+json`,
  the empty config, the bundle as its one layer, the signed manifest as `subject`, and
  cosign's annotations (created, `dev.sigstore.bundle.content`, the predicate type).

No transparency-log entry or timestamp is included (polyarch reaches no Sigstore service):
cosign v3 checks such a bundle with `cosign verify --key cosign.pub --insecure-ignore-tlog`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from polyarch.attest.intoto import STATEMENT_TYPE
from polyarch.attest.sign import sign, verifies
from polyarch.digest import Digest
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Manifest

BUNDLE_V03: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"
# the older spelling of the same version, which sigstore-go and cosign also read
BUNDLE_TYPES: Final = (BUNDLE_V03, "application/vnd.dev.sigstore.bundle+json;version=0.3")
COSIGN_SIGN: Final = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO: Final = "application/vnd.in-toto+json"
CONTENT_ANNOTATION: Final = "dev.sigstore.bundle.content"
PREDICATE_ANNOTATION: Final = "dev.sigstore.bundle.predicateType"
CREATED_ANNOTATION: Final = "org.opencontainers.image.created"
_EMPTY: Final = b"{}"
MAX_BUNDLE: Final = 1 << 20  # a key-signed bundle is about 1 KiB


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    """How a bundle names its key: base64 of the SHA-256 of the key's PKIX DER."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(digest: Digest) -> bytes:
    """The statement cosign signs for a manifest digest."""
    doc = {"_type": STATEMENT_TYPE, "subject": [{"digest": {digest.algorithm: digest.hex}}],
           "predicateType": COSIGN_SIGN, "predicate": {}}  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode()


def make_bundle(key: ec.EllipticCurvePrivateKey, digest: Digest) -> bytes:
    """A bundle signing `digest` with `key` (no log entry, no timestamp)."""
    payload = statement(digest)
    doc = {
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.public_key())}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": sign(key, pae(IN_TOTO, payload))}],
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def signed_digests(raw: bytes, key: ec.EllipticCurvePublicKey) -> set[str]:
    """The manifest digests ("sha256:<hex>") a bundle signs with `key`: empty when it is not
    a bundle, holds no DSSE envelope of a cosign signature, or no signature verifies."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("mediaType") not in BUNDLE_TYPES:
            return set()
        envelope = doc["dsseEnvelope"]
        if envelope["payloadType"] != IN_TOTO:
            return set()
        payload = base64.b64decode(envelope["payload"], validate=True)
        good = any(verifies(key, pae(IN_TOTO, payload), str(s["sig"]))
                   for s in envelope["signatures"])  # fmt: skip
        if not good:
            return set()
        body: dict[str, Any] = json.loads(payload)
        if body["_type"] != STATEMENT_TYPE or body["predicateType"] != COSIGN_SIGN:
            return set()
        return {f"{algorithm}:{value}" for subject in body["subject"]
                for algorithm, value in subject["digest"].items()}  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return set()


def bundle_manifest(
    subject: Descriptor, bundle: bytes, created: str
) -> tuple[Manifest, dict[Digest, bytes]]:
    """The referrer cosign v3 pushes for a bundle, and its blobs by digest."""
    config = Descriptor(mt.OCI_EMPTY, Digest.of(_EMPTY), len(_EMPTY), artifact_type=BUNDLE_V03)
    layer = Descriptor(BUNDLE_V03, Digest.of(bundle), len(bundle))
    annotations = {CREATED_ANNOTATION: created, CONTENT_ANNOTATION: "dsse-envelope",
                   PREDICATE_ANNOTATION: COSIGN_SIGN}  # fmt: skip
    manifest = Manifest.create(
        config, [layer], annotations=annotations, artifact_type=BUNDLE_V03,
        subject=Descriptor(subject.media_type, subject.digest, subject.size),
    )  # fmt: skip
    return manifest, {config.digest: _EMPTY, layer.digest: bundle}


def is_bundle_referrer(entry: Descriptor) -> bool:
    """Whether a referrers-list entry is a Sigstore bundle."""
    return entry.artifact_type in BUNDLE_TYPES
