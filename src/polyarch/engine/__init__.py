"""The build engine: executes plans into images (effects: mounts, runtimes, the store)."""

from polyarch.engine.builder import Builder, BuildError, BuildRequest, BuildResult

__all__ = ["BuildError", "BuildRequest", "BuildResult", "Builder"]
