"""COPY and ADD with Docker's semantics, confined on both sides.

- Sources are paths in the source root (the build context, or another stage's or image's
  filesystem), with wildcards (`*`, `?`, `[...]` per path component; one that matches nothing
  copies nothing, as in BuildKit; a missing path without one is an error). The source path
  itself is followed if it is a symlink (inside the source root); symlinks found inside a
  copied directory are copied as symlinks.
- A directory source copies its *contents*. Several sources, or a wildcard, need a destination
  directory ending in `/`. A destination ending in `/`, or an existing directory, receives
  `dest/<name>`; otherwise a single file source is written to the destination path itself.
- Files from the context are owned by 0:0, files from a stage keep their owner, unless
  `--chown` (names resolved in the destination's /etc/passwd and /etc/group); `--chmod` sets the
  mode of everything copied; `--exclude` patterns skip paths; `.dockerignore` hides context
  paths. Modification times are kept.
- ADD also unpacks local tar archives (plain, gzip, bzip2, xz) into the destination directory.
"""

from __future__ import annotations

import bz2
import contextlib
import fnmatch
import gzip
import hashlib
import lzma
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from polyarch.errors import PolyarchError
from polyarch.layers import Root, UnsafePathError, apply_layer
from polyarch.layers.confine import remove_at
from polyarch.patterns import IgnoreMatcher

_CHUNK = 1024 * 1024


class CopyError(PolyarchError):
    """A COPY or ADD that cannot be done as written."""


class MissingSourceError(CopyError):
    """A source a COPY, ADD or bind mount names is not there (or is excluded)."""


@dataclass(frozen=True, slots=True)
class Selected:
    """A source chosen for copying: its path in the source root, resolved."""

    path: str  # resolved relative path ("" for the root)
    given: str  # as written
    is_dir: bool
    wildcard: bool


def select_sources(
    source: Root, patterns: list[str], ignore: IgnoreMatcher | None
) -> list[Selected]:
    out: list[Selected] = []
    for given in patterns:
        rel = given.lstrip("/")
        while rel.startswith("./"):
            rel = rel[2:]
        if has_wildcard(rel):
            # A wildcard that matches nothing copies nothing (BuildKit's AllowEmptyWildcard):
            # `COPY package.json yarn.lock* ./` takes what exists.
            matches = [m for m in _glob(source, rel) if not (ignore and ignore.matches(m))]
            for match in matches:
                st = source.lstat(match)
                out.append(Selected(match, given, bool(st and stat.S_ISDIR(st.st_mode)), True))
            continue
        resolved = _resolve(source, rel)
        if resolved is None or (ignore and resolved and ignore.matches(resolved)):
            raise MissingSourceError(
                f"source {given!r} not found"
                + (" (or excluded by .dockerignore)" if ignore else "")
            )
        st = source.lstat(resolved)
        out.append(Selected(resolved, given, bool(st and stat.S_ISDIR(st.st_mode)), False))
    return out


