"""Layers: secure extraction, deterministic tar writing, one-pass compression (effects: files)."""

from polyarch.layers.apply import ApplyReport, apply_layer
from polyarch.layers.compress import LayerBlob, LayerSink, open_layer
from polyarch.layers.confine import Root, UnsafePathError, clean_member_name
from polyarch.layers.write import write_layer

__all__ = [
    "ApplyReport",
    "LayerBlob",
    "LayerSink",
    "Root",
    "UnsafePathError",
    "apply_layer",
    "clean_member_name",
    "open_layer",
    "write_layer",
]
