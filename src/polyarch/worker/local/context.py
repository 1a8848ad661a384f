"""The digest of what a copy takes from a build context, fast on large contexts.

Only what the copy's sources select is read (after the ignore rules). A file's digest is
reused while its inode, size, modification and change times are unchanged (as BuildKit's
content hash does), from the workspace's sqlite table of them (one row per context directory,
read in one go); anything else is hashed again.
The walk goes through directory file descriptors (`openat`, no symlink followed), one
`scandir` per directory.

The digest covers, for each source, how it was written and what it resolved to, then every
entry below it: its path, type, permission bits, owners, and a link's target or a file's
content digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import operator
import os
import posixpath
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from polyarch.layers import Root
from polyarch.patterns import IgnoreMatcher
from polyarch.worker.local.filecopy import Selected

_CHUNK: Final = 1024 * 1024
_KINDS: Final = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l"}
_FMT: Final = 0o170000  # stat.S_IFMT's mask
_NAME: Final = operator.attrgetter("name")

# A context's files as last seen: path -> (inode, size, mtime, ctime, digest).
Known = dict[str, tuple[int, int, int, int, str]]


class ContextHasher:
    def __init__(self, db: Path) -> None:
        self._path = db
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._loaded: dict[str, Known] = {}  # read once per process, shared by its copies

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._open()
            except sqlite3.DatabaseError:
                # A damaged table of file digests is only a cache: start a new one.
                with contextlib.suppress(OSError):
                    self._path.unlink()
                self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # One row per context directory: its files' stamps and digests, read in one go.
        db.execute("CREATE TABLE IF NOT EXISTS trees (root TEXT PRIMARY KEY, files BLOB)")
        return db

    def _known(self, root: str) -> Known:
        """The stamps and digests kept for the files of context `root` (empty when none
        are, or what is kept cannot be read: it is only a cache)."""
        with self._lock:
            known = self._loaded.get(root)
            if known is not None:
                return known
            row = (
                self._connect()
                .execute("SELECT files FROM trees WHERE root = ?", (root,))
                .fetchone()
            )
            try:
                # The workspace's own cache, written by polyarch (a damaged one is dropped).
                loaded = marshal.loads(row[0]) if row is not None else {}  # noqa: S302
            except (EOFError, ValueError, TypeError):
                loaded = {}
            known = self._loaded[root] = loaded if isinstance(loaded, dict) else {}
            return known

    def _keep(self, root: str, known: Known) -> None:
        with self._lock:
            blob = marshal.dumps(known)
            self._connect().execute(
                "INSERT OR REPLACE INTO trees (root, files) VALUES (?, ?)", (root, blob)
            )

    def digest(
        self, root: Root, selected: list[Selected], ignore: IgnoreMatcher | None
    ) -> tuple[str, dict[str, str]]:
        """The digest of what `selected` takes, and each entry it covers: path in the context
        -> `TYPE MODE UID:GID DIGEST` (a link: its target; a directory: -), which
        `polyarch build` keeps to tell which file made a step run again."""
        files: dict[str, str] = {}
        context = _key(root.path.rstrip("/") + "/")
        known = self._known(context)
        fresh = False
        # What is hashed, in order (one update at the end gives the same digest as one per
        # entry, and costs less on a context of 50,000 files).
        parts: list[str] = []
        for sel in selected:
            parts.append(f"S{sel.given}\0{sel.path}\0{int(sel.is_dir)}\0")
            for inner, parent_fd, name, st in _walk(root, sel, ignore):
                mode = st.st_mode
                kind_bits, perm = mode & _FMT, mode & 0o7777
                owner = f"{st.st_uid}:{st.st_gid}"
                parts.append(f"E{inner}\0{kind_bits}\0{perm}\0{owner}\0")
                rel = (f"{sel.path}/{inner}" if inner else sel.path).strip("/")
                content = "-"
                if kind_bits == stat.S_IFLNK:
                    content = os.readlink(name, dir_fd=parent_fd)
                    parts.append(content)
                elif kind_bits == stat.S_IFREG:
                    path = _key(rel)
                    seen = known.get(path)
                    stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                    if type(seen) is tuple and len(seen) == 5 and seen[:4] == stamp:
                        digest = str(seen[4])
                    else:
                        digest = _file_digest(parent_fd, name)
                        known[path] = (*stamp, digest)
                        fresh = True
                    parts.append(digest)
                    content = digest[:16]
                files[rel or "."] = f"{_KINDS.get(kind_bits, 'o')} {perm:04o} {owner} {content}"
        h = hashlib.sha256("".join(parts).encode("utf-8", "surrogateescape"))
        if fresh:
            self._keep(context, known)
        return "sha256:" + h.hexdigest(), files


def _key(path: str) -> str:
    """A path as the table keeps it: itself, or, for a name that is not UTF-8 (held with
    surrogate escapes, which sqlite cannot store), each byte that is not as `\\xNN` (a
    name that collides is told apart by its inode and times)."""
    if path.isascii():
        return path
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _file_digest(dir_fd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _walk(
    root: Root, sel: Selected, ignore: IgnoreMatcher | None
) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """(path below the source, fd of its directory, its name, lstat) for the source itself
    (a file: inner "") or everything below it (a directory), in byte order, as a copy walks."""
    if not sel.is_dir:
        head, _, leaf = sel.path.rpartition("/")
        fd = root.open_dir(head, create=False) if head else root.fd
        try:
            yield "", fd, leaf, os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        finally:
            if fd != root.fd:
                os.close(fd)
        return
    fd = root.open_dir(sel.path, create=False) if sel.path else root.fd
    base = posixpath.normpath(sel.path).lstrip("/") if sel.path else ""
    try:
        yield from _visit(fd, "" if base == "." else base, ignore)
    finally:
        if fd != root.fd:
            os.close(fd)


def _visit(
    top: int, base: str, ignore: IgnoreMatcher | None
) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """Everything below directory `top` (at `base` in the context), depth first in byte
    order. Each directory's `kept`: it is not ignored (checked on the way down, its parents
    with it), so only its entries' own paths need matching."""
    stack: list[tuple[int, str, bool, Iterator[os.DirEntry[str]]]] = [
        (top, "", False, _entries(top))
    ]
    try:
        while stack:
            fd, inner, kept, listing = stack[-1]
            entry = next(listing, None)
            if entry is None:
                stack.pop()
                if fd != top:
                    os.close(fd)
                continue
            rel = f"{inner}/{entry.name}" if inner else entry.name
            path = f"{base}/{rel}" if base else rel
            ignored = ignore is not None and ignore.matches(path, parents_kept=kept)
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if ignored and ignore is not None and not ignore.may_include_below(path):
                    continue
                if not ignored:
                    yield rel, fd, entry.name, st
                child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
                stack.append((child, rel, not ignored, _entries(child)))
            elif not ignored:
                yield rel, fd, entry.name, st
    finally:
        for fd, *_rest in stack:
            if fd != top:
                os.close(fd)


def _entries(fd: int) -> Iterator[os.DirEntry[str]]:
    """A directory's entries in byte order of their names."""
    with os.scandir(fd) as listing:
        entries = list(listing)
    if "".join(e.name for e in entries).isascii():  # byte order is name order then
        entries.sort(key=_NAME)
    else:
        entries.sort(key=lambda e: os.fsencode(e.name))
    return iter(entries)
