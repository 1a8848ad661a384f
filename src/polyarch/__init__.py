"""polyarch: multi-platform container images from ordinary Dockerfiles, without a daemon."""

from polyarch.errors import PolyarchError

__version__ = "0.1.0"

__all__ = ["PolyarchError", "__version__"]
