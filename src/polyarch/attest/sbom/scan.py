"""The packages an image holds: its layers read in order (whiteouts applied) for the files
package managers keep, then those files read by `polyarch.attest.sbom.packages`. Nothing is
unpacked to disk; each layer is checked against its digest and diffID as it streams."""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import io
import json
import os
import re
import sqlite3
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from polyarch.attest.sbom import packages as pk
from polyarch.digest import Digest
from polyarch.errors import LayerError
from polyarch.layers.apply import CappedTarInfo
from polyarch.layers.compress import DiffIdReader, open_layer
from polyarch.layers.confine import clean_member_name
from polyarch.oci.config import ImageConfig
from polyarch.oci.models import Descriptor, Manifest
from polyarch.store.blobs import ContentStore

_TEXT_LIMIT: Final = 64 * 1024 * 1024  # a package database larger than this is skipped
_ELF_LIMIT: Final = 512 * 1024 * 1024
_CHUNK: Final = 1024 * 1024
# In a build context, the lock files that name a project's packages.
_CONTEXT_FILES: Final = frozenset({"package-lock.json", "requirements.txt"})
_WANTED: Final = (
    re.compile(r"(usr/)?lib/os-release|etc/os-release"),
    re.compile(r"var/lib/dpkg/status|var/lib/dpkg/status\.d/[^/]+"),
    re.compile(r"usr/share/doc/[^/]+/copyright"),
    re.compile(r"lib/apk/db/installed"),
    re.compile(r"(var/lib/rpm|usr/lib/sysimage/rpm)/rpmdb\.sqlite"),
    re.compile(r".*/[^/]+\.dist-info/METADATA|.*/[^/]+\.egg-info/PKG-INFO"),
    re.compile(r"(.*/)?node_modules/(@[^/]+/)?[^/@][^/]*/package\.json"),
)


@dataclass(slots=True)
class _Found:
    data: bytes = b""  # a wanted file's content
    go: tuple[pk.Package, ...] = ()  # a Go binary's modules


def _go_modules(stream: io.BufferedIOBase, size: int, path: str) -> tuple[pk.Package, ...]:
    """The Go build information of an ELF executable, found by streaming it."""
    head = stream.read(4)
    if head != b"\x7fELF" or size > _ELF_LIMIT:
        return ()
    tail = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return ()
        window = tail + chunk
        at = window.find(pk.GO_MAGIC)
        if at >= 0:
            rest = window[at:] + stream.read(64 * 1024)
            return tuple(pk.go_buildinfo(rest, path))
        tail = window[-len(pk.GO_MAGIC) :]


# What a layer does to the wanted files, in order: ("o", DIR) an opaque directory, ("w", PATH)
# a whiteout, ("p", PATH) a wanted file put there (its content alongside), ("g", PATH) any
# other entry standing at PATH (what was wanted there is gone).
LayerEvent: TypeAlias = tuple[str, str, "_Found | None"]
SCAN_VERSION: Final = 1  # of the per-layer results kept in the workspace


def _layer_events(stream: io.BufferedIOBase) -> list[LayerEvent]:
    events: list[LayerEvent] = []
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=CappedTarInfo) as tar:
        for member in tar:
            path = clean_member_name(member.name)
            directory, _, base = path.rpartition("/")
            if base == ".wh..wh..opq":
                events.append(("o", directory, None))
            elif base.startswith(".wh."):
                events.append(("w", f"{directory}/{base[4:]}" if directory else base[4:], None))
            elif member.isdir():
                continue
            elif member.isfile() and (found := _read(tar, member, path)) is not None:
                events.append(("p", path, found))
            else:
                events.append(("g", path, None))
    return events


def _apply(events: Sequence[LayerEvent], tree: dict[str, _Found]) -> None:
    """One layer's events applied to `tree` (the wanted files by path)."""
    added: set[str] = set()
    for kind, path, found in events:
        if kind == "o":
            prefix = f"{path}/" if path else ""
            for key in [k for k in tree if k.startswith(prefix) and k not in added]:
                del tree[key]
        elif kind == "w":
            for key in [k for k in tree if k == path or k.startswith(path + "/")]:
                del tree[key]
        elif kind == "p" and found is not None:
            tree[path] = found
            added.add(path)
        else:
            tree.pop(path, None)


def _events_json(events: Sequence[LayerEvent]) -> bytes:
    out: list[Any] = []
    for kind, path, found in events:
        if found is None:
            out.append([kind, path])
        elif found.go:
            out.append([kind, path, {"go": [dataclasses.asdict(p) for p in found.go]}])
        else:
            out.append([kind, path, {"data": base64.b64encode(found.data).decode("ascii")}])
    return json.dumps({"version": SCAN_VERSION, "events": out}).encode()


def _found(body: dict[str, Any]) -> _Found:
    if "go" in body:
        return _Found(go=tuple(pk.Package(**{**p, "licenses": tuple(p["licenses"])})
                               for p in body["go"]))  # fmt: skip
    return _Found(data=base64.b64decode(body["data"]))


def _events_from_json(raw: bytes) -> list[LayerEvent] | None:
    try:
        doc = json.loads(raw)
        if doc.get("version") != SCAN_VERSION:
            return None
        events: list[LayerEvent] = []
        for item in doc["events"]:
            events.append((str(item[0]), str(item[1]), _found(item[2]) if len(item) > 2 else None))
        return events
    except (ValueError, KeyError, TypeError, RecursionError):
        return None  # a damaged entry: the layer is read again


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> _Found | None:
    if any(p.fullmatch(path) for p in _WANTED):
        if member.size > _TEXT_LIMIT:
            return None
        handle = tar.extractfile(member)
        return None if handle is None else _Found(data=handle.read())
    if member.mode & 0o111 and member.size >= 1024:
        handle = tar.extractfile(member)
        if handle is not None:
            modules = _go_modules(handle, member.size, path)  # type: ignore[arg-type]
            return _Found(go=modules) if modules else None
    return None


