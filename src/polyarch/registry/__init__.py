"""Talking to OCI registries (effects: the network, credential helpers)."""

from polyarch.registry.client import FetchedDocument, RegistryClient, UploadResult
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
    "UploadResult",
]
