"""Image signatures in the format cosign and containers/image read (pure: bytes in, bytes out).

A signature is cosign's "simple signing" payload (the image's repository and manifest digest)
signed with ECDSA P-256 over SHA-256, stored in the image's repository under the tag
`sha256-<hex>.sig`: an OCI manifest whose layers are payloads
(`application/vnd.dev.cosign.simplesigning.v1+json`), each annotated with its base64 DER
signature (`dev.cosignproject.cosign/signature`). cosign v2 and v3 and containers/image
(skopeo, podman with a `sigstoreSigned` policy) verify it.

Keys are cosign's: `cosign.pub` a PKIX public key in PEM; `cosign.key` the PKCS#8 private key
encrypted as go-securesystemslib does (scrypt N=65536, r=8, p=1; NaCl secretbox) in an
`ENCRYPTED SIGSTORE PRIVATE KEY` PEM block."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from polyarch.digest import Digest
from polyarch.errors import PolyarchError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Manifest

SIMPLE_SIGNING: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION: Final = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE: Final = "cosign container image signature"
PEM_TYPES: Final = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_SCRYPT: Final = {"N": 65536, "r": 8, "p": 1}
PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


class SignatureError(PolyarchError):
    """A key that cannot be read, or a signature that does not verify."""


def signature_tag(digest: Digest) -> str:
    """Where cosign keeps the signatures of `digest`: `sha256-<hex>.sig`."""
    return f"{digest.algorithm}-{digest.hex}.sig"


def payload(repository: str, digest: Digest) -> bytes:
    """cosign's simple-signing payload for an image of `repository` (registry/name)."""
    doc = {"critical": {"identity": {"docker-reference": repository},
                        "image": {"docker-manifest-digest": str(digest)},
                        "type": PAYLOAD_TYPE},
           "optional": None}  # fmt: skip
    return json.dumps(doc, separators=(",", ":")).encode()


def read_payload(raw: bytes) -> tuple[str, str]:
    """(docker-reference, docker-manifest-digest) of a payload; SignatureError if it is not
    one."""
    try:
        critical = json.loads(raw)["critical"]
        if critical["type"] != PAYLOAD_TYPE:
            raise SignatureError(f"payload type {critical['type']!r}, not {PAYLOAD_TYPE!r}")
        return (str(critical["identity"]["docker-reference"]),
                str(critical["image"]["docker-manifest-digest"]))  # fmt: skip
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SignatureError(f"not a simple-signing payload: {exc}") from None


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """The base64 DER ECDSA-SHA256 signature of `data`."""
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def verifies(key: ec.EllipticCurvePublicKey, data: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class SignedLayer:
    """One signature in a `.sig` manifest: its payload's descriptor and signature."""

    payload: Descriptor
    signature: str


def signature_layers(manifest: Manifest | None) -> list[SignedLayer]:
    """The signatures a `.sig` manifest holds (none for None)."""
    if manifest is None:
        return []
    return [SignedLayer(layer, layer.annotations.get(SIGNATURE_ANNOTATION, ""))
            for layer in manifest.layers
            if layer.media_type == SIMPLE_SIGNING]  # fmt: skip


def signature_manifest(layers: list[SignedLayer]) -> tuple[Manifest, bytes]:
    """The `.sig` manifest of these signatures (as cosign writes it: an image config naming
    the payloads as its diff ids), and that config's bytes."""
    config = json.dumps({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"type": "layers",
                                    "diff_ids": [str(x.payload.digest) for x in layers]}},
                        separators=(",", ":")).encode()  # fmt: skip
    descriptors = [Descriptor(SIMPLE_SIGNING, x.payload.digest, x.payload.size,
                              annotations={SIGNATURE_ANNOTATION: x.signature})
                   for x in layers]  # fmt: skip
    manifest = Manifest.create(Descriptor(mt.OCI_CONFIG, Digest.of(config), len(config)),
                               descriptors)  # fmt: skip
    return manifest, config


# keys ------------------------------------------------------------------------------------------


def generate() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _secretbox_key(password: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    n, r, p = params["N"], params["r"], params["p"]
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=256 * r * n + (1 << 20))  # fmt: skip


def encrypted_pem(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """The private key as cosign writes `cosign.key`."""
    from nacl.secret import SecretBox  # noqa: PLC0415 (only when keys are made or read)

    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())  # fmt: skip
    salt, nonce = os.urandom(32), os.urandom(24)
    box = SecretBox(_secretbox_key(password, salt, _SCRYPT))
    sealed = box.encrypt(plain, nonce).ciphertext
    body = json.dumps({
        "kdf": {"name": "scrypt", "params": _SCRYPT, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }, separators=(",", ":")).encode()  # fmt: skip
    text = "\n".join([f"-----BEGIN {PEM_TYPES[0]}-----",
                      *_wrap(base64.b64encode(body).decode()),
                      f"-----END {PEM_TYPES[0]}-----", ""])  # fmt: skip
    return text.encode()


def _wrap(text: str, width: int = 64) -> list[str]:
    return [text[i : i + width] for i in range(0, len(text), width)]


def read_private(pem: bytes, password: bytes) -> ec.EllipticCurvePrivateKey:
    """A private key: cosign's encrypted form, or an unencrypted or PKCS#8-encrypted PEM."""
    text = pem.decode("ascii", "replace")
    kind = next((t for t in PEM_TYPES if f"-----BEGIN {t}-----" in text), None)
    if kind is None:
        try:
            loaded = serialization.load_pem_private_key(pem, password or None)
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"not a private key PEM: {exc}") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise SignatureError("the key is not an ECDSA key")
        return loaded
    from nacl.exceptions import CryptoError  # noqa: PLC0415
    from nacl.secret import SecretBox  # noqa: PLC0415

    body_text = text.split(f"-----BEGIN {kind}-----")[1].split(f"-----END {kind}-----")[0]
    try:
        sealed: dict[str, Any] = json.loads(base64.b64decode("".join(body_text.split())))
        if sealed["kdf"]["name"] != "scrypt" or sealed["cipher"]["name"] != "nacl/secretbox":
            raise SignatureError(f"unsupported key encryption {sealed['kdf']['name']}/"
                                 f"{sealed['cipher']['name']}")  # fmt: skip
        params = {k: int(v) for k, v in sealed["kdf"]["params"].items()}
        box = SecretBox(_secretbox_key(password, base64.b64decode(sealed["kdf"]["salt"]),
                                       params))  # fmt: skip
        plain = box.decrypt(base64.b64decode(sealed["ciphertext"]),
                            base64.b64decode(sealed["cipher"]["nonce"]))  # fmt: skip
    except CryptoError:
        raise SignatureError("wrong password for the key (it does not decrypt)") from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SignatureError(f"not a cosign key: {exc}") from None
    loaded = serialization.load_der_private_key(plain, None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise SignatureError("the key is not an ECDSA key")
    return loaded


def read_public(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        loaded = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not a public key PEM: {exc}") from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise SignatureError("the public key is not an ECDSA key")
    return loaded
