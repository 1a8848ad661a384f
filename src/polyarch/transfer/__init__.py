"""Moving images between registries and OCI layouts."""

from polyarch.transfer.copy import TransferReport, copy_image, create_index, select_platforms
from polyarch.transfer.endpoints import (
    ImageSource,
    ImageTarget,
    LayoutRepository,
    RegistryRepository,
)
from polyarch.transfer.location import LayoutLocation, Location, parse_location

__all__ = [
    "ImageSource",
    "ImageTarget",
    "LayoutLocation",
    "LayoutRepository",
    "Location",
    "RegistryRepository",
    "TransferReport",
    "copy_image",
    "create_index",
    "parse_location",
    "select_platforms",
]
