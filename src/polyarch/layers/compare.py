"""What differs between two images: config fields, layers, and the files of the filesystems
the layers make (added, removed, changed, and in what: type, mode, owner, size, content,
modification time, link target, extended attributes). Pure: the layers' entries are read
elsewhere (`polyarch.layers.listing`) and given here in order.

The filesystem is the one the layers make, whiteouts applied as the OCI image spec says:
`.wh.NAME` removes NAME (and what is below it) from the layers before; `.wh..wh..opq` hides
everything the layers before put in its directory; an entry of another type replaces the one
below (a file over a directory takes the directory's content with it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo", "whiteout",
               "opaque"]  # fmt: skip

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True, slots=True)
class FileInfo:
    """An entry of a layer (a path below the root, no leading slash), as a tar header and
    its content's digest describe it."""

    path: str
    kind: Kind
    mode: int = 0  # permission bits, setuid/setgid/sticky included
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0  # seconds
    digest: str = ""  # a regular file's content (sha256:...); a hardlink's: its target's
    link: str = ""  # a symlink's or hardlink's target
    device: str = ""  # MAJOR:MINOR of a device node
    xattrs: tuple[tuple[str, str], ...] = ()

    def shown(self) -> str:
        what = {"file": f"file, {self.size} bytes", "symlink": f"symlink to {self.link}",
                "hardlink": f"hardlink to /{self.link}"}.get(self.kind, self.kind)  # fmt: skip
        return f"{what}, {self.mode:04o}, {self.uid}:{self.gid}"


# the filesystem of a stack of layers --------------------------------------------------------


def filesystem(layers: Iterable[Sequence[FileInfo]]) -> dict[str, FileInfo]:
    """The files the layers make, bottom first, whiteouts applied. A hardlink takes its
    target's content digest and size (the content is the same file)."""
    tree: dict[str, FileInfo] = {}
    for entries in layers:
        written: set[str] = set()
        for entry in entries:
            parent, _, base = entry.path.rpartition("/")
            if entry.kind == "opaque" or base == OPAQUE:
                _remove_below(tree, parent, keep=written)
                continue
            if entry.kind == "whiteout" or base.startswith(WHITEOUT_PREFIX):
                victim = base[len(WHITEOUT_PREFIX) :]
                _remove(tree, f"{parent}/{victim}" if parent else victim)
                continue
            below = tree.get(entry.path)
            if below is not None and below.kind == "dir" and entry.kind != "dir":
                _remove_below(tree, entry.path, keep=written)
            target = tree.get(entry.link) if entry.kind == "hardlink" else None
            if target is not None:  # the same file as its target: its content and metadata
                tree[entry.path] = FileInfo(
                    entry.path,
                    "hardlink",
                    target.mode,
                    target.uid,
                    target.gid,
                    target.size,
                    target.mtime,
                    target.digest,
                    entry.link,
                    xattrs=target.xattrs,
                )
            else:
                tree[entry.path] = entry
            written.add(entry.path)
    return tree


def _remove(tree: dict[str, FileInfo], path: str) -> None:
    tree.pop(path, None)
    _remove_below(tree, path)


def _remove_below(tree: dict[str, FileInfo], directory: str, keep: set[str] | None = None) -> None:
    prefix = f"{directory}/" if directory else ""
    for path in [p for p in tree if p.startswith(prefix) and p != directory]:
        if keep is None or path not in keep:
            del tree[path]


# the differences ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldChange:
    """A field that differs: its path (`config.Env`, `history[3].created`) and both values
    (None: absent on that side)."""

    field: str
    a: Any
    b: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "a": self.a, "b": self.b}


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    change: Literal["added", "removed", "changed"]
    a: FileInfo | None
    b: FileInfo | None
    fields: tuple[str, ...] = ()  # what differs: kind, mode, owner, size, content, mtime, ...

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": "/" + self.path, "change": self.change}
        if self.change == "changed" and self.a is not None and self.b is not None:
            out["fields"] = {name: [_field(self.a, name), _field(self.b, name)]
                             for name in self.fields}  # fmt: skip
        else:
            info = self.a or self.b
            assert info is not None
            out["entry"] = {"kind": info.kind, "mode": f"{info.mode:04o}", "uid": info.uid,
                            "gid": info.gid, "size": info.size}  # fmt: skip
        return out


