"""Writing a build's outputs from the store: pushing to registries, OCI and docker archives,
loading into an engine, the final stage's files as a directory or a tar; each a row of the
build's progress (bytes of the image's blobs done)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyarch.errors import UsageError
from polyarch.export import docker_archive, engine, rootfs
from polyarch.export.outputs import DockerOutput, LocalOutput, OciOutput, RegistryOutput
from polyarch.export.outputs import Output as OutputSpec
from polyarch.export.recompress import recompressed
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest, parse_document
from polyarch.progress import Event, Progress, silent
from polyarch.reference import Reference
from polyarch.registry.client import RegistryClient
from polyarch.store.layout import OciLayout
from polyarch.transfer.copy import copy_image
from polyarch.transfer.endpoints import (
    ImageTarget,
    RegistryRepository,
    StoreSource,
    StoreThenRegistry,
)
from polyarch.transfer.location import LayoutLocation, Location

if TYPE_CHECKING:
    from polyarch.build import BuildResult


@dataclass(frozen=True, slots=True)
class Output:
    """An output written: `kind` registry (pushed to `name`), oci, docker (archives, or a
    directory: `name` is where, "-" for stdout), load (`name`: what the engine said), local
    or tar (the final stage's files)."""

    kind: str
    name: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Attested:
    """How a build's attestations reach its outputs: the files a local or tar output gets
    beside each platform's (kind -> file name), and the image given its attestations again
    (for manifests an output's compression makes anew)."""

    files: Mapping[str, str] = field(default_factory=dict)
    again: Callable[[Descriptor], Descriptor] | None = None


@dataclass(frozen=True, slots=True)
class Place:
    """Where a build's outputs go from: its store and scratch directory, and how to reach an
    image target (a registry or a layout) and a registry."""

    layout: OciLayout
    tmp: Path
    target: Callable[[Location | str], ImageTarget]
    client: RegistryClient


def write_output(
    output: OutputSpec,
    place: Place,
    result: BuildResult,
    refs: Sequence[Reference],
    *,
    from_nodes: bool = False,
    epoch: int | None = None,
    progress: Progress = silent,
    attested: Attested | None = None,
) -> Output:
    """One output of a build, from the store (its layers recompressed first when it asks).
    `from_nodes`: the nodes pushed their platforms already (only the index goes from here).
    `attested`: how the build's attestations reach the outputs."""
    layout = place.layout
    top = _compressed(output, layout, result, attested, progress)
    attestation_files = attested.files if attested else None
    rows = _pushed_manifests(layout, top)
    tags = [str(r) for r in refs]
    if isinstance(output, RegistryOutput) and output.referrers:
        return _push_with_referrers(output, place, top, refs, progress)
    if isinstance(output, RegistryOutput):
        pushed: list[str] = []
        for target in registry_targets(output, refs):
            pinned = Reference(target.registry, target.repository, None, top.digest)
            destination = pinned if output.push_by_digest else target
            with TransferRow(progress, f"push {destination}", layout, rows) as row:
                if from_nodes:  # the nodes' platforms are in the repository already
                    there = RegistryRepository(place.client, target)
                    merged = StoreThenRegistry(layout, top, there)
                    report = copy_image(merged, place.target(str(destination)),
                                        progress=row.blob)  # fmt: skip
                else:
                    report = copy_image(StoreSource(layout, top),
                                        place.target(str(destination)),
                                        progress=row.blob)  # fmt: skip
                row.summary = (f"{report.uploaded} uploaded, {report.mounted} mounted, "
                               f"{report.existing} already there")  # fmt: skip
            pushed.append(str(report.name))
        return Output("registry", ",".join(pushed), str(top.digest))
    if isinstance(output, OciOutput):
        name = output.name or (refs[0].tag if refs and refs[0].tag else "latest")
        with TransferRow(progress, f"export to {output.dest}", layout, rows) as row:
            if not output.tar:
                report = copy_image(StoreSource(layout, top),
                                    place.target(LayoutLocation(output.dest, name)),
                                    progress=row.blob)  # fmt: skip
            else:
                full = [output.name] if output.name else tags[:1]
                _to_dest(output.dest, lambda out: docker_archive.write_oci_archive(
                    layout, top, full, out))  # fmt: skip
        return Output("oci", output.dest, str(top.digest))
    if isinstance(output, DockerOutput):
        named = [output.name] if output.name else tags
        if output.load:
            with TransferRow(progress, "load into the local engine", layout, rows) as row:
                row.summary = engine.load_image(layout, top, named)
            return Output("load", row.summary, str(top.digest))
        with TransferRow(progress, f"write docker archive {output.dest}", layout, rows):
            _to_dest(output.dest, lambda out: docker_archive.write_docker_archive(
                layout, top, named, out))  # fmt: skip
        return Output("docker", output.dest, str(top.digest))
    if isinstance(output, LocalOutput):
        with TransferRow(progress, f"copy files to {output.dest}", layout, ()):
            rootfs.write_local(layout, top, Path(output.dest), output.platform_split,
                               attestation_files)  # fmt: skip
        return Output("local", output.dest, str(top.digest))
    with TransferRow(progress, f"write files as tar {output.dest}", layout, ()):
        _to_dest(output.dest, lambda out: rootfs.write_tar(
            layout, top, out, output.platform_split, epoch, place.tmp,
            attestation_files))  # fmt: skip
    return Output("tar", output.dest, str(top.digest))


def registry_targets(output: RegistryOutput, refs: Sequence[Reference]) -> list[Reference]:
    """Where a registry output pushes: its `name=` (comma separated), else the tags."""
    if output.names:
        return [Reference.parse(n) for n in output.names]
    return list(refs)


def _to_dest(dest: str, write: Callable[[Any], None]) -> None:
    """`write` into the file `dest` (written whole or not at all), or stdout for "-"."""
    if dest == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    path = Path(dest)
    if path.is_dir():
        raise UsageError(f"--output: dest={dest} is a directory; name the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as out:
            write(out)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


class TransferRow:
    """A push or an export as a row of the build's progress: bytes of the image's blobs done of
    the total (each blob counted when it is at the target: copied, mounted or already there)."""

    def __init__(
        self,
        progress: Progress,
        description: str,
        layout: OciLayout,
        manifests: Iterable[Descriptor],
    ) -> None:

        self.progress, self.description = progress, description
        self.total, self.done = sum(image_blobs(layout, manifests).values()), 0
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.summary = ""

    def __enter__(self) -> TransferRow:
        self.progress(Event("start", "", self.description))
        return self

    def blob(self, event: str, descriptor: Descriptor, _detail: str) -> None:
        if event != "blob":
            return
        with self.lock:
            self.done += descriptor.size
            done = self.done
        self.progress(Event("progress", "", self.description, current=done, total=self.total))

    def __exit__(self, kind: object, exc: object, _tb: object) -> None:
        if exc is None:
            self.progress(Event("done", "", self.description, text=self.summary,
                                seconds=time.monotonic() - self.started))  # fmt: skip
        else:
            self.progress(Event("error", "", self.description, text=str(exc)))


def _compressed(
    output: OutputSpec,
    layout: OciLayout,
    result: BuildResult,
    attested: Attested | None,
    progress: Progress,
) -> Descriptor:
    """The image as the output wants its layers compressed (new manifests get their
    attestations made again)."""
    top = result.descriptor
    compression = getattr(output, "compression", None)
    if compression is None or compression.is_default:
        return top
    with TransferRow(progress, f"compress layers ({compression.kind})", layout, ()):
        if attested is None or attested.again is None:
            return recompressed(layout, top, compression, result.base_layers)
        from polyarch.attest.store import without_attestations  # noqa: PLC0415

        plain, _attached = without_attestations(layout, top)
        changed = recompressed(layout, plain, compression, result.base_layers)
        return top if changed == plain else attested.again(changed)


def _pushed_manifests(layout: OciLayout, top: Descriptor) -> list[Descriptor]:
    """The manifests whose blobs an output of `top` carries: the images', and the
    attestation manifests' an index lists beside them."""
    if top.media_type not in mt.INDEX_TYPES:
        return [top]
    document = parse_document(layout.read_document(top), top.media_type)
    return list(document.manifests) if isinstance(document, Index) else [top]


def _push_with_referrers(
    output: RegistryOutput,
    place: Place,
    top: Descriptor,
    refs: Sequence[Reference],
    progress: Progress,
) -> Output:
    """The image pushed without its attestations in the index (one platform: its manifest,
    several: an index of the images), each platform's attestation manifest pushed as an OCI
    1.1 referrer of its image."""
    from polyarch.attest.store import without_attestations  # noqa: PLC0415
    from polyarch.registry.referrers import push_referrer  # noqa: PLC0415

    layout = place.layout
    plain, attached = without_attestations(layout, top)
    rows = _pushed_manifests(layout, plain)
    pushed: list[str] = []
    for target in registry_targets(output, refs):
        pinned = Reference(target.registry, target.repository, None, plain.digest)
        destination = pinned if output.push_by_digest else target
        with TransferRow(progress, f"push {destination}", layout, rows) as row:
            report = copy_image(StoreSource(layout, plain), place.target(str(destination)),
                                progress=row.blob)  # fmt: skip
            for entry in attached:
                manifest = parse_document(layout.read_document(entry), entry.media_type)
                assert isinstance(manifest, Manifest)
                blobs = {b.digest: layout.blobs.read_bytes(b.digest, b.size)
                         for b in manifest.blobs()}  # fmt: skip
                push_referrer(place.client, target, manifest, blobs)
            row.summary = (f"{report.uploaded} uploaded, {report.mounted} mounted, "
                           f"{report.existing} already there; {len(attached)} attestation "
                           "manifests as referrers")  # fmt: skip
        pushed.append(str(report.name))
    return Output("registry", ",".join(pushed), str(plain.digest))


def image_blobs(layout: OciLayout, manifests: Iterable[Descriptor]) -> dict[str, int]:
    """The config and layers of these stored manifests (each blob once): digest -> size."""
    blobs: dict[str, int] = {}
    for descriptor in manifests:
        document = parse_document(layout.blobs.read_bytes(descriptor.digest, descriptor.size))
        if isinstance(document, Manifest):
            blobs.update({str(b.digest): b.size for b in document.blobs()})
    return blobs
