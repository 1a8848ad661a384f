"""Media types of the OCI image spec and of Docker's schema 2, which registries still serve."""

from __future__ import annotations

from typing import Final

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYOUT_VERSION: Final = "1.0.0"

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
DOCUMENT_TYPES: Final = INDEX_TYPES | MANIFEST_TYPES
SCHEMA1_TYPES: Final = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
CONFIG_TYPES: Final = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# What a client asks a registry for, best first (sent as one Accept header).
ACCEPT_DOCUMENTS: Final = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

# Annotations polyarch reads or writes.
ANNOTATION_REF_NAME: Final = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED: Final = "org.opencontainers.image.created"
# BuildKit marks attestation manifests inside an index with these.
ANNOTATION_REFERENCE_TYPE: Final = "vnd.docker.reference.type"
ANNOTATION_REFERENCE_DIGEST: Final = "vnd.docker.reference.digest"
ANNOTATION_REFERENCE_TYPE_ATTESTATION: Final = "attestation-manifest"
# An attestation manifest's artifactType (BuildKit, OCI-artifact form).
ATTESTATION_MANIFEST: Final = "application/vnd.docker.attestation.manifest.v1+json"
