"""This machine and its workspace: the default root, the images kept locally, cleaning and
pruning, disk usage, the version from git, and comparing images."""

from __future__ import annotations

import os
import platform as _host
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from polyarch.api.session import Session
from polyarch.errors import UsageError
from polyarch.oci.models import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    parse_document,
)
from polyarch.platform import Platform, from_uname
from polyarch.store.layout import OciLayout
from polyarch.transfer.endpoints import (
    ImageSource,
)
from polyarch.version import version

if TYPE_CHECKING:
    from polyarch.attest.provenance import Vcs
    from polyarch.layers.compare import ImageDiff
    from polyarch.worker.local.gc import PruneReport, Usage


def default_root() -> Path:
    """Where polyarch keeps its store, cache and snapshots: `POLYARCH_ROOT`, else the
    platform's data directory (as root: /var/lib/polyarch)."""
    if os.environ.get("POLYARCH_ROOT"):
        return Path(os.environ["POLYARCH_ROOT"])
    from polyarch.runtime.userns import rootless  # noqa: PLC0415

    if os.geteuid() == 0 and not rootless():
        return Path("/var/lib/polyarch")
    return Path(platformdirs.user_data_dir("polyarch"))  # an ordinary user's, rootless too


@dataclass(frozen=True, slots=True)
class LocalImage:
    name: str
    descriptor: Descriptor
    platforms: tuple[str, ...]
    size: int


def local_images(root: Path) -> list[LocalImage]:
    """Images kept in the local store, by name."""
    layout = OciLayout(root / "store")
    out: list[LocalImage] = []
    for name, entry in sorted(layout.refs().items()):
        document = parse_document(layout.read_document(entry), entry.media_type)
        if isinstance(document, Index):
            platforms = tuple(str(d.platform) for d in document.images() if d.platform)
            size = 0
            for child in document.images():
                sub = parse_document(layout.read_document(child), child.media_type)
                if isinstance(sub, Manifest):
                    size += sum(b.size for b in sub.blobs())
        else:
            config = ImageConfig.parse(layout.blobs.read_bytes(document.config.digest))
            platforms = (str(config.platform),)
            size = sum(b.size for b in document.blobs())
        out.append(LocalImage(name, entry, platforms, size))
    return out


def git_version(directory: Path, base_version: str) -> str:
    """The seed's version of the git work tree at `directory` (see polyarch.version)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise UsageError("git is not installed") from None
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
            if "not a git repository" in done.stderr:
                raise UsageError(f"{directory} is not in a git repository") from None
            raise UsageError(f"git {' '.join(args)} failed: {message}")
        return done.stdout

    head = git("rev-parse", "HEAD").strip()
    tags = git("tag", "--contains", head).splitlines()
    dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    return version(tags, head, base_version, dirty=dirty)


def git_vcs(context: Path, dockerfile: Path) -> Vcs | None:
    """The git checkout a local context is in, as buildx records it for provenance
    (`vcs:source` the remote's URL, `vcs:revision` the commit with `-dirty` when the work tree
    has changes, the context's and the Dockerfile's directories in it); None outside one."""
    from polyarch.attest.provenance import Vcs  # noqa: PLC0415

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(context), *args], capture_output=True,
                                  text=True, check=False, timeout=30)  # fmt: skip
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    head = git("rev-parse", "--verify", "-q", "HEAD") if root else None
    if not root or not head:
        return None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    remote = git("remote", "get-url", "origin") or ""
    top = Path(root).resolve()

    def inside(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(top)) or "."
        except ValueError:
            return ""

    return Vcs(remote, head + ("-dirty" if dirty else ""), inside(context) or ".",
               inside(dockerfile.parent) or ".")  # fmt: skip


def machine_platform() -> Platform:
    """The platform of the machine polyarch runs on."""
    return from_uname(_host.system(), _host.machine())


def clean_images(repository: str, root: Path | None = None) -> PruneReport:
    """Remove the local images `repository` names (`NAME`: every tag; `NAME:TAG`,
    `NAME@DIGEST`, or `sha256:X` for an untagged one: only that), the cache entries only they
    used, and every blob and snapshot nothing else needs."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415
    from polyarch.worker.local.gc import remove_images  # noqa: PLC0415

    return remove_images(Workspace(root or default_root()), repository)


def workspace_usage(root: Path | None = None) -> list[Usage]:
    """What the workspace holds (`polyarch du`)."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415
    from polyarch.worker.local.gc import disk_usage  # noqa: PLC0415

    return disk_usage(Workspace(root or default_root()))


def prune_workspace(
    root: Path | None = None,
    *,
    cache_mounts: bool = False,
    keep_storage: int | None = None,
    older_than: float | None = None,
) -> PruneReport:
    """Free the workspace (`polyarch prune`): build steps, the untagged images of earlier
    builds, and cache mounts when asked; the tagged images stay."""
    from polyarch.store.workspace import Workspace  # noqa: PLC0415
    from polyarch.worker.local.gc import prune  # noqa: PLC0415

    return prune(Workspace(root or default_root()), cache_mounts=cache_mounts,
                 keep_storage=keep_storage, older_than=older_than)  # fmt: skip


def diff_images(
    session: Session,
    names: Sequence[str],
    platforms: Sequence[Platform] = (),
    root: Path | None = None,
) -> list[ImageDiff]:
    """Compare two images (or two platforms of one): see `polyarch.diff`. A name is looked up
    in the local store first (`polyarch images`), then as an OCI layout or registry
    reference."""
    from polyarch.diff import diff, local_source  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    workspace = Workspace(root or default_root())
    sources: list[ImageSource] = []
    for name in names:
        local = None if name.startswith("oci:") else local_source(workspace.layout, name)
        sources.append(local if local is not None else session.source(name))
    return diff(sources, platforms, workspace.layout.blobs, names)
