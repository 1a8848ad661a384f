"""From a solved build to image documents: the config (with its history's times and layers),
the manifest, and the index of several platforms.

Times: a step run now is dated by the build (`SOURCE_DATE_EPOCH` when set); a step taken from
the cache keeps the time it was first made, so a rebuild that changes nothing gives the very
same image. A metadata step takes the time of the step before it. With `SOURCE_DATE_EPOCH`
every new history entry and the image itself carry that time, as BuildKit writes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from polyarch.errors import PolyarchError, UsageError
from polyarch.graph.model import ImageSpec
from polyarch.image.annotations import Annotation, for_level
from polyarch.oci import mediatypes as mt
from polyarch.oci.config import HistoryEntry, ImageConfig
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.platform import Platform
from polyarch.store.layout import OciLayout
from polyarch.worker.base import Result


def timestamp(epoch: int | None) -> str:
    moment = datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(
    spec: ImageSpec,
    result: Callable[[str], Result],
    *,
    now: str,
    epoch: int | None,
) -> ImageConfig:
    """The config of a built image: the spec's, with layers and dated history."""
    final = result(spec.result)
    latest = spec.config.created or ""
    history = list(spec.config.history)
    for step in spec.steps:
        empty = True
        if step.layer_of is not None:
            made = result(step.layer_of)
            empty = made.layer is None
            created = now if epoch is not None else (made.created or now)
            latest = max(latest, created) if latest else created
        else:
            created = now if epoch is not None else (latest or now)
        history.append(HistoryEntry(created, step.created_by, None, step.comment, empty))
    layers = [h for h in history if not h.empty_layer]
    if len(layers) != len(final.layers):
        raise PolyarchError(
            f"internal error: {len(final.layers)} layers for {len(layers)} history entries "
            "that have one"
        )
    created = now if epoch is not None else (latest or now)
    return spec.config.replace(
        created=created,
        diff_ids=tuple(layer.diff_id for layer in final.layers),
        history=tuple(history),
    )


def write_image(
    layout: OciLayout,
    spec: ImageSpec,
    config: ImageConfig,
    result: Result,
    annotations: Sequence[Annotation] = (),
) -> Descriptor:
    """Store the config and the manifest; returns the manifest's descriptor (with platform,
    and the `manifest-descriptor` annotations for its entry in an index)."""
    raw = config.to_bytes()
    digest = layout.blobs.put_bytes(raw)
    manifest = Manifest.create(
        Descriptor(mt.OCI_CONFIG, digest, len(raw)),
        [Descriptor(layer.media_type, layer.digest, layer.size) for layer in result.layers],
        annotations=dict(for_level(annotations, "manifest", spec.platform)) or None,
    )
    layout.write_document(manifest.raw)
    descriptor = manifest.descriptor(spec.platform)
    entry = for_level(annotations, "manifest-descriptor", spec.platform)
    return dataclasses.replace(descriptor, annotations=dict(sorted(entry.items())))


def write_index(
    layout: OciLayout,
    manifests: Mapping[Platform, Descriptor],
    annotations: Sequence[Annotation] = (),
) -> Descriptor:
    """One manifest stands alone; several become an index, in the order given."""
    if len(manifests) == 1:
        if any(a.level in ("index", "manifest-descriptor") for a in annotations):
            raise UsageError("index and manifest-descriptor annotations need an index: build "
                             "two or more platforms, or annotate the manifest")  # fmt: skip
        return dataclasses.replace(next(iter(manifests.values())), annotations={})
    index = Index.create(list(manifests.values()),
                         annotations=dict(for_level(annotations, "index")) or None)  # fmt: skip
    layout.write_document(index.raw)
    return index.descriptor()
