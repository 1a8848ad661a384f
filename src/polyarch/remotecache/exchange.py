"""Exporting and importing the build cache (effects: a registry or an OCI layout).

`--cache-to type=registry,ref=REF` / `type=local,dest=DIR` and `--cache-from
type=registry,ref=REF` / `type=local,src=DIR`. The format and the writers' tags are in
`format.py`. An import reads the entries at the start of a build and fetches a layer only when
a step it hit is needed (its snapshot, or the final image); every blob is checked against its
digest, and an entry whose blob does not match is dropped with a warning and the build goes on
without it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from polyarch.digest import Digest
from polyarch.errors import PolyarchError, RegistryError
from polyarch.oci.models import Descriptor, Manifest, parse_document
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.remotecache.format import (
    CONFIG_TYPE,
    CacheFormatError,
    CacheRecord,
    CacheSpec,
    artifact,
    check_artifact,
    decode_config,
    encode_config,
    is_writer_tag,
    limit,
    merge,
    writer_tag,
)
from polyarch.solver.cache import CachedLayer, UnusableCacheEntry
from polyarch.store.blobs import ContentStore
from polyarch.store.layout import OciLayout

MAX_CONFIG = 64 * 1024 * 1024


class BadCacheBlob(UnusableCacheEntry):
    """An imported layer whose bytes do not match its digest: the build drops the entries
    that name it and solves again without them."""

    def __init__(self, digest: Digest, reason: str) -> None:
        super().__init__(f"imported cache layer {digest} is unusable: {reason}")
        self.digest = digest


class CacheStore(Protocol):
    """Where an exported cache lives: a registry repository, or an OCI layout."""

    location: str  # "registry:REPOSITORY" or "local:DIR": where its blobs can be fetched again

    def tags(self) -> list[str]: ...

    def manifest(self, tag: str) -> Manifest | None: ...

    def blob(self, descriptor: Descriptor) -> Iterator[bytes]: ...

    def has_blob(self, descriptor: Descriptor) -> bool: ...

    def put_blob(self, descriptor: Descriptor, chunks: Callable[[], Iterable[bytes]]) -> None: ...

    def put_manifest(self, tag: str, manifest: Manifest) -> None: ...


class RegistryCacheStore:
    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        self.client, self.ref = client, ref
        self.location = f"registry:{ref.name}"

    def tags(self) -> list[str]:
        try:
            return self.client.list_tags(self.ref)
        except RegistryError as exc:
            if exc.status == 404:
                return []
            raise

    def manifest(self, tag: str) -> Manifest | None:
        target = self.ref.with_tag(tag)
        try:
            fetched = self.client.get_manifest(target)
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise
        document = fetched.document
        if not isinstance(document, Manifest):
            raise CacheFormatError(f"{target} is not a polyarch build cache (an index)")
        return document

    def blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        return self.client.get_blob(self.ref, descriptor)

    def has_blob(self, descriptor: Descriptor) -> bool:
        return self.client.blob_size(self.ref, descriptor.digest) == descriptor.size

    def put_blob(self, descriptor: Descriptor, chunks: Callable[[], Iterable[bytes]]) -> None:
        self.client.upload_blob(self.ref, descriptor, chunks, source_verifies=True)

    def put_manifest(self, tag: str, manifest: Manifest) -> None:
        self.client.put_manifest(self.ref.with_tag(tag), manifest.raw, manifest.media_type)


class LayoutCacheStore:
    def __init__(self, path: Path, *, create: bool) -> None:
        self.layout = OciLayout(path, create=create)
        self.location = f"local:{path.resolve()}"

    def tags(self) -> list[str]:
        return sorted(self.layout.refs())

    def manifest(self, tag: str) -> Manifest | None:
        try:
            descriptor = self.layout.resolve(tag)
        except PolyarchError:
            return None
        document = parse_document(self.layout.read_document(descriptor), descriptor.media_type)
        if not isinstance(document, Manifest):
            raise CacheFormatError(f"{tag} is not a polyarch build cache (an index)")
        return document

    def blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        return self.layout.blobs.iter_blob(descriptor.digest, descriptor.size)

    def has_blob(self, descriptor: Descriptor) -> bool:
        return self.layout.blobs.has(descriptor.digest, descriptor.size)

    def put_blob(self, descriptor: Descriptor, chunks: Callable[[], Iterable[bytes]]) -> None:
        if not self.layout.blobs.has(descriptor.digest, descriptor.size):
            self.layout.blobs.ingest(chunks(), descriptor.digest, descriptor.size)

    def put_manifest(self, tag: str, manifest: Manifest) -> None:
        self.layout.write_document(manifest.raw)
        self.layout.set_ref(tag, manifest.descriptor())


def open_store(spec: CacheSpec, client: RegistryClient, *, create: bool) -> tuple[CacheStore, str]:
    """The store a spec names, and the tag its entries go under."""
    if spec.kind == "local":
        return LayoutCacheStore(Path(spec.where), create=create), spec.tag
    ref = Reference.parse(spec.where)
    if ref.digest is not None:
        raise CacheFormatError(f"a cache reference names a tag, not a digest: {spec.where}")
    return RegistryCacheStore(client, ref), ref.tag or "latest"


def read_records(store: CacheStore, tag: str, where: str) -> list[CacheRecord]:
    """The entries under `tag` (none when it does not exist)."""
    manifest = store.manifest(tag)
    if manifest is None:
        return []
    check_artifact(manifest, where)
    if manifest.config.size > MAX_CONFIG:
        raise CacheFormatError(f"{where}: the cache's config is over {MAX_CONFIG} bytes")
    raw = b"".join(store.blob(manifest.config))  # checked against its digest on the way
    return decode_config(raw, where)


# import --------------------------------------------------------------------------------------


class ImportedCache:
    """The entries of every `--cache-from`, as a cache the solver asks after the local one;
    layers fetched when needed, verified, then kept in the local store."""

    def __init__(
        self,
        blobs: ContentStore,
        *,
        warn: Callable[[str], None] = lambda _text: None,
        record_local: Callable[[str, CachedLayer, str], None] | None = None,
    ) -> None:
        self.blobs = blobs
        self.warn = warn
        self.record_local = record_local
        self._records: dict[str, tuple[CacheRecord, CacheStore, str]] = {}
        self._by_layer: dict[Digest, list[str]] = {}
        self._bad: set[Digest] = set()
        self._lock = threading.Lock()
        self._fetching: dict[Digest, threading.Lock] = {}

    def add(self, store: CacheStore, tag: str, where: str) -> int:
        """Read one cache (its main tag and every writer's tag); returns the entries found."""
        found: list[CacheRecord] = []
        tags = [tag] + [t for t in store.tags() if is_writer_tag(t, tag)]
        for name in tags:
            try:
                found.extend(read_records(store, name, f"{where} ({name})"))
            except (CacheFormatError, RegistryError) as exc:
                self.warn(f"cache {where}: {name} skipped: {exc}")
        with self._lock:
            for record in merge(found):
                if record.key not in self._records:
                    self._records[record.key] = (record, store, where)
                    if record.layer is not None:
                        self._by_layer.setdefault(record.layer.digest, []).append(record.key)
        return len(found)

    def __len__(self) -> int:
        return len(self._records)

    def layers(self) -> int:
        """How many distinct layers the imported entries name."""
        with self._lock:
            return len(self._by_layer)

    def get(self, key: str) -> CachedLayer | None:
        with self._lock:
            entry = self._records.get(key)
        if entry is None:
            return None
        record, store, where = entry
        if record.layer is not None and record.layer.digest in self._bad:
            return None
        return CachedLayer(
            record.layer.digest if record.layer else None, record.size, record.diff_id,
            record.layer.media_type if record.layer else "", record.created, origin=where,
            source=store.location,
        )  # fmt: skip

    def put(self, key: str, layer: CachedLayer, description: str) -> None:
        pass  # new steps go to the local cache only

    def has(self, digest: Digest) -> bool:
        with self._lock:
            return digest in self._by_layer and digest not in self._bad

    def is_bad(self, digest: Digest) -> bool:
        with self._lock:
            return digest in self._bad

    def fetch(self, digest: Digest) -> None:
        """The layer into the local store (once, whoever asks first), verified; a layer whose
        bytes do not match is a `BadCacheBlob` and its entries are dropped."""
        with self._lock:
            keys = self._by_layer.get(digest)
            if not keys or digest in self._bad:
                raise BadCacheBlob(digest, "not in any imported cache")
            turn = self._fetching.setdefault(digest, threading.Lock())
            record, store, where = self._records[keys[0]]
        assert record.layer is not None
        with turn:
            if self.blobs.has(digest, record.size):
                return
            try:
                self.blobs.ingest(store.blob(record.layer), digest, record.size)
            except (PolyarchError, OSError) as exc:
                with self._lock:
                    self._bad.add(digest)
                self.warn(f"cache {where}: layer {digest} ignored: {exc}")
                raise BadCacheBlob(digest, str(exc)) from None
        if self.record_local is not None:
            with self._lock:
                records = [self._records[k][0] for k in self._by_layer.get(digest, [])]
            for rec in records:
                self.record_local(rec.key, CachedLayer(digest, rec.size, rec.diff_id,
                                                       rec.layer.media_type if rec.layer else "",
                                                       rec.created), rec.description)  # fmt: skip


class LazyLayers:
    """Layers the local cache names with a `source` (steps an earlier build took from an
    imported cache): fetched from that cache when a build needs them, verified; one whose
    cache cannot give it is `BadCacheBlob`, and the build solves again running the step."""

    def __init__(self, blobs: ContentStore, client: RegistryClient) -> None:
        self.blobs, self.client = blobs, client
        self._wanted: dict[Digest, tuple[str, int, str]] = {}
        self._bad: set[Digest] = set()
        self._lock = threading.Lock()

    def note(self, digest: Digest, size: int, media_type: str, source: str) -> bool:
        """Remember where a missing layer can come from; False when it cannot."""
        with self._lock:
            if not source or digest in self._bad:
                return False
            self._wanted[digest] = (source, size, media_type)
        return True

    def has(self, digest: Digest) -> bool:
        with self._lock:
            return digest in self._wanted and digest not in self._bad

    def noted(self) -> int:
        with self._lock:
            return len(self._wanted)

    def fetch(self, digest: Digest) -> None:
        with self._lock:
            source, size, media_type = self._wanted[digest]
        if self.blobs.has(digest, size):
            return
        kind, _, where = source.partition(":")
        try:
            store: CacheStore = (RegistryCacheStore(self.client, Reference.parse(where))
                                 if kind == "registry"
                                 else LayoutCacheStore(Path(where), create=False))  # fmt: skip
            self.blobs.ingest(store.blob(Descriptor(media_type, digest, size)), digest, size)
        except (PolyarchError, OSError) as exc:
            with self._lock:
                self._bad.add(digest)
            raise BadCacheBlob(digest, f"from {where}: {exc}") from None


class LayerSource(Protocol):
    """Layers fetched only when a build needs them (base images' layers)."""

    def has(self, digest: Digest) -> bool: ...

    def fetch(self, digest: Digest) -> None: ...


class Remotes:
    """Where a layer the store lacks can come from: this build's imported caches, then the
    caches earlier builds took steps from, then the base images' registries."""

    def __init__(
        self, imported: ImportedCache | None, lazy: LazyLayers, bases: LayerSource | None = None
    ) -> None:
        self.imported, self.lazy, self.bases = imported, lazy, bases

    def has(self, digest: Digest) -> bool:
        return ((self.imported is not None and self.imported.has(digest))
                or self.lazy.has(digest)
                or (self.bases is not None and self.bases.has(digest)))  # fmt: skip

    def note(self, digest: Digest, size: int, media_type: str, source: str) -> bool:
        if self.imported is not None and self.imported.is_bad(digest):
            return False  # this build found it unusable already
        return self.lazy.note(digest, size, media_type, source)

    def fetch(self, digest: Digest) -> None:
        if self.imported is not None and self.imported.has(digest):
            self.imported.fetch(digest)
        elif self.lazy.has(digest):
            self.lazy.fetch(digest)
        elif self.bases is not None and self.bases.has(digest):
            self.bases.fetch(digest)


class ChainedCache:
    """The local step cache first, then the imported ones."""

    def __init__(self, local: CacheBackendLike, imported: ImportedCache) -> None:
        self.local, self.imported = local, imported

    def get(self, key: str) -> CachedLayer | None:
        return self.local.get(key) or self.imported.get(key)

    def put(self, key: str, layer: CachedLayer, description: str) -> None:
        self.local.put(key, layer, description)


class CacheBackendLike(Protocol):
    def get(self, key: str) -> CachedLayer | None: ...

    def put(self, key: str, layer: CachedLayer, description: str) -> None: ...


# export --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportReport:
    where: str
    tag: str
    entries: int  # in this writer's tag after the merge
    total: int  # in the main tag
    uploaded: int  # layers sent


def export_cache(
    store: CacheStore,
    tag: str,
    records: Sequence[CacheRecord],
    blobs: ContentStore,
    spec: CacheSpec,
    *,
    platforms: Sequence[str],
    target: str,
    now: float | None = None,
) -> ExportReport:
    """This build's entries merged into its writer's tag, then every writer's merged into
    the main tag. Layers are sent once (a registry that has one already is not sent it)."""
    stamp = time.time() if now is None else now
    own = writer_tag(tag, platforms, target)
    where = str(spec)
    previous: list[CacheRecord] = []
    with contextlib.suppress(CacheFormatError):
        previous = read_records(store, own, where)
    mine = limit(merge(previous, records), now=stamp, max_age=spec.max_age,
                 max_size=spec.max_size)  # fmt: skip
    uploaded = 0
    exportable = []
    for record in mine:
        layer = record.layer
        if layer is not None and blobs.has(layer.digest, layer.size):
            store.put_blob(layer, _chunks(blobs, layer))
            uploaded += 1
        elif layer is not None and not store.has_blob(layer):
            continue  # an imported hit never fetched here, and not in this store: left out
        exportable.append(record)
    mine = exportable
    _publish(store, own, mine)
    # The main tag: every writer's entries (a later writer's export refreshes it again).
    everything = [mine]
    for name in store.tags():
        if is_writer_tag(name, tag) and name != own:
            with contextlib.suppress(CacheFormatError, RegistryError):
                everything.append(read_records(store, name, where))
    merged = limit(merge(*everything), now=stamp, max_age=spec.max_age)
    _publish(store, tag, merged)
    return ExportReport(where, own, len(mine), len(merged), uploaded)


def _chunks(blobs: ContentStore, layer: Descriptor) -> Callable[[], Iterable[bytes]]:
    return lambda: blobs.iter_blob(layer.digest, layer.size)


def _publish(store: CacheStore, tag: str, records: Sequence[CacheRecord]) -> None:
    raw = encode_config(records)
    config = Descriptor(CONFIG_TYPE, Digest.of(raw), len(raw))
    store.put_blob(config, lambda: [raw])
    store.put_manifest(tag, artifact(config, records))


def records_for(
    keys: Iterable[str], entries: Iterable[tuple[str, CachedLayer, float, str]], now: float
) -> list[CacheRecord]:
    """Cache records for the step keys of a build, from the local cache's entries."""
    wanted = set(keys)
    out = []
    for key, layer, _used, description in entries:
        if key not in wanted:
            continue
        descriptor = (Descriptor(layer.media_type, layer.digest, layer.size)
                      if layer.digest is not None else None)  # fmt: skip
        out.append(CacheRecord(key, descriptor, layer.diff_id, layer.created, description, now))
    return out
