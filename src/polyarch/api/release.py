"""Releasing: build, verify each platform by running it, then move the tag; and verifying or
pinning an image on its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.api.building import (
    BuildOptions,
    BuildReport,
    build_image,
    default_attestations,
    pushed_attestations,
)
from polyarch.api.local import default_root, local_images, machine_platform
from polyarch.api.session import Session
from polyarch.errors import NotFoundError, PolyarchError
from polyarch.platform import Platform
from polyarch.progress import Progress
from polyarch.reference import Reference
from polyarch.store.layout import OciLayout
from polyarch.transfer.location import LayoutLocation

if TYPE_CHECKING:
    from polyarch.api.signing import SigningKey
    from polyarch.verify import RunSpec, VerifyReport


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """`release`: the build, what was pushed by digest, the verification, and the tags moved
    (none when a check failed: the tags were left as they were)."""

    build: BuildReport
    pinned: str
    verify: VerifyReport
    released: tuple[tuple[str, str], ...] = ()  # (tag, digest)
    attached: tuple[tuple[str, str], ...] = ()  # (platform, verification summary's digest)
    signed: tuple[str, ...] = ()  # what was signed ("image sha256:...", per platform)

    @property
    def ok(self) -> bool:
        return self.verify.ok


def release(
    session: Session,
    options: BuildOptions,
    run: RunSpec | None,
    *,
    progress: Progress | None = None,
    note: Callable[[str], None] = lambda _line: None,
    arch_check: bool = True,
    signing: SigningKey | None = None,
) -> ReleaseResult:
    """Build, push by digest, verify every platform (its result attached to each platform's
    image), sign it when given a key, and only then move the tags."""
    from polyarch.api.attesting import attach_verification, verify_policy  # noqa: PLC0415

    built = build_image(
        session,
        dataclasses.replace(options, outputs=(), attest=pushed_attestations(options.attest)),
        progress=progress,
    )
    pinned = [push_pinned(session, name, options.root) for name in built.names]
    report = verify_image(session, pinned[0], platforms=options.platforms, run=run,
                          root=options.root, note=note, arch_check=arch_check)  # fmt: skip
    attached: list[tuple[str, str]] = []
    if default_attestations():  # the proof is kept, passed or failed, on the digest
        attached = attach_verification(session, pinned[0], report,
                                       verify_policy(run, arch_check))  # fmt: skip
    if not report.ok:
        return ReleaseResult(built, pinned[0], report, attached=tuple(attached))
    signed: list[str] = []
    if signing is not None:
        for name in pinned:
            signed += [f"{what} {digest}" for what, digest in signing.sign(session, name)]
    moved = tuple((name, move_tag(session, name, options.root)) for name in built.names)
    return ReleaseResult(built, pinned[0], report, moved, tuple(attached), tuple(signed))


def push_pinned(session: Session, name: str, root: Path | None = None) -> str:
    """Push the locally kept image `name` by digest only: every blob, manifest and the index
    reach the registry, and no tag moves. Returns `REPOSITORY@DIGEST`."""
    store = (root or default_root()) / "store"
    ref = Reference.parse(name)
    descriptor = OciLayout(store).resolve(str(ref))
    pinned = f"{ref.name}@{descriptor.digest}"
    session.copy(LayoutLocation(str(store), str(ref)), pinned)
    return pinned


def move_tag(session: Session, name: str, root: Path | None = None) -> str:
    """Point the registry tag `name` at the locally kept image of that name, already pushed by
    digest (one small PUT of the top document's exact bytes). Returns its digest."""
    layout = OciLayout((root or default_root()) / "store")
    ref = Reference.parse(name)
    descriptor = layout.resolve(str(ref))
    session.client.put_manifest(ref, layout.read_document(descriptor), descriptor.media_type)
    return str(descriptor.digest)


def verify_image(
    session: Session,
    location: str,
    *,
    platforms: Sequence[Platform] = (),
    run: RunSpec | None = None,
    root: Path | None = None,
    jobs: int = 4,
    note: Callable[[str], None] = lambda _line: None,
    arch_check: bool = True,
) -> VerifyReport:
    """Check every platform of a pushed image (see polyarch.verify), and run each one."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415 (the engine when needed)
    from polyarch.verify import Verifier  # noqa: PLC0415
    from polyarch.worker.local.worker import BuildSession, LocalWorker  # noqa: PLC0415

    workspace = Workspace(root or default_root())
    machine = machine_platform()
    worker = LocalWorker(workspace, BuildSession(), machine, on_note=note)
    with workspace.exclusive():  # what clean removes is not under a running image
        verifier = Verifier(session.source(location), worker, machine, note=note,
                            arch_check=arch_check)  # fmt: skip
        try:
            return verifier.verify(platforms, run, jobs=jobs)
        except NotFoundError as exc:
            local = _kept_locally(location, root or default_root())
            if local is None:
                raise
            raise NotFoundError(f"{exc.message}; {local} exists only in the local store: push "
                                f"it with `polyarch push {local}` first", status=exc.status,
                                code=exc.code, reference=exc.reference) from None  # fmt: skip


def _kept_locally(location: str, root: Path) -> str | None:
    """The local store's name for `location`, when it keeps an image by that name."""
    try:
        wanted = str(Reference.parse(location))
    except PolyarchError:
        return None
    for image in local_images(root):
        try:
            if str(Reference.parse(image.name)) == wanted:
                return image.name
        except PolyarchError:
            continue  # a digest, or a name that is not a reference
    return None
