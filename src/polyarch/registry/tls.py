"""TLS trust for registries: system CAs plus per-registry files in `certs.d` directories.

The layout is the one docker, podman, skopeo and buildah share: `<dir>/<host[:port]>/*.crt` are
extra CA certificates for that registry, and `<name>.cert` with `<name>.key` a client
certificate. Directories searched: those given (`--certs-dir`), then `/etc/containers/certs.d`
and `/etc/docker/certs.d`.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from polyarch.errors import RegistryError

SYSTEM_CERTS_DIRS: Final = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


class TlsConfig:
    def __init__(self, certs_dirs: Sequence[Path] = (), *, system: bool = True) -> None:
        self.dirs = tuple(certs_dirs) + (SYSTEM_CERTS_DIRS if system else ())
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def context_for(self, host: str) -> ssl.SSLContext:
        with self._lock:
            context = self._contexts.get(host)
            if context is None:
                context = self._build(host)
                self._contexts[host] = context
            return context

    def _build(self, host: str) -> ssl.SSLContext:
        folders = [base / host for base in self.dirs if (base / host).is_dir()]
        if not folders:
            # Loading the system CA store costs tens of milliseconds: do it once, share it.
            default = self._contexts.get("")
            if default is None:
                default = self._contexts[""] = ssl.create_default_context()
            return default
        context = ssl.create_default_context()
        for folder in folders:
            try:
                for ca in sorted(folder.glob("*.crt")):
                    context.load_verify_locations(cafile=str(ca))
                for cert in sorted(folder.glob("*.cert")):
                    key = cert.with_suffix(".key")
                    if not key.is_file():
                        raise RegistryError(
                            f"client certificate {cert} has no key file {key.name} beside it"
                        )
                    context.load_cert_chain(str(cert), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"cannot load TLS files from {folder}: {exc}") from None
        return context
