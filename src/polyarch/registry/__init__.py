"""Talking to OCI registries (effects: the network, credential helpers)."""

import sys

# httpx imports its own command-line client (click, rich, pygments) whenever they are
# importable: about 80 ms of every polyarch start. polyarch never uses it, and httpx falls back
# to a stub when that import fails. This package is always imported before its modules.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

# ruff: noqa: E402

from polyarch.registry.client import FetchedDocument, RegistryClient, Timing, UploadResult
from polyarch.registry.credentials import (
    ANONYMOUS,
    Credential,
    CredentialSource,
    DockerConfigCredentials,
)
from polyarch.registry.retry import RetryPolicy

__all__ = [
    "ANONYMOUS",
    "Credential",
    "CredentialSource",
    "DockerConfigCredentials",
    "FetchedDocument",
    "RegistryClient",
    "RetryPolicy",
    "Timing",
    "UploadResult",
]
