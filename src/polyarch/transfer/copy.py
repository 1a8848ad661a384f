"""Moving images between sources and targets: `copy_image` and `create_index`.

Order matters for safety: every blob first (in parallel, each skipped when the target has it,
mounted across repositories of one registry when it can be), then child manifests by digest,
and the name (tag) last, so a transfer that fails half way never leaves a name pointing at an
incomplete image: the target's existing tags stay as they were.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from polyarch.concurrency import task_pool, wait_all
from polyarch.digest import Digest
from polyarch.errors import ManifestError, UsageError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Document, ImageConfig, Index, Manifest
from polyarch.platform import Platform
from polyarch.transfer.endpoints import (
    ImageSource,
    ImageTarget,
    is_distributable,
    read_small_blob,
)

TransferProgress = Callable[[str, Descriptor, str], None]
"""Called as (event, descriptor, detail) with event in {"blob", "manifest", "named"}."""


@dataclass
class TransferReport:
    digest: Digest | None = None
    media_type: str | None = None
    name: str | None = None
    platforms: list[str] = field(default_factory=list)
    uploaded: int = 0
    mounted: int = 0
    existing: int = 0
    bytes_uploaded: int = 0
    manifests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, result: str, size: int) -> None:
        with self._lock:
            if result == "uploaded":
                self.uploaded += 1
                self.bytes_uploaded += size
            elif result == "mounted":
                self.mounted += 1
            else:
                self.existing += 1


def select_platforms(index: Index, platforms: Sequence[Platform], where: str) -> Index:
    """The index reduced to the best entry for each wanted platform (and their attestations).

    The original index (same bytes, same digest) when nothing is left out.
    """
    chosen: list[Descriptor] = []
    for want in platforms:
        found = index.image_for(want)
        if found is None:
            raise UsageError(f"{where} has no image for {want} (it has: {index.platforms_text()})")
        if found not in chosen:
            chosen.append(found)
    kept = {d.digest for d in chosen}
    attestations = [
        d
        for d in index.manifests
        if d.is_attestation
        and d.annotations.get(mt.ANNOTATION_REFERENCE_DIGEST) in {str(k) for k in kept}
    ]
    entries = [d for d in index.manifests if d in chosen or d in attestations]
    if len(entries) == len(index.manifests):
        return index
    return Index.create(entries, media_type=index.media_type, annotations=index.annotations)


def copy_image(
    source: ImageSource,
    target: ImageTarget,
    *,
    platforms: Sequence[Platform] = (),
    jobs: int = 8,
    progress: TransferProgress | None = None,
) -> TransferReport:
    """Copy the image `source` names to `target` (all platforms of an index by default)."""
    top = source.resolve().document
    if isinstance(top, Index) and platforms:
        top = select_platforms(top, platforms, str(source))
    elif isinstance(top, Manifest) and platforms:
        config = ImageConfig.parse(read_small_blob(source, top.config))
        if not any(p.matches(config.platform) for p in platforms):
            raise UsageError(
                f"{source} is a single image for {config.platform}, not "
                + ", ".join(str(p) for p in platforms)
            )
    report = TransferReport()
    transfer_content(source, top, target, report, jobs=jobs, progress=progress)
    report.name = target.put_named(top)
    report.digest = top.digest
    report.media_type = top.media_type
    if isinstance(top, Index):
        report.platforms = [str(d.platform) for d in top.images() if d.platform]
    if progress:
        progress("named", top.descriptor(), report.name)
    return report


def transfer_content(
    source: ImageSource,
    top: Document,
    target: ImageTarget,
    report: TransferReport,
    *,
    jobs: int = 8,
    progress: TransferProgress | None = None,
) -> None:
    """Everything `top` refers to, into `target`: blobs, then child documents (not `top` itself).

    Blobs start moving as soon as the manifest that names them has been read, while the walk
    goes on; each digest moves once, however many manifests share it.
    """
    documents: list[Document] = []
    seen: set[Digest] = set()
    futures: list[Future[None]] = []

    def move(descriptor: Descriptor) -> None:
        result = target.put_blob(descriptor, source)
        report.count(result, descriptor.size)
        if progress:
            progress("blob", descriptor, result)

    with task_pool(jobs) as pool:  # Ctrl-C or a failure: a transfer under way is not waited for

        def discovered(blob: Descriptor) -> None:
            if blob.digest not in seen and is_distributable(blob):
                seen.add(blob.digest)
                futures.append(pool.submit(move, blob))

        _walk(source, top, documents, discovered, depth=0)
        wait_all(futures)
    for document in documents:
        if document is top:
            continue
        target.put_document(document)
        report.manifests += 1
        if progress:
            progress("manifest", document.descriptor(), "")


def _walk(
    source: ImageSource,
    document: Document,
    documents: list[Document],
    discovered: Callable[[Descriptor], None],
    depth: int,
) -> None:
    if depth > 4:
        raise ManifestError("indexes nested more than 4 deep; refusing")
    if isinstance(document, Manifest):
        for blob in document.blobs():
            discovered(blob)
    else:
        for entry in document.manifests:
            if entry.media_type not in mt.DOCUMENT_TYPES:
                raise ManifestError(
                    f"index entry {entry.digest} has media type {entry.media_type!r}, "
                    "which is not a manifest or index"
                )
            child = source.fetch_document(entry)
            _walk(source, child, documents, discovered, depth + 1)
    documents.append(document)


def create_index(
    sources: Sequence[ImageSource],
    target: ImageTarget,
    *,
    annotations: dict[str, str] | None = None,
    jobs: int = 8,
    progress: TransferProgress | None = None,
) -> TransferReport:
    """One index from single-platform images (and the entries of indexes), pushed to `target`.

    The platform of each image comes from its config. Two entries for one platform are an
    error: a client could not tell which to run.
    """
    if not sources:
        raise UsageError("index create needs at least one source image")
    entries: list[Descriptor] = []
    report = TransferReport()
    for source in sources:
        fetched = source.resolve()
        document = fetched.document
        if isinstance(document, Manifest):
            config = ImageConfig.parse(read_small_blob(source, document.config))
            entries.append(document.descriptor(config.platform))
        else:
            entries.extend(document.manifests)
        transfer_content(source, document, target, report, jobs=jobs, progress=progress)
        target.put_document(document)
        report.manifests += 1
    seen: dict[Platform, Descriptor] = {}
    for entry in entries:
        if entry.is_attestation or entry.platform is None:
            continue
        other = seen.get(entry.platform)
        if other is not None and other.digest != entry.digest:
            raise UsageError(
                f"two images for {entry.platform}: {other.digest} and {entry.digest}; "
                "an index may hold one image per platform"
            )
        seen[entry.platform] = entry
    unique: list[Descriptor] = []
    for entry in entries:
        if all(entry.digest != u.digest for u in unique):
            unique.append(entry)
    # Attestation manifests after every image, as BuildKit lists them.
    unique = [e for e in unique if not e.is_attestation] + [e for e in unique if e.is_attestation]
    docker_only = all(e.media_type in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST) for e in unique)
    index = Index.create(
        unique,
        media_type=mt.DOCKER_MANIFEST_LIST if docker_only else mt.OCI_INDEX,
        annotations=annotations,
    )
    report.name = target.put_named(index)
    report.digest = index.digest
    report.media_type = index.media_type
    report.platforms = [str(d.platform) for d in index.images() if d.platform]
    if progress:
        progress("named", index.descriptor(), report.name)
    return report