def image_files(blobs: ContentStore, manifest: Manifest, config: ImageConfig,
                cache: Path | None = None) -> dict[str, _Found]:  # fmt: skip
    """The wanted files of an image (its layers in order, whiteouts applied)."""
    ids: list[Digest | None] = list(config.diff_ids)
    return layer_files(blobs, [(layer, ids[i] if i < len(ids) else None)
                               for i, layer in enumerate(manifest.layers)], cache)  # fmt: skip


def layer_files(
    blobs: ContentStore,
    layers: Sequence[tuple[Descriptor, Digest | None]],
    cache: Path | None = None,
) -> dict[str, _Found]:
    """The wanted files of a filesystem made of these layers (each checked against its
    diffID when given). `cache`: a directory keeping each layer's results by diffID, so a
    layer (a base image's) is read once per workspace."""
    tree: dict[str, _Found] = {}
    for index, (layer, diff_id) in enumerate(layers):
        kept = cache / f"{diff_id.algorithm}-{diff_id.hex}.json" if cache and diff_id else None
        events = _events_from_json(kept.read_bytes()) if kept and kept.is_file() else None
        if events is None:
            events = _read_layer(blobs, layer, diff_id, f"layer {index + 1} ({layer.digest})")
            if kept is not None:
                _write_atomic(kept, _events_json(events))
        _apply(events, tree)
    return tree


def _read_layer(blobs: ContentStore, layer: Descriptor, diff_id: Digest | None, what: str
                ) -> list[LayerEvent]:  # fmt: skip
    try:
        with blobs.open(layer.digest, layer.size) as raw:
            stream = open_layer(io.BufferedReader(raw), layer.media_type)
            if diff_id is None:
                return _layer_events(stream)
            checked = DiffIdReader(stream, diff_id, what)
            events = _layer_events(io.BufferedReader(checked))
            checked.check()
            return events
    except tarfile.TarError as exc:
        raise LayerError(f"{what}: not a valid tar archive: {exc}") from None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", delete=False) as out:
        out.write(data)
    os.replace(out.name, path)


def directory_files(root: Path, ignored: Callable[[str], bool]) -> dict[str, _Found]:
    """The wanted files of a directory (the build context: `ignored` its .dockerignore),
    never through a symlink."""
    tree: dict[str, _Found] = {}
    for where, dirs, files in os.walk(root):
        relative = Path(where).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [d for d in dirs if d != ".git" and not ignored(prefix + d)]
        for name in files:
            path, full = prefix + name, Path(where) / name
            wanted = any(p.fullmatch(path) for p in _WANTED) or name in _CONTEXT_FILES
            if not wanted or ignored(path) or full.is_symlink():
                continue
            if full.stat().st_size <= _TEXT_LIMIT:
                tree[path] = _Found(data=full.read_bytes())
    return tree


def _text(found: _Found) -> str:
    return found.data.decode("utf-8", "replace")


def _rpm_headers(data: bytes) -> list[bytes]:
    with tempfile.NamedTemporaryFile(suffix=".sqlite") as db:
        db.write(data)
        db.flush()
        try:
            with sqlite3.connect(f"file:{db.name}?mode=ro", uri=True) as conn:
                return [bytes(row[0]) for row in conn.execute("SELECT blob FROM Packages")]
        except sqlite3.Error:
            return []


def packages(tree: dict[str, _Found]) -> list[pk.Package]:
    """The packages the files of an image name."""
    distro = pk.Distro()
    for path in ("etc/os-release", "usr/lib/os-release", "lib/os-release"):
        if path in tree:
            distro = pk.os_release(_text(tree[path]))
            break
    licences = {path.split("/")[3]: pk.debian_copyright(_text(found))
                for path, found in tree.items()
                if fnmatch.fnmatchcase(path, "usr/share/doc/*/copyright")}  # fmt: skip
    out: list[pk.Package] = []
    readers: list[tuple[Callable[[str], bool], Callable[[str, _Found], list[pk.Package]]]] = [
        (lambda p: p == "var/lib/dpkg/status" or p.startswith("var/lib/dpkg/status.d/"),
         lambda p, f: pk.dpkg_status(_text(f), distro, p, licences)),
        (lambda p: p == "lib/apk/db/installed",
         lambda p, f: pk.apk_installed(_text(f), distro, p)),
        (lambda p: p.endswith("rpmdb.sqlite"),
         lambda p, f: pk.rpm_packages(_rpm_headers(f.data), distro, p)),
        (lambda p: p.endswith(("/METADATA", "/PKG-INFO")),
         lambda p, f: [x for x in [pk.python_metadata(_text(f), p)] if x]),
        (lambda p: p.endswith("/package.json"),
         lambda p, f: [x for x in [pk.npm_package(f.data, p)] if x]),
        (lambda p: p.rpartition("/")[2] == "package-lock.json",
         lambda p, f: pk.npm_lock(f.data, p)),
        (lambda p: p.rpartition("/")[2] == "requirements.txt",
         lambda p, f: pk.requirements(_text(f), p)),
    ]  # fmt: skip
    for path in sorted(tree):
        found = tree[path]
        if found.go:
            out += found.go
            continue
        for matches, read in readers:
            if matches(path):
                out += read(path, found)
                break
    return out
