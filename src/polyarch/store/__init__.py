"""Local content: the blob store and OCI image layouts (effects: the filesystem)."""

from polyarch.store.blobs import BlobWriter, ContentStore
from polyarch.store.layout import OciLayout

__all__ = ["BlobWriter", "ContentStore", "OciLayout"]
