"""`polyarch diff`: what differs between two images, or two platforms of one index: config
fields, layers, and the files of their filesystems (the comparison is `layers.compare`; this
module fetches). The tool for "why is this build not reproducible".

Images come from the local store (a name `polyarch images` lists, or `sha256:...`), an OCI
layout (`oci:DIR[:NAME]`) or a registry. Every blob is checked against its digest, and each
layer's content against the diffID its config names; layers are kept in the workspace's store
(read once, however many images share them).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from polyarch.digest import Digest
from polyarch.errors import PolyarchError, UsageError
from polyarch.layers.compare import (
    FileInfo,
    ImageDiff,
    compare_configs,
    compare_files,
    compare_layers,
    filesystem,
)
from polyarch.layers.compress import DiffIdReader, open_layer
from polyarch.layers.listing import list_layer
from polyarch.oci.config import ImageConfig
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Descriptor, Index, Manifest
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.store.blobs import ContentStore
from polyarch.store.layout import OciLayout
from polyarch.transfer.endpoints import ImageSource, StoreSource


@dataclass(frozen=True, slots=True)
class Side:
    """One image to compare: where it came from, its manifest (and digest), its config."""

    label: str
    source: ImageSource
    manifest: Manifest
    digest: str
    config: ImageConfig
    config_json: dict[str, Any]


def local_source(layout: OciLayout, name: str) -> StoreSource | None:
    """The image the local store keeps under `name` (as built with -t, or sha256:...)."""
    if not layout.path.exists():
        return None
    try:
        key = name if name.startswith("sha256:") else str(Reference.parse(name))
        return StoreSource(layout, layout.resolve(key))
    except PolyarchError:
        return None


def images_of(source: ImageSource, platforms: Sequence[Platform]) -> dict[str, Side]:
    """The images of `source` by platform: the one image, or those of an index (`platforms`,
    else every one it has)."""
    fetched = source.resolve()
    document = fetched.document
    out: dict[str, Side] = {}
    if isinstance(document, Manifest):
        side = _side(source, document, str(fetched.digest))
        out[str(side.config.platform)] = side
        return out
    assert isinstance(document, Index)
    entries = [(p, document.image_for(p)) for p in platforms] if platforms else [
        (d.platform, d) for d in document.images() if d.platform is not None]  # fmt: skip
    for platform, entry in entries:
        if entry is None or platform is None:
            continue
        child = source.fetch_document(entry)
        if isinstance(child, Manifest):
            out[str(platform)] = _side(source, child, str(entry.digest))
    return out


def _side(source: ImageSource, manifest: Manifest, digest: str) -> Side:
    if manifest.config.size > MAX_DOCUMENT_SIZE:
        raise UsageError(f"{source}: its config is over {MAX_DOCUMENT_SIZE} bytes")
    raw = b"".join(source.open_blob(manifest.config))
    config = ImageConfig.parse(raw, f"config of {source}")
    data = json.loads(raw)
    return Side(str(source), source, manifest, digest, config, data if isinstance(data, dict)
                else {})  # fmt: skip


class Differ:
    """Compares images, reading each layer once into `blobs` (the workspace's store)."""

    def __init__(self, blobs: ContentStore) -> None:
        self.blobs = blobs
        self._layers: dict[str, list[FileInfo]] = {}

    def compare(self, a: Side | None, b: Side | None, platform: str, labels: tuple[str, str]
                ) -> ImageDiff:  # fmt: skip
        report = ImageDiff(labels[0], labels[1], platform)
        if a is None or b is None:
            missing = labels[0] if a is None else labels[1]
            report.problems.append(f"{missing} has no image for {platform}")
            return report
        report.a, report.b = f"{labels[0]} ({a.digest[:19]})", f"{labels[1]} ({b.digest[:19]})"
        if a.digest == b.digest:
            return report  # the same manifest: nothing can differ
        report.config = compare_configs(a.config_json, b.config_json)
        layers_a, layers_b = _layer_list(a), _layer_list(b)
        report.layers = compare_layers(layers_a, layers_b)
        report.layers_total = (len(layers_a), len(layers_b))
        try:
            tree_a = filesystem(self._entries(a, i) for i in range(len(a.manifest.layers)))
            tree_b = filesystem(self._entries(b, i) for i in range(len(b.manifest.layers)))
        except PolyarchError as exc:
            report.problems.append(f"cannot read the layers: {exc}")
            return report
        report.files = compare_files(tree_a, tree_b)
        report.files_total = (len(tree_a), len(tree_b))
        return report

    def _entries(self, side: Side, index: int) -> list[FileInfo]:
        descriptor = side.manifest.layers[index]
        diff_id = side.config.diff_ids[index] if index < len(side.config.diff_ids) else None
        key = f"{descriptor.digest} {diff_id}"
        if key not in self._layers:
            self._fetch(side.source, descriptor)
            self._layers[key] = self._list(descriptor, diff_id, f"layer {index + 1} of "
                                           f"{side.label}")  # fmt: skip
        return self._layers[key]

    def _fetch(self, source: ImageSource, descriptor: Descriptor) -> None:
        if not self.blobs.has(descriptor.digest, descriptor.size):
            self.blobs.ingest(source.open_blob(descriptor), descriptor.digest, descriptor.size)

    def _list(self, descriptor: Descriptor, diff_id: Digest | None, what: str) -> list[FileInfo]:
        with self.blobs.open(descriptor.digest, descriptor.size) as raw:
            stream = open_layer(io.BufferedReader(raw), descriptor.media_type)
            if diff_id is None:
                return list(list_layer(stream))
            checked = DiffIdReader(stream, diff_id, what)
            entries = list(list_layer(io.BufferedReader(checked)))
            checked.check()
            return entries


def _layer_list(side: Side) -> list[tuple[str, int, str]]:
    ids = [str(d) for d in side.config.diff_ids]
    return [(str(d.digest), d.size, ids[i] if i < len(ids) else "")
            for i, d in enumerate(side.manifest.layers)]  # fmt: skip


def diff(
    sources: Sequence[ImageSource],
    platforms: Sequence[Platform],
    blobs: ContentStore,
    names: Sequence[str] = (),
) -> list[ImageDiff]:
    """Compare two images (`sources` A and B; for indexes, each platform of `platforms`,
    else each either has), or two platforms of one (one source, two `platforms`). `names`:
    how to show the sources (default: what they say of themselves)."""
    differ = Differ(blobs)
    shown = list(names) or [str(s) for s in sources]
    if len(sources) == 1:
        if len(platforms) != 2:
            raise UsageError("to compare two platforms of one image, give two --platform "
                             "(e.g. --platform linux/amd64 --platform linux/arm64)")  # fmt: skip
        sides = images_of(sources[0], platforms)
        a, b = (sides.get(str(p)) for p in platforms)
        labels = (f"{shown[0]} {platforms[0]}", f"{shown[0]} {platforms[1]}")
        return [differ.compare(a, b, f"{platforms[0]} vs {platforms[1]}", labels)]
    first, second = images_of(sources[0], platforms), images_of(sources[1], platforms)
    labels = (shown[0], shown[1])
    if len(first) == 1 and len(second) == 1 and not platforms:
        # Two single images (or one-platform indexes): compared whatever their platforms.
        (pa, a), (pb, b) = next(iter(first.items())), next(iter(second.items()))
        return [differ.compare(a, b, pa if pa == pb else f"{pa} vs {pb}", labels)]
    wanted = [str(p) for p in platforms] or list(dict.fromkeys([*first, *second]))
    return [differ.compare(first.get(p), second.get(p), p, labels) for p in wanted]