def has_wildcard(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _resolve(source: Root, rel: str) -> str | None:
    """The path with symlinks resolved inside the root (the source path itself is followed)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        st = source.lstat(candidate)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise CopyError(f"{rel!r}: too many levels of symlinks")
            with source.parent(candidate, create=False) as (fd, leaf):
                target = os.readlink(leaf, dir_fd=fd)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return "/".join(resolved)


def _glob(source: Root, pattern: str) -> list[str]:
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    current = [""]
    for i, part in enumerate(parts):
        following: list[str] = []
        for base in current:
            st = source.lstat(base) if base else None
            if base and (st is None or not stat.S_ISDIR(st.st_mode)):
                continue
            names = _listdir(source, base)
            if any(ch in part for ch in "*?["):
                chosen = sorted(n for n in names if fnmatch.fnmatchcase(n, part))
            else:
                chosen = [part] if part in names else []
            following.extend(f"{base}/{n}" if base else n for n in chosen)
        current = following
        if not current:
            return []
        del i
    return current


def _listdir(source: Root, rel: str) -> list[str]:
    fd = source.open_dir(rel, create=False) if rel else source.fd
    try:
        return os.listdir(fd)
    finally:
        if fd != source.fd:
            os.close(fd)


def walk_selected(
    source: Root, sel: Selected, exclude: list[str], ignore: IgnoreMatcher | None
) -> Iterator[tuple[str, str, os.stat_result]]:
    """(source path, path relative to the copied item, lstat) of everything to copy."""
    st = source.lstat(sel.path)
    assert st is not None
    if not sel.is_dir:
        yield sel.path, "", st
        return

    def visit(rel: str) -> Iterator[tuple[str, str, os.stat_result]]:
        for name in sorted(_listdir(source, rel), key=os.fsencode):
            path = f"{rel}/{name}" if rel else name
            inner = path[len(sel.path) :].lstrip("/")
            if ignore and ignore.matches(path) and not ignore.may_include_below(path):
                continue
            if any(fnmatch.fnmatchcase(inner, p) or fnmatch.fnmatchcase(name, p) for p in exclude):
                continue
            child = source.lstat(path)
            if child is None:
                continue
            if stat.S_ISDIR(child.st_mode):
                if not (ignore and ignore.matches(path)):
                    yield path, inner, child
                yield from visit(path)
            elif not (ignore and ignore.matches(path)):
                yield path, inner, child

    yield from visit(sel.path)


def content_digest(
    source: Root, selected: list[Selected], exclude: list[str], ignore: IgnoreMatcher | None
) -> str:
    """A digest of everything a copy would read: names, types, modes, link targets, bytes."""
    h = hashlib.sha256()
    for sel in selected:
        h.update(f"S{sel.given}\0{sel.path}\0{int(sel.is_dir)}\0".encode())
        for path, inner, st in walk_selected(source, sel, exclude, ignore):
            h.update(
                f"E{inner}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                f"{st.st_uid}:{st.st_gid}\0".encode()
            )
            if stat.S_ISLNK(st.st_mode):
                with source.parent(path, create=False) as (fd, leaf):
                    h.update(os.readlink(leaf, dir_fd=fd).encode())
            elif stat.S_ISREG(st.st_mode):
                with _open_in(source, path) as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
    return "sha256:" + h.hexdigest()


def _open_in(root: Root, rel: str) -> IO[bytes]:
    with root.parent(rel, create=False) as (fd, leaf):
        handle = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    return os.fdopen(handle, "rb")


@dataclass(frozen=True, slots=True)
class CopyOptions:
    chown: tuple[int, int] | None = None
    chmod: int | None = None
    keep_owner: bool = False  # from a stage or image: keep owners (unless chown)
    parents: bool = False
    unpack_archives: bool = False  # ADD


def copy_sources(
    source: Root,
    selected: list[Selected],
    dest_root: Root,
    dest: str,
    options: CopyOptions,
    exclude: list[str],
    ignore: IgnoreMatcher | None,
    patterns: Sequence[str] = (),
) -> int:
    """Copy; returns the number of entries written. `patterns`, the sources as written: with
    several, or a wildcard, the destination must be a directory (whatever they matched)."""
    if not selected:
        return 0  # only wildcards, matching nothing: nothing is written, not even `dest`
    to_dir = _to_directory(selected, dest_root, dest, patterns)
    base = dest.strip("/")
    count = 0
    before = _ancestor_times(dest_root, base)
    newest = 0
    for sel in selected:
        if options.unpack_archives and not sel.is_dir and _unpacked(source, sel, dest_root,
                                                                    base, options):  # fmt: skip
            count += 1
            continue
        target = _target(sel, base, to_dir, options)
        with _parents_kept(source, sel, dest_root, base, options):
            copied, seen = _copy_selected(source, sel, dest_root, target, options, exclude,
                                          ignore)  # fmt: skip
        # (a directory's newest time replaces what the sources before it had: kept as it
        # was, since a digest depends on it)
        newest = seen if sel.is_dir else max(newest, seen)
        count += copied
    _settle_times(dest_root, base, before, newest)
    return count


def _target(sel: Selected, base: str, to_dir: bool, options: CopyOptions) -> str:
    """Where a selected source lands below the destination `base`."""
    if sel.is_dir:
        return base if not options.parents else _join(base, sel.path)
    if not to_dir:
        return base
    # Named after the source as written (a symlink's own name, not its target's).
    written = sel.given.rstrip("/").rpartition("/")[2] if not sel.wildcard else ""
    return _join(base, sel.path if options.parents else (written or sel.path.rpartition("/")[2]))


def _copy_selected(
    source: Root,
    sel: Selected,
    dest_root: Root,
    target: str,
    options: CopyOptions,
    exclude: list[str],
    ignore: IgnoreMatcher | None,
) -> tuple[int, int]:
    """One selected source to `target`: (entries written, newest time seen)."""
    if sel.is_dir:
        _ensure_dir(dest_root, target, options)
        newest, copied = _copy_dir(source, sel.path, dest_root, target, options, exclude,
                                   ignore)  # fmt: skip
        root_st = source.lstat(sel.path)
        if root_st is not None and target:
            newest = max(newest, root_st.st_mtime_ns)
        return copied, newest
    count = newest = 0
    for path, inner, st in walk_selected(source, sel, exclude, ignore):
        newest = max(newest, st.st_mtime_ns)
        out = _join(target, inner) if inner else target
        if not out:
            continue
        _copy_entry(source, path, dest_root, out, st, options)
        count += 1
    return count, newest


@contextlib.contextmanager
def _parents_kept(
    source: Root, sel: Selected, dest_root: Root, base: str, options: CopyOptions
) -> Iterator[None]:
    """COPY --parents: the directories on the way from the destination to the copied path
    (and a copied directory itself) end with their time from before the copy when they
    existed, else their source directory's time (BuildKit's createParentDirs copies their
    info): never the clock's, which writing into them set."""
    if not options.parents:
        yield
        return
    parts = [p for p in sel.path.split("/") if p]
    way = parts if sel.is_dir else parts[:-1]
    before = {"/".join(way[: i + 1]): dest_root.lstat(_join(base, "/".join(way[: i + 1])))
              for i in range(len(way))}  # fmt: skip
    yield
    for rel in sorted(before, key=lambda r: -r.count("/")):
        was = before[rel]
        st = was if was is not None and stat.S_ISDIR(was.st_mode) else source.lstat(rel)
        now = dest_root.lstat(_join(base, rel))
        if st is None or now is None or not stat.S_ISDIR(now.st_mode):
            continue
        with dest_root.parent(_join(base, rel), create=False) as (fd, leaf):
            os.utime(leaf, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)


