"""The seed's version rule (S1), as a pure function of git facts.

    VERSION = the first tag (in `git tag --contains HEAD` order) that contains HEAD,
              else BASE_VERSION-<the 7-character short sha of HEAD>

A working tree with uncommitted changes is flagged with the suffix `-dirty` (as
`git describe --dirty` does), so an image built from it never passes for the release.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from polyarch.errors import UsageError

DIRTY_SUFFIX: Final = "-dirty"
_SHA: Final = re.compile(r"[0-9a-f]{7,40}")


def version(
    tags_containing_head: Sequence[str], head_sha: str, base_version: str, *, dirty: bool
) -> str:
    if not _SHA.fullmatch(head_sha):
        raise UsageError(f"not a commit id: {head_sha!r}")
    tags = [t for t in tags_containing_head if t.strip()]
    value = tags[0].strip() if tags else f"{base_version}-{head_sha[:7]}"
    return value + (DIRTY_SUFFIX if dirty else "")