@dataclass(frozen=True, slots=True)
class LayerChange:
    index: int  # from 0
    a: tuple[str, int, str] | None  # digest, size, diffID
    b: tuple[str, int, str] | None

    def to_json(self) -> dict[str, Any]:
        def side(value: tuple[str, int, str] | None) -> dict[str, Any] | None:
            if value is None:
                return None
            return {"digest": value[0], "size": value[1], "diffID": value[2]}

        return {"index": self.index, "a": side(self.a), "b": side(self.b)}


@dataclass
class ImageDiff:
    """The differences between image A and image B (one platform each)."""

    a: str
    b: str
    platform: str
    config: list[FieldChange] = field(default_factory=list)
    layers: list[LayerChange] = field(default_factory=list)
    layers_total: tuple[int, int] = (0, 0)
    files: list[FileChange] = field(default_factory=list)
    files_total: tuple[int, int] = (0, 0)
    problems: list[str] = field(default_factory=list)  # a side missing, an unreadable layer

    @property
    def same(self) -> bool:
        return not (self.config or self.layers or self.files or self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "platform": self.platform, "same": self.same,
            "config": [c.to_json() for c in self.config],
            "layers": [c.to_json() for c in self.layers],
            "files": [c.to_json() for c in self.files], "problems": self.problems,
        }  # fmt: skip


_FILE_FIELDS = ("kind", "mode", "owner", "size", "content", "mtime", "link", "device", "xattrs")


def _field(info: FileInfo, name: str) -> Any:
    if name == "owner":
        return f"{info.uid}:{info.gid}"
    if name == "mode":
        return f"{info.mode:04o}"
    if name == "content":
        return info.digest
    if name == "xattrs":
        return dict(info.xattrs)
    return getattr(info, name)


def compare_files(a: Mapping[str, FileInfo], b: Mapping[str, FileInfo]) -> list[FileChange]:
    """Every path added, removed or changed, in path order."""
    out: list[FileChange] = []
    for path in sorted(set(a) | set(b)):
        before, after = a.get(path), b.get(path)
        if before is None:
            out.append(FileChange(path, "added", None, after))
        elif after is None:
            out.append(FileChange(path, "removed", before, None))
        else:
            fields = tuple(f for f in _FILE_FIELDS if _field(before, f) != _field(after, f))
            if before.kind == "dir" and fields == ("size",):
                continue  # a directory's size in a tar header means nothing
            fields = tuple(f for f in fields if not (f == "size" and before.kind == "dir"))
            if fields:
                out.append(FileChange(path, "changed", before, after, fields))
    return out


def compare_configs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[FieldChange]:
    """The config fields that differ, by path (`created`, `config.Env`, `history[2].created`).
    `rootfs` is left to the layers' comparison. Lists of strings (Env, Cmd, Entrypoint) are
    compared whole; lists of objects (history) entry by entry."""
    out: list[FieldChange] = []
    _walk_json({k: v for k, v in a.items() if k != "rootfs"},
               {k: v for k, v in b.items() if k != "rootfs"}, "", out)  # fmt: skip
    return out


def _walk_json(a: Any, b: Any, path: str, out: list[FieldChange]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            _walk_json(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), out)
        return
    if (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
            and any(isinstance(v, dict) for v in a)):  # fmt: skip
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk_json(x, y, f"{path}[{index}]", out)
        return
    out.append(FieldChange(path, a, b))


def compare_layers(
    a: Sequence[tuple[str, int, str]], b: Sequence[tuple[str, int, str]]
) -> list[LayerChange]:
    """Layers (digest, size, diffID) that differ, position by position."""
    out = []
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x != y:
            out.append(LayerChange(index, x, y))
    return out
