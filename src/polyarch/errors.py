"""The one exception family of polyarch.

Every error a user can meet is a `PolyarchError`; its message says what went wrong and what to
do. Subclasses carry the facts a caller may act on (HTTP status, registry error code, expected and
actual digest). Foreign exceptions are translated where they enter (the adapter edge), and only
the CLI turns an error into an exit code.
"""

from __future__ import annotations


class PolyarchError(Exception):
    """Root of every error polyarch raises on purpose."""


class InvalidDigestError(PolyarchError, ValueError):
    """A string that is not `sha256:<64 hex>` or `sha512:<128 hex>`."""


class InvalidPlatformError(PolyarchError, ValueError):
    """A platform string that cannot be understood."""


class InvalidReferenceError(PolyarchError, ValueError):
    """An image reference that does not follow the distribution grammar."""


class ManifestError(PolyarchError):
    """A manifest, index or config document that polyarch refuses to use."""


class UnsupportedSchemaError(ManifestError):
    """A document of a kind polyarch does not handle (Docker schema 1, unknown media type)."""


class VerificationError(PolyarchError):
    """Content whose digest or size is not what its descriptor says."""

    def __init__(
        self,
        what: str,
        *,
        expected_digest: str,
        actual_digest: str | None = None,
        expected_size: int | None = None,
        actual_size: int | None = None,
    ) -> None:
        self.what = what
        self.expected_digest = expected_digest
        self.actual_digest = actual_digest
        self.expected_size = expected_size
        self.actual_size = actual_size
        parts = [f"{what}: content does not match its descriptor"]
        if actual_size is not None and expected_size is not None and actual_size != expected_size:
            parts.append(f"expected {expected_size} bytes, got {actual_size}")
        if actual_digest is not None and actual_digest != expected_digest:
            parts.append(f"expected {expected_digest}, got {actual_digest}")
        else:
            parts.append(f"digest {expected_digest}")
        super().__init__("; ".join(parts))


class StoreError(PolyarchError):
    """The local content store or an OCI layout cannot be read or written."""


class BlobNotFoundError(StoreError):
    """A blob that a document names is not in the store or layout."""


class CredentialError(PolyarchError):
    """Credentials cannot be read (unreadable config, a credential helper that fails)."""


class RegistryError(PolyarchError):
    """A registry said no, or could not be reached.

    `status` is the HTTP status (None when no response came), `code` the registry's error code
    from the distribution spec (`MANIFEST_UNKNOWN`, `DENIED`, ...), `reference` what was asked for.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        reference: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.reference = reference
        self.detail = detail
        self.message = message
        text = message
        facts = []
        if reference:
            facts.append(reference)
        if status is not None:
            facts.append(f"HTTP {status}")
        if code:
            facts.append(code)
        if facts:
            text = f"{message} ({', '.join(facts)})"
        super().__init__(text)


class AuthenticationError(RegistryError):
    """401/403, or a token that cannot be obtained."""


class NotFoundError(RegistryError):
    """The repository, manifest or blob does not exist (404, `*_UNKNOWN`)."""


class RegistryUnavailableError(RegistryError):
    """The registry kept failing (5xx, 429, cut connections) after every retry."""


class InsecureTransportError(RegistryError):
    """A request would send credentials over plain HTTP, or follow a downgrade to it."""


class DockerfileError(PolyarchError):
    """A Dockerfile that cannot be parsed or used; names `file:line` and what is wrong."""

    def __init__(self, message: str, *, path: str = "Dockerfile", line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class UsageError(PolyarchError):
    """The user asked for something that cannot be done as asked (conflicting options)."""


class StepError(PolyarchError):
    """A build step that failed; the message says why (a worker raises it, knowing nothing of
    where in the Dockerfile the step comes from). `kind` tells apart the failures a caller acts
    on: "missing-source" (a copy's or a mount's source is not where it reads from)."""

    def __init__(self, message: str, *, kind: str = "") -> None:
        self.kind = kind
        super().__init__(message)


class BuildError(PolyarchError):
    """A build that failed: names the step's `file:line` (and its stage and platform)."""

    def __init__(
        self,
        message: str,
        *,
        location: str = "",
        stage: str = "",
        platform: str = "",
        others: tuple[BuildError, ...] = (),
        kind: str = "",
    ) -> None:
        self.message = message
        self.location = location
        self.stage = stage
        self.platform = platform
        self.others = others  # the other steps that failed in the same build (other platforms)
        self.kind = kind  # a StepError's kind ("missing-source"), or ""
        super().__init__(f"{location}: {message}" if location else message)

    def with_others(self, others: tuple[BuildError, ...]) -> BuildError:
        return BuildError(self.message, location=self.location, stage=self.stage,
                          platform=self.platform, others=others, kind=self.kind)  # fmt: skip


class LayerError(PolyarchError):
    """A layer that cannot be read: not a tar, a broken or truncated compression, a type
    polyarch does not know, or content that is not what its diffID says."""
