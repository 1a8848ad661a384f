"""An image with its layers in another compression, for an output that asks for one
(`compression=zstd`, `compression-level`, `force-compression`). Effects: the store.

The uncompressed content of every layer stays what it was (its diffID, so the config does not
change); its blob, its media type and the manifests and index that name it are new. Without
`force`, the layers the base images brought keep their compression, as in BuildKit; the build's
own layers take the one asked for. Entries keep their platform and annotations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from polyarch.digest import Digest
from polyarch.export.outputs import LayerCompression
from polyarch.layers.compress import Compression, LayerSink, open_layer
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest, parse_document
from polyarch.store.layout import OciLayout

_KIND_OF: dict[str, Compression] = {
    mt.OCI_LAYER_GZIP: "gzip", mt.DOCKER_LAYER_GZIP: "gzip", mt.OCI_LAYER_ZSTD: "zstd",
    mt.OCI_LAYER: "none", "application/vnd.docker.image.rootfs.diff.tar": "none",
}  # fmt: skip


def recompressed(
    layout: OciLayout,
    top: Descriptor,
    wanted: LayerCompression,
    base_layers: Collection[Digest] = (),
) -> Descriptor:
    """`top` (an index or a manifest in `layout`) with its layers in `wanted`; `top` itself
    when nothing changes. `base_layers`: blobs the base images brought."""
    kind: Compression = "none" if wanted.kind == "uncompressed" else wanted.kind
    if wanted.is_default:
        return top
    converted: dict[Digest, Descriptor] = {}

    def layer(descriptor: Descriptor) -> Descriptor:
        if descriptor.digest in converted:
            return converted[descriptor.digest]
        current = _KIND_OF.get(descriptor.media_type)
        keep = current is None or (not wanted.force and descriptor.digest in base_layers)
        if keep or (current == kind and wanted.level is None and not wanted.force):
            return descriptor
        sink = LayerSink(layout.blobs, compression=kind, level=wanted.level)
        try:
            with layout.blobs.open(descriptor.digest, descriptor.size) as raw:
                stream = open_layer(raw, descriptor.media_type)  # type: ignore[arg-type]
                while chunk := stream.read(1 << 20):
                    sink.write(chunk)
                raw.verify()
            blob = sink.finish()
        except BaseException:
            sink.abort()
            raise
        new = Descriptor(blob.media_type, blob.digest, blob.size,
                         annotations=descriptor.annotations)  # fmt: skip
        converted[descriptor.digest] = new
        return new

    def document(descriptor: Descriptor) -> Descriptor:
        doc = parse_document(layout.read_document(descriptor), descriptor.media_type)
        if isinstance(doc, Manifest):
            layers = [layer(d) for d in doc.layers]
            if layers == list(doc.layers):
                return descriptor
            new = Manifest.create(doc.config, layers, media_type=doc.media_type,
                                  annotations=doc.annotations or None)  # fmt: skip
        else:
            entries = [document(d) for d in doc.manifests]
            if entries == list(doc.manifests):
                return descriptor
            new_index = Index.create(entries, media_type=doc.media_type,
                                     annotations=doc.annotations or None)  # fmt: skip
            layout.write_document(new_index.raw)
            return dataclasses.replace(new_index.descriptor(), platform=descriptor.platform,
                                       annotations=descriptor.annotations)  # fmt: skip
        layout.write_document(new.raw)
        return dataclasses.replace(new.descriptor(descriptor.platform),
                                   annotations=descriptor.annotations)  # fmt: skip

    return document(top)
