"""A copy's sources taken from an image whose layers are not unpacked yet, without unpacking
it: `COPY --from=IMAGE /usr/bin/tool /dst` needs one file of a whole distribution.

The layers are read in order and only the entries on the sources' paths are extracted, into
a private scratch root (whiteouts carried out; the same checks as a full unpack for every
entry, and each layer's diffID proven), which the copy then reads as it would read the image.
It is used only when that root is the image's own tree for what the copy reads: each source
a plain path (no wildcard, no `..`, not the root), found there with every directory on its
way a real directory and itself not a symlink (a symlink met on the way may lead anywhere in
the image); otherwise the caller unpacks the image as usual.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyarch.layers import Root
from polyarch.layers.confine import UnsafePathError, clean_member_name
from polyarch.store.blobs import ContentStore
from polyarch.worker.base import LayerRef
from polyarch.worker.local.copydiff import extract_layers
from polyarch.worker.local.filecopy import has_wildcard


@dataclass(frozen=True, slots=True)
class Wanted:
    """The entries a copy's plain sources need: each source, everything below it, and the
    directories on the way to it."""

    paths: tuple[str, ...]
    ancestors: frozenset[str]

    @classmethod
    def of(cls, sources: Sequence[str]) -> Wanted | None:
        """None when a source is not a plain path inside the image."""
        paths = []
        for given in sources:
            if has_wildcard(given) or "\\" in given or ".." in given.split("/"):
                return None
            try:
                path = clean_member_name(given)
            except UnsafePathError:
                return None
            if not path:
                return None
            paths.append(path)
        ancestors = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
        return cls(tuple(paths), frozenset(ancestors))

    def __call__(self, name: str) -> bool:
        return name in self.ancestors or any(
            name == p or name.startswith(p + "/") for p in self.paths
        )

    def complete_in(self, root: Path) -> bool:
        """Whether each source resolves in `root` without a symlink, to an entry that is
        there: then the extracted entries are all the copy reads."""
        for path in self.paths:
            parts = path.split("/")
            for i in range(1, len(parts) + 1):
                try:
                    st = os.lstat(root.joinpath(*parts[:i]))
                except OSError:
                    return False
                if stat.S_ISLNK(st.st_mode) or (i < len(parts) and not stat.S_ISDIR(st.st_mode)):
                    return False
        return True


def extract_sources(
    layers: Sequence[LayerRef], blobs: ContentStore, wanted: Wanted, into: Path
) -> Root | None:
    """The entries `wanted` names, extracted from the layers into `into` (an empty
    directory): a root to copy from, or None when it would not be the image's tree for these
    sources (the caller unpacks the image then). A layer that fails its checks raises."""
    extract_layers(layers, blobs, into, only=wanted)
    return Root(into) if wanted.complete_in(into) else None
