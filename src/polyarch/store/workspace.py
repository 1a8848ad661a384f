"""The workspace: one root directory that holds everything polyarch keeps, and its locks.

No other module spells these paths. The root and everything in it is reachable by its owner
only (0700): unpacked layers hold setuid binaries and device nodes from images, and images
may be private (the class of CVE-2021-41091, where other local users reached into Docker's
data root).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from polyarch.errors import UsageError
from polyarch.store.layout import OciLayout


class Workspace:
    def __init__(self, root: Path) -> None:
        if not str(root).strip():
            raise UsageError("the workspace root (--root, POLYARCH_ROOT) must not be empty")
        self.root = root.absolute()  # paths under it reach runc, which has its own cwd
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if root.stat().st_mode & 0o077:
                os.chmod(root, 0o700)
        except OSError as exc:
            raise UsageError(f"cannot use {root} as polyarch's workspace: {exc.strerror}") from None
        self._layout: OciLayout | None = None

    # what it holds -------------------------------------------------------------------------

    @property
    def layout(self) -> OciLayout:
        if self._layout is None:
            self._layout = OciLayout(self.root / "store")
        return self._layout

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def cache_db(self) -> Path:
        return self.root / "cache.db"

    @property
    def tmp(self) -> Path:
        return self._dir("tmp")

    @property
    def runtime(self) -> Path:
        return self._dir("runtime")

    @property
    def verify(self) -> Path:
        return self._dir("verify")

    @property
    def cache_mounts(self) -> Path:
        return self._dir("cache-mounts")

    @property
    def explanations(self) -> Path:
        """The last build of each target: what its steps' keys were made of."""
        return self._dir("explain")

    @property
    def sbom_layers(self) -> Path:
        """What each layer holds for an SBOM (its package databases), kept by diffID."""
        return self._dir("sbom")

    @property
    def file_digests(self) -> Path:
        return self.root / "files.db"

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    # locks ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One build (or clean, or verify) at a time per workspace."""
        fd = os.open(self.root / "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
