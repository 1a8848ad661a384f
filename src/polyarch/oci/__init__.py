"""OCI and Docker schema 2 documents: media types and models (pure)."""

from polyarch.oci import mediatypes
from polyarch.oci.models import (
    Descriptor,
    Document,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
    load_json,
    parse_document,
)

__all__ = [
    "Descriptor",
    "Document",
    "ImageConfig",
    "Index",
    "Manifest",
    "canonical_json",
    "load_json",
    "mediatypes",
    "parse_document",
]