def _to_directory(
    selected: list[Selected], dest_root: Root, dest: str, patterns: Sequence[str]
) -> bool:
    """Whether the sources go into `dest` as a directory: it ends with `/` (or is the
    root), or is a directory there; several sources or a wildcard need one."""
    to_dir = dest.endswith("/") or dest in ("", ".", "/")
    several = len(patterns) > 1 or any(has_wildcard(p) for p in patterns)
    if several or len(selected) > 1 or any(s.wildcard for s in selected):
        if not to_dir:
            existing = dest_root.lstat(dest)
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                raise CopyError(
                    "when copying more than one source (or a wildcard), the destination must be "
                    f"a directory ending with /: {dest!r}"
                )
        return True
    if not to_dir:
        existing = dest_root.lstat(dest) if dest.strip("/") else None
        to_dir = bool(existing and stat.S_ISDIR(existing.st_mode))
    return to_dir


def _unpacked(
    source: Root, sel: Selected, dest_root: Root, base: str, options: CopyOptions
) -> bool:
    """ADD of a local tar archive: unpacked into the destination directory (True), else
    False (not an archive: it is copied as a file)."""
    archive = _maybe_archive(source, sel.path)
    if archive is None:
        return False
    _ensure_dir(dest_root, base, options)
    # The destination is resolved inside the image (a symlink on the way is followed there,
    # never on the host), and the archive is applied below that directory's descriptor:
    # nothing it names can leave it.
    fd = dest_root.open_dir(base, create=True) if base else dest_root.fd
    try:
        with archive:
            apply_layer(archive, f"/proc/self/fd/{fd}", whiteouts="keep")
    finally:
        if fd != dest_root.fd:
            os.close(fd)
    return True


