"""OCI image layouts: a directory with `oci-layout`, `index.json` and `blobs/`.

Named images are entries of `index.json` with the `org.opencontainers.image.ref.name`
annotation, as skopeo, buildah and BuildKit write them. `index.json` is replaced atomically
(temp file, fsync, rename) under an exclusive lock, so concurrent writers never lose an entry.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from polyarch.digest import Digest
from polyarch.errors import BlobNotFoundError, ManifestError, StoreError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Descriptor, Index, load_json, parse_document
from polyarch.store.blobs import ContentStore, _fsync_dir

_LAYOUT_FILE = "oci-layout"
_INDEX_FILE = "index.json"


def read_small(path: Path, limit: int = MAX_DOCUMENT_SIZE) -> bytes:
    """A small file of a layout, never through a symlink (a layout is not trusted: its
    index.json could point at /dev/zero or a host secret), and never over `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(f"{path} is a symlink: refusing to follow it") from None
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StoreError(f"{path} is over {limit} bytes: refusing it")
    return data


class OciLayout:
    """An OCI image layout on disk; `blobs` is its content store."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not (self.path / _LAYOUT_FILE).is_file():
            raise StoreError(f"{self.path} is not an OCI image layout (no {_LAYOUT_FILE} file)")
        self.blobs = ContentStore(self.path, create=create)
        marker = self.path / _LAYOUT_FILE
        if create:
            self.blobs.clear_ingest()  # what a killed copy into this layout left
        if marker.is_file():
            try:
                version = load_json(read_small(marker), str(marker)).get("imageLayoutVersion")
            except ManifestError as exc:
                raise StoreError(str(exc)) from None
            if not isinstance(version, str) or not version.startswith("1."):
                raise StoreError(f"{marker}: unsupported imageLayoutVersion {version!r}")
        else:
            self._write_atomic(marker, json.dumps({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}))
        if not (self.path / _INDEX_FILE).exists():
            with self._locked():
                if not (self.path / _INDEX_FILE).exists():
                    self._write_index(Index.create([]))

    # index.json --------------------------------------------------------------------------

    def index(self) -> Index:
        raw = read_small(self.path / _INDEX_FILE)
        try:
            doc = parse_document(raw, mt.OCI_INDEX, what=f"{self.path}/{_INDEX_FILE}")
        except ManifestError as exc:
            raise StoreError(str(exc)) from None
        assert isinstance(doc, Index)
        return doc

    def refs(self) -> dict[str, Descriptor]:
        """Named entries of index.json, by name."""
        out: dict[str, Descriptor] = {}
        for entry in self.index().manifests:
            name = entry.annotations.get(mt.ANNOTATION_REF_NAME)
            if name is not None:
                out[name] = entry
        return out

    def resolve(self, name: str | None) -> Descriptor:
        """The entry named `name`; with no name, the only entry there is."""
        entries = self.index().manifests
        if name is None:
            if len(entries) == 1:
                return entries[0]
            names = sorted(self.refs())
            raise StoreError(
                f"{self.path} holds {len(entries)} images; name one "
                f"(oci:{self.path}:NAME){': ' + ', '.join(names) if names else ''}"
            )
        found = [e for e in entries if e.annotations.get(mt.ANNOTATION_REF_NAME) == name]
        if not found:
            raise BlobNotFoundError(f"no image named {name!r} in OCI layout {self.path}")
        return found[-1]

    def set_ref(self, name: str, descriptor: Descriptor) -> None:
        """Point `name` at `descriptor` (replacing an entry of the same name), atomically."""
        if not self.blobs.has(descriptor.digest, descriptor.size):
            raise BlobNotFoundError(
                f"cannot name {descriptor.digest} {name!r}: it is not in {self.path}"
            )
        annotations = dict(descriptor.annotations)
        annotations[mt.ANNOTATION_REF_NAME] = name
        entry = Descriptor(
            descriptor.media_type,
            descriptor.digest,
            descriptor.size,
            platform=descriptor.platform,
            annotations=annotations,
        )
        with self._locked():
            current = self.index()
            kept = [
                e for e in current.manifests if e.annotations.get(mt.ANNOTATION_REF_NAME) != name
            ]
            self._write_index(Index.create([*kept, entry], annotations=current.annotations))

    def remove_ref(self, name: str) -> bool:
        with self._locked():
            current = self.index()
            kept = [
                e for e in current.manifests if e.annotations.get(mt.ANNOTATION_REF_NAME) != name
            ]
            if len(kept) == len(current.manifests):
                return False
            self._write_index(Index.create(kept, annotations=current.annotations))
            return True

    # documents ---------------------------------------------------------------------------

    def read_document(self, descriptor: Descriptor) -> bytes:
        return self.blobs.read_bytes(descriptor.digest, descriptor.size)

    def write_document(self, raw: bytes) -> Digest:
        return self.blobs.put_bytes(raw, Digest.of(raw))

    # internals ---------------------------------------------------------------------------

    def _write_index(self, index: Index) -> None:
        self._write_atomic(self.path / _INDEX_FILE, index.raw.decode("utf-8"))

    def _write_atomic(self, target: Path, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path, prefix=f".{target.name}-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(name, 0o644)
            os.replace(name, target)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
