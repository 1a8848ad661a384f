"""Both ends of a transfer: a repository on a registry, or an OCI layout on disk.

Each adapter is a source (resolve its image, read documents and blobs, verified) and a target
(receive blobs and documents, then name the top document). `copy_image` and `create_index` in
`polyarch.transfer.copy` work on these protocols and know nothing of HTTP or files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from polyarch.errors import ManifestError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Document, parse_document
from polyarch.reference import Reference
from polyarch.registry.client import FetchedDocument, RegistryClient, UploadResult
from polyarch.store.layout import OciLayout
from polyarch.transfer.location import LayoutLocation

MAX_CONFIG_SIZE = 16 * 1024 * 1024


class ImageSource(Protocol):
    def __str__(self) -> str: ...

    @property
    def registry_repository(self) -> tuple[str, str] | None:
        """(registry, repository) when the source is on a registry (for cross-repo mounts)."""
        ...

    def resolve(self) -> FetchedDocument: ...

    def fetch_document(self, descriptor: Descriptor) -> Document: ...

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """The blob's bytes, checked against digest and size: raises before the last chunk."""
        ...


class ImageTarget(Protocol):
    def __str__(self) -> str: ...

    def put_blob(self, descriptor: Descriptor, source: ImageSource) -> UploadResult: ...

    def put_document(self, document: Document) -> None:
        """Store a document by its digest (it must not be visible under a name yet)."""
        ...

    def put_named(self, document: Document) -> str:
        """Make the document the image this target names (the last step of a transfer)."""
        ...


def read_small_blob(source: ImageSource, descriptor: Descriptor) -> bytes:
    if descriptor.size > MAX_CONFIG_SIZE:
        raise ManifestError(f"config {descriptor.digest} is {descriptor.size} bytes; refusing")
    return b"".join(source.open_blob(descriptor))


class RegistryRepository:
    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        self.client = client
        self.ref = ref

    def __str__(self) -> str:
        return str(self.ref)

    @property
    def registry_repository(self) -> tuple[str, str] | None:
        return (self.ref.registry, self.ref.repository)

    def resolve(self) -> FetchedDocument:
        return self.client.get_manifest(self.ref)

    def fetch_document(self, descriptor: Descriptor) -> Document:
        fetched = self.client.get_manifest(self.ref.with_digest(descriptor.digest))
        if len(fetched.document.raw) != descriptor.size:
            raise ManifestError(
                f"manifest {descriptor.digest} is {len(fetched.document.raw)} bytes, "
                f"its descriptor says {descriptor.size}"
            )
        return fetched.document

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        return self.client.get_blob(self.ref, descriptor)

    def put_blob(self, descriptor: Descriptor, source: ImageSource) -> UploadResult:
        mount_from = None
        origin = source.registry_repository
        if (
            origin is not None
            and origin[0] == self.ref.registry
            and origin[1] != self.ref.repository
        ):
            mount_from = origin[1]
        return self.client.upload_blob(
            self.ref,
            descriptor,
            lambda: source.open_blob(descriptor),
            mount_from=mount_from,
            source_verifies=True,  # every ImageSource.open_blob checks what it yields
        )

    def put_document(self, document: Document) -> None:
        self.client.put_manifest(
            Reference(self.ref.registry, self.ref.repository, None, document.digest),
            document.raw,
            document.media_type,
        )

    def put_named(self, document: Document) -> str:
        if self.ref.tag is None and self.ref.digest is None:
            raise ManifestError(f"{self.ref} names neither a tag nor a digest")
        self.client.put_manifest(self.ref, document.raw, document.media_type)
        if self.ref.tag is not None and self.ref.digest is None:
            return f"{self.ref.name}:{self.ref.tag}"
        return f"{self.ref.name}@{document.digest}"


class LayoutRepository:
    def __init__(self, location: LayoutLocation, *, create: bool, default_name: str = "latest"):
        self.location = location
        self.layout = OciLayout(Path(location.path), create=create)
        self.default_name = default_name

    def __str__(self) -> str:
        return str(self.location)

    @property
    def registry_repository(self) -> tuple[str, str] | None:
        return None

    def resolve(self) -> FetchedDocument:
        descriptor = self.layout.resolve(self.location.name)
        raw = self.layout.read_document(descriptor)
        document = parse_document(raw, descriptor.media_type, what=f"{self.location} top")
        return FetchedDocument(document, descriptor.digest)

    def fetch_document(self, descriptor: Descriptor) -> Document:
        raw = self.layout.read_document(descriptor)
        return parse_document(raw, descriptor.media_type, what=f"manifest {descriptor.digest}")

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        return self.layout.blobs.iter_blob(descriptor.digest, descriptor.size)

    def put_blob(self, descriptor: Descriptor, source: ImageSource) -> UploadResult:
        if self.layout.blobs.has(descriptor.digest, descriptor.size):
            return "exists"
        self.layout.blobs.ingest(source.open_blob(descriptor), descriptor.digest, descriptor.size)
        return "uploaded"

    def put_document(self, document: Document) -> None:
        self.layout.write_document(document.raw)

    def put_named(self, document: Document) -> str:
        self.layout.write_document(document.raw)
        name = self.location.name or self.default_name
        self.layout.set_ref(name, document.descriptor())
        return f"oci:{self.location.path}:{name}"


class StoreSource:
    """An image of an OCI layout by its descriptor (`top`), named or not."""

    def __init__(self, layout: OciLayout, top: Descriptor) -> None:
        self.layout, self.top = layout, top

    def __str__(self) -> str:
        return str(self.top.digest)

    @property
    def registry_repository(self) -> tuple[str, str] | None:
        return None

    def resolve(self) -> FetchedDocument:
        raw = self.layout.read_document(self.top)
        return FetchedDocument(parse_document(raw, self.top.media_type), self.top.digest)

    def fetch_document(self, descriptor: Descriptor) -> Document:
        raw = self.layout.read_document(descriptor)
        return parse_document(raw, descriptor.media_type, what=f"manifest {descriptor.digest}")

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        return self.layout.blobs.iter_blob(descriptor.digest, descriptor.size)


class StoreThenRegistry(StoreSource):
    """An image of an OCI layout (`top`, by descriptor) some of whose parts are only in a
    registry repository (build nodes pushed them there): each document and blob is read from
    the layout when it holds it, else from the repository."""

    def __init__(self, layout: OciLayout, top: Descriptor, remote: RegistryRepository) -> None:
        super().__init__(layout, top)
        self.remote = remote

    def __str__(self) -> str:
        return f"{self.top.digest} (here and in {self.remote})"

    @property
    def registry_repository(self) -> tuple[str, str] | None:
        return self.remote.registry_repository

    def fetch_document(self, descriptor: Descriptor) -> Document:
        if self.layout.blobs.has(descriptor.digest, descriptor.size):
            raw = self.layout.read_document(descriptor)
            return parse_document(raw, descriptor.media_type, what=f"manifest {descriptor.digest}")
        return self.remote.fetch_document(descriptor)

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        if self.layout.blobs.has(descriptor.digest, descriptor.size):
            return self.layout.blobs.iter_blob(descriptor.digest, descriptor.size)
        return self.remote.open_blob(descriptor)


def is_distributable(descriptor: Descriptor) -> bool:
    """Foreign (non-distributable) layers are referenced by URL and never copied."""
    return not (
        descriptor.urls
        or descriptor.media_type == mt.DOCKER_LAYER_FOREIGN
        or ("nondistributable" in descriptor.media_type)
    )
