"""The copy-based snapshotter: for machines where overlayfs cannot be mounted.

The parent's layers are extracted (whiteouts carried out) into a plain directory, the step acts
on it, and the differences are then written into an upper directory in the form overlayfs
itself would have left (changed and new entries with their parent directories; a 0:0
character device for each removed entry, or a `.wh.` file where device nodes cannot be made).
The layer made from it gives the same file tree as with overlayfs.

A change is detected by an entry's type, mode, owners, size, modification time and *change*
time: every write, chmod or chown moves the ctime, and no program can set it back.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from polyarch.layers import apply_layer, open_layer
from polyarch.layers.compress import DiffIdReader
from polyarch.runtime.userns import rootless
from polyarch.store.blobs import ContentStore
from polyarch.worker.base import LayerRef


@dataclass(frozen=True, slots=True)
class _Seen:
    kind: int
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    ctime: int
    ino: int


def materialize(layers: list[LayerRef], blobs: ContentStore, into: Path) -> dict[str, _Seen]:
    """Extract the layers into `into`; returns what each entry looked like afterwards."""
    extract_layers(layers, blobs, into)
    return dict(_scan(into))


def extract_layers(
    layers: Sequence[LayerRef],
    blobs: ContentStore,
    into: Path,
    only: Callable[[str], bool] | None = None,
    whiteouts: Literal["delete", "overlay"] = "delete",
) -> None:
    """The layers applied in order into `into` (whiteouts carried out, or kept in overlay
    form; with `only`, those entries alone), each blob proven its digest and its content
    its diffID."""
    for layer in layers:
        with blobs.open(layer.digest, layer.size) as raw:
            tar = DiffIdReader(open_layer(raw, layer.media_type), layer.diff_id,  # type: ignore[arg-type]
                               f"layer {layer.digest}")  # fmt: skip
            apply_layer(tar, into, whiteouts=whiteouts, only=only)  # type: ignore[arg-type]
            tar.check()
            raw.verify()


def _scan(root: Path) -> Iterator[tuple[str, _Seen]]:
    stack = [""]
    while stack:
        rel = stack.pop()
        directory = root / rel if rel else root
        for name in os.listdir(directory):
            child = f"{rel}/{name}" if rel else name
            st = os.lstat(root / child)
            yield child, _Seen(
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
            )  # fmt: skip
            if stat.S_ISDIR(st.st_mode):
                stack.append(child)


def write_upper(root: Path, before: dict[str, _Seen], upper: Path) -> None:
    """Record in `upper` what changed in `root` since `before`, as overlayfs would."""
    after = dict(_scan(root))
    can_mknod = os.geteuid() == 0 and not rootless()  # whiteouts as overlay's 0:0 devices
    changed = sorted(p for p, seen in after.items() if before.get(p) != seen)
    removed = sorted(p for p in before if p not in after)
    for rel in changed:
        _ensure_parents(root, upper, rel)
        source = root / rel
        target = upper / rel
        st = os.lstat(source)
        if stat.S_ISDIR(st.st_mode):
            target.mkdir(exist_ok=True)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, target, follow_symlinks=False)
        else:
            os.mknod(target, st.st_mode, st.st_rdev)
        _copy_attrs(source, target)
    for rel in removed:
        parent, _, name = rel.rpartition("/")
        if any(rel.startswith(r + "/") for r in removed if r != rel):
            continue  # inside a removed directory: the directory's whiteout covers it
        _ensure_parents(root, upper, rel)
        where = upper / parent if parent else upper
        if can_mknod:
            os.mknod(where / name, stat.S_IFCHR, os.makedev(0, 0))
        else:
            (where / f".wh.{name}").touch()
    # Parent directories copied into upper keep the times they have in the root.
    for rel in sorted(after, key=lambda p: -p.count("/")):
        if (upper / rel).is_dir() and not (upper / rel).is_symlink():
            _copy_attrs(root / rel, upper / rel)


def _ensure_parents(root: Path, upper: Path, rel: str) -> None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        target = upper / sub
        if not target.exists():
            target.mkdir()
            if (root / sub).is_dir():
                _copy_attrs(root / sub, target)


def _copy_attrs(source: Path, target: Path) -> None:
    st = os.lstat(source)
    # Owner first: a chown clears setuid and setgid bits (rootless, even polyarch's own).
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(st.st_mode))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