def _copy_dir(
    source: Root,
    src_rel: str,
    dest_root: Root,
    dst_rel: str,
    options: CopyOptions,
    exclude: list[str],
    ignore: IgnoreMatcher | None,
    *,
    skip_sockets: bool = False,
) -> tuple[int, int]:
    """A directory's contents, copied descriptor to descriptor (one `openat` per entry, not
    one walk from the root per entry): what `walk_selected` selects, each entry as
    `_copy_entry` writes it. Returns (newest mtime seen, entries written)."""
    src = source.open_dir(src_rel, create=False) if src_rel else source.fd
    dst = dest_root.open_dir(dst_rel, create=True) if dst_rel else dest_root.fd
    walk = _Walk(src_rel, options, exclude, ignore, skip_sockets)
    try:
        walk.level(src, _Dest(dst), "")
    finally:
        for fd, root in ((src, source), (dst, dest_root)):
            if fd != root.fd:
                os.close(fd)
    return walk.newest, walk.written


class _Dest:
    """A destination directory, made (0755, root's) only when something lands in it: a
    directory the ignore rules leave out appears only for what they bring back below it."""

    def __init__(self, fd: int = -1, parent: _Dest | None = None, name: str = "") -> None:
        self.fd, self.parent, self.name = fd, parent, name

    def open(self) -> int:
        if self.fd < 0:
            assert self.parent is not None
            parent = self.parent.open()
            if _lstat(parent, self.name) is None:
                os.mkdir(self.name, 0o755, dir_fd=parent)
            self.fd = os.open(self.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                              dir_fd=parent)  # fmt: skip
        return self.fd

    def close(self) -> None:
        if self.fd >= 0 and self.parent is not None:
            os.close(self.fd)
            self.fd = -1


@dataclass
class _Walk:
    """One directory copy's rules (what it leaves out, how it writes), and what it saw: the
    newest mtime, the entries written."""

    base: str  # the directory's path in the source, for the ignore rules
    options: CopyOptions
    exclude: list[str]
    ignore: IgnoreMatcher | None
    skip_sockets: bool = False
    newest: int = 0
    written: int = 0

    def level(self, src: int, dst: _Dest, inner: str) -> None:
        """The entries of directory `src` (at `inner` below the copy's root) into `dst`."""
        with os.scandir(src) as listing:
            entries = sorted(listing, key=lambda e: os.fsencode(e.name))
        ignore = self.ignore
        for entry in entries:
            name = entry.name
            rel = f"{inner}/{name}" if inner else name
            path = f"{self.base}/{rel}" if self.base else rel
            ignored = ignore is not None and ignore.matches(path)
            if ignored and ignore is not None and not ignore.may_include_below(path):
                continue
            if any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p)
                   for p in self.exclude):  # fmt: skip
                continue
            st = entry.stat(follow_symlinks=False)
            if self.skip_sockets and stat.S_ISSOCK(st.st_mode):
                continue
            self.newest = max(self.newest, st.st_mtime_ns)
            if stat.S_ISDIR(st.st_mode):
                child_src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                    dir_fd=src)  # fmt: skip
                child = _Dest(-1, dst, name)
                try:
                    if not ignored:
                        _write_entry(src, name, dst.open(), name, st, self.options)
                        self.written += 1
                    self.level(child_src, child, rel)
                    if child.fd >= 0:  # written, or made for what came back below it
                        # Its time once its entries are in (they changed it), as BuildKit
                        # copies a directory's info after its contents: never the clock's.
                        os.utime(name, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=dst.fd,
                                 follow_symlinks=False)  # fmt: skip
                finally:
                    os.close(child_src)
                    child.close()
            elif not ignored:
                _write_entry(src, name, dst.open(), name, st, self.options)
                self.written += 1


