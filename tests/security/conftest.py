"""The security tests use the integration suite's registries and base image (started and made
here, on 127.0.0.1)."""

from tests.integration.conftest import base, registry

__all__ = ["base", "registry"]
