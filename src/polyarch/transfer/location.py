"""Where an image is: a registry reference or an OCI layout (`oci:DIR[:NAME]`). Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from polyarch.errors import InvalidReferenceError
from polyarch.reference import Reference

_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class LayoutLocation:
    """An image in an OCI layout directory, named by its `ref.name` annotation (or the only one)."""

    path: str
    name: str | None = None

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.name}" if self.name else "")


Location = Reference | LayoutLocation


def parse_location(text: str) -> Location:
    """`oci:DIR[:NAME]`, `docker://REF` or a plain reference (`nginx`, `host:5000/a/b:t`)."""
    if text.startswith("oci:"):
        rest = text[4:]
        if not rest:
            raise InvalidReferenceError("oci: needs a directory, as in oci:./out or oci:./out:v1")
        path, sep, name = rest.rpartition(":")
        if sep and path and _NAME.fullmatch(name):
            return LayoutLocation(path, name)
        return LayoutLocation(rest, None)
    if text.startswith("docker://"):
        return Reference.parse(text[len("docker://") :])
    return Reference.parse(text)