def _write_entry(
    src_fd: int, src_name: str, fd: int, leaf: str, st: os.stat_result, options: CopyOptions
) -> None:
    """One entry written into directory `fd` as `leaf` (what `_copy_entry` does, by fds)."""
    uid, gid = _owner(st, options)
    mode = options.chmod if options.chmod is not None else stat.S_IMODE(st.st_mode)
    existing = _lstat(fd, leaf)
    if stat.S_ISDIR(st.st_mode):
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            remove_at(fd, leaf)
            existing = None
        if existing is None:
            os.mkdir(leaf, 0o700, dir_fd=fd)
        os.chown(leaf, uid, gid, dir_fd=fd, follow_symlinks=False)
        os.chmod(leaf, mode, dir_fd=fd)
        os.utime(leaf, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)
        return
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            raise CopyError(f"cannot overwrite directory {leaf!r} with a file")
        os.unlink(leaf, dir_fd=fd)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src_name, dir_fd=src_fd), leaf, dir_fd=fd)
        os.chown(leaf, uid, gid, dir_fd=fd, follow_symlinks=False)
    elif stat.S_ISREG(st.st_mode):
        source = os.open(src_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
        handle = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=fd)  # fmt: skip
        with os.fdopen(source, "rb") as src, os.fdopen(handle, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
            set_owner_and_mode(dst, uid, gid, mode)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        # Made, never read: a device node (an image's /dev/zero) is copied as a node.
        os.mknod(leaf, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=fd)
        os.chown(leaf, uid, gid, dir_fd=fd, follow_symlinks=False)
        os.chmod(leaf, mode, dir_fd=fd)
    else:
        raise CopyError(f"cannot copy {src_name!r}: not a file, directory, symlink or node")
    os.utime(leaf, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)


def copy_tree(source: Path, dest: Path) -> None:
    """Everything under directory `source` into the directory `dest` as it is (owners,
    modes, times, links as links, device nodes as nodes), confined to both; sockets are
    left out."""
    with Root(source) as src, Root(dest) as dst:
        _copy_dir(src, "", dst, "", CopyOptions(keep_owner=True), [], None, skip_sockets=True)
        st = os.fstat(src.fd)
        os.chown(dst.fd, st.st_uid, st.st_gid)
        os.chmod(dst.fd, stat.S_IMODE(st.st_mode))


def _ancestor_times(root: Root, rel: str) -> dict[str, int | None]:
    """mtime of each directory on the way to `rel` (None: it does not exist yet)."""
    parts = [p for p in rel.split("/") if p]
    out: dict[str, int | None] = {}
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        st = root.lstat(sub)
        out[sub] = st.st_mtime_ns if st is not None and stat.S_ISDIR(st.st_mode) else None
    return out


def _settle_times(root: Root, rel: str, before: dict[str, int | None], newest: int) -> None:
    """A copy is a function of what it copies: directories that existed keep their times,
    directories it created take the newest time among the copied files (not the clock)."""
    for sub, mtime in sorted(before.items(), key=lambda kv: -kv[0].count("/")):
        st = root.lstat(sub)
        if st is None or not stat.S_ISDIR(st.st_mode):
            continue
        value = mtime if mtime is not None else newest
        if value:
            with root.parent(sub, create=False) as (fd, leaf):
                os.utime(leaf, ns=(value, value), dir_fd=fd, follow_symlinks=False)


def _join(a: str, b: str) -> str:
    return f"{a}/{b}".strip("/") if a else b.strip("/")


def _ensure_dir(root: Root, rel: str, options: CopyOptions) -> None:
    if not rel:
        return
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        st = root.lstat(sub)
        if st is None:
            with root.parent(sub) as (fd, leaf):
                os.mkdir(leaf, 0o755, dir_fd=fd)
                if options.chown:
                    os.chown(leaf, *options.chown, dir_fd=fd, follow_symlinks=False)
        elif not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            raise CopyError(f"cannot copy into {rel!r}: {sub!r} is not a directory")


def _owner(st: os.stat_result, options: CopyOptions) -> tuple[int, int]:
    if options.chown is not None:
        return options.chown
    return (st.st_uid, st.st_gid) if options.keep_owner else (0, 0)


def _copy_entry(
    source: Root, path: str, dest_root: Root, out: str, st: os.stat_result, options: CopyOptions
) -> None:
    uid, gid = _owner(st, options)
    mode = options.chmod if options.chmod is not None else stat.S_IMODE(st.st_mode)
    with dest_root.parent(out) as (fd, leaf):
        existing = _lstat(fd, leaf)
        if stat.S_ISDIR(st.st_mode):
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                remove_at(fd, leaf)
                existing = None
            if existing is None:
                os.mkdir(leaf, 0o700, dir_fd=fd)
            os.chmod(leaf, mode, dir_fd=fd)
            os.chown(leaf, uid, gid, dir_fd=fd, follow_symlinks=False)
            os.utime(leaf, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)
            return
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise CopyError(f"cannot overwrite directory {out!r} with a file")
            os.unlink(leaf, dir_fd=fd)
        if stat.S_ISLNK(st.st_mode):
            with source.parent(path, create=False) as (sfd, sleaf):
                target = os.readlink(sleaf, dir_fd=sfd)
            os.symlink(target, leaf, dir_fd=fd)
        elif stat.S_ISREG(st.st_mode):
            handle = os.open(
                leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd
            )
            with _open_in(source, path) as src, os.fdopen(handle, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                set_owner_and_mode(dst, uid, gid, mode)
        else:
            raise CopyError(f"cannot copy {path!r}: not a file, directory or symlink")
        if not stat.S_ISREG(st.st_mode):
            os.chown(leaf, uid, gid, dir_fd=fd, follow_symlinks=False)
        os.utime(leaf, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)


def set_owner_and_mode(out: BinaryIO, uid: int, gid: int, mode: int) -> None:
    """A written file's owner, then its mode: its data flushed first (a write after the
    chmod clears setuid and setgid bits where polyarch lacks CAP_FSETID in the host's user
    namespace, rootless), and chown before chmod (chown clears them too)."""
    out.flush()
    os.fchown(out.fileno(), uid, gid)
    os.fchmod(out.fileno(), mode)


def _lstat(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _maybe_archive(source: Root, path: str) -> IO[bytes] | None:
    """A readable tar stream if the file is a tar archive (plain, gzip, bzip2, xz)."""
    with _open_in(source, path) as f:
        head = f.read(512)
    kind = (
        "gz"
        if head.startswith(b"\x1f\x8b")
        else "bz2"
        if head.startswith(b"BZh")
        else "xz"
        if head.startswith(b"\xfd7zXZ\x00")
        else None
    )
    if kind is None:
        return _open_in(source, path) if _is_tar(head) else None

    def opened() -> IO[bytes]:
        raw = _open_in(source, path)
        if kind == "gz":
            return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
        if kind == "bz2":
            return cast(IO[bytes], bz2.BZ2File(raw))
        return cast(IO[bytes], lzma.LZMAFile(raw))

    try:
        with opened() as stream:
            probe = stream.read(512)
    except (OSError, EOFError, lzma.LZMAError):
        return None
    return opened() if _is_tar(probe) else None


def _is_tar(block: bytes) -> bool:
    if len(block) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def write_inline(
    dest_root: Root, dest: str, name: str, content: str, options: CopyOptions, to_dir: bool
) -> None:
    """A heredoc source: a file named after the heredoc in a directory destination."""
    target = _join(dest.strip("/"), name) if to_dir or dest.endswith("/") else dest.strip("/")
    data = content.encode("utf-8")
    uid, gid = options.chown or (0, 0)
    mode = options.chmod if options.chmod is not None else 0o644
    with dest_root.parent(target) as (fd, leaf):
        if _lstat(fd, leaf) is not None:
            remove_at(fd, leaf)
        handle = os.open(
            leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd
        )
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            set_owner_and_mode(out, uid, gid, mode)


def resolve_owner(root: Root, spec: str) -> tuple[int, int]:
    """`user[:group]` by name or number, names looked up in the root's passwd and group."""
    user, _, group = spec.partition(":")
    passwd = read_account_db(root, "etc/passwd")
    groups = read_account_db(root, "etc/group")
    if user.isdigit():
        uid = int(user)
    else:
        entry = next((e for e in passwd if e and e[0] == user), None)
        if entry is None or len(entry) < 4:
            raise CopyError(f"unknown user {user!r} (not in the image's /etc/passwd)")
        uid = int(entry[2])
    if not group:
        return uid, uid  # Docker: a user without a group uses the same numeric id as GID
    if group.isdigit():
        return uid, int(group)
    found = next((e for e in groups if e and e[0] == group), None)
    if found is None or len(found) < 3:
        raise CopyError(f"unknown group {group!r} (not in the image's /etc/group)")
    return uid, int(found[2])


def read_account_db(root: Root, rel: str) -> list[list[str]]:
    """The colon-separated entries of a passwd or group file inside `root` (none if absent)."""
    try:
        with _open_in(root, rel) as f:
            text = f.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError, UnsafePathError, OSError):
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(root: Root, user: str) -> tuple[int, int, tuple[int, ...]]:
    """USER name/uid[:group/gid] as BuildKit resolves it in the root filesystem: (uid, gid,
    supplementary gids)."""
    if not user:
        return 0, 0, ()
    name, _, group = user.partition(":")
    passwd = read_account_db(root, "etc/passwd")
    groups = read_account_db(root, "etc/group")
    entry = next((e for e in passwd if len(e) > 3 and e[0] == name), None)
    if name.isdigit():
        uid = int(name)
        entry = entry or next((e for e in passwd if len(e) > 3 and e[2] == name), None)
        gid = int(entry[3]) if entry else 0
    elif entry is None:
        raise CopyError(f"unable to find user {name}: no matching entries in passwd file")
    else:
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((g for g in groups if len(g) > 2 and g[0] == group), None)
            if found is None:
                raise CopyError(f"unable to find group {group}: no matching entries in group file")
            gid = int(found[2])
    username = entry[0] if entry else None
    extra = tuple(
        sorted(
            {
                int(g[2])
                for g in groups
                if len(g) > 3 and username and username in g[3].split(",") and int(g[2]) != gid
            }
        )
    )
    return uid, gid, extra


def ensure_dirs(root: Root, path: str, mode: int, owner: tuple[int, int] | None) -> None:
    """`mkdir -p` inside the root (symlinks on the way followed inside it): the directories
    it makes get `mode` and `owner`, existing ones are left as they are."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        try:
            fd = root.open_dir(sub, create=False)
        except FileNotFoundError:
            with root.parent(sub) as (parent, leaf):
                os.mkdir(leaf, 0o700, dir_fd=parent)
                os.chmod(leaf, mode, dir_fd=parent)
                if owner is not None:
                    os.chown(leaf, *owner, dir_fd=parent, follow_symlinks=False)
            continue
        except (NotADirectoryError, UnsafePathError) as exc:
            raise CopyError(f"cannot make directory /{path.strip('/')}: {exc}") from None
        if fd != root.fd:
            os.close(fd)


def write_file(root: Root, path: str, data: bytes, mode: int, owner: tuple[int, int]) -> None:
    """A new file at `path` (what was there is replaced), with `mode` and `owner`."""
    with root.parent(path.strip("/")) as (fd, leaf):
        if _lstat(fd, leaf) is not None:
            remove_at(fd, leaf)
        handle = os.open(
            leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd
        )
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            set_owner_and_mode(out, *owner, mode)
