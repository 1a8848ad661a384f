"""The digest of what a copy takes from a build context, fast on large contexts.

Only what the copy's sources select is read (after the ignore rules). A file's digest is
reused while its inode, size, modification and change times are unchanged (as BuildKit's
content hash does), from a small sqlite table in the workspace; anything else is hashed again.
The walk goes through directory file descriptors (`openat`, no symlink followed), one
`scandir` per directory.

The digest covers, for each source, how it was written and what it resolved to, then every
entry below it: its path, type, permission bits, owners, and a link's target or a file's
content digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
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


class ContextHasher:
    def __init__(self, db: Path) -> None:
        self._path = db
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = sqlite3.connect(self._path, check_same_thread=False,
                                           isolation_level=None)  # fmt: skip
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, ino INTEGER, "
                    "size INTEGER, mtime INTEGER, ctime INTEGER, digest TEXT)"
                )
            except sqlite3.DatabaseError:
                # A damaged table of file digests is only a cache: start a new one.
                with contextlib.suppress(OSError):
                    self._path.unlink()
                self._db = sqlite3.connect(self._path, check_same_thread=False,
                                           isolation_level=None)  # fmt: skip
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, ino INTEGER, "
                    "size INTEGER, mtime INTEGER, ctime INTEGER, digest TEXT)"
                )
        return self._db

    def digest(
        self, root: Root, selected: list[Selected], ignore: IgnoreMatcher | None
    ) -> tuple[str, dict[str, str]]:
        """The digest of what `selected` takes, and each entry it covers: path in the context
        -> `TYPE MODE UID:GID DIGEST` (a link: its target; a directory: -), which
        `polyarch build` keeps to tell which file made a step run again."""
        files: dict[str, str] = {}
        with self._lock:
            db = self._connect()
            prefix = root.path.rstrip("/") + "/"
            known = {
                row[0]: row[1:]
                for row in db.execute(
                    "SELECT path, ino, size, mtime, ctime, digest FROM files "
                    "WHERE path >= ? AND path < ?",
                    (prefix, prefix[:-1] + "0"),
                )
            }
        fresh: list[tuple[str, int, int, int, int, str]] = []
        h = hashlib.sha256()
        for sel in selected:
            h.update(f"S{sel.given}\0{sel.path}\0{int(sel.is_dir)}\0".encode())
            for inner, parent_fd, name, st in _walk(root, sel, ignore):
                h.update(
                    f"E{inner}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                    f"{st.st_uid}:{st.st_gid}\0".encode()
                )
                rel = (f"{sel.path}/{inner}" if inner else sel.path).strip("/")
                content = "-"
                if stat.S_ISLNK(st.st_mode):
                    content = os.readlink(name, dir_fd=parent_fd)
                    h.update(content.encode())
                elif stat.S_ISREG(st.st_mode):
                    path = prefix + rel
                    seen = known.get(path)
                    stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                    if seen is not None and tuple(seen[:4]) == stamp:
                        digest = str(seen[4])
                    else:
                        digest = _file_digest(parent_fd, name)
                        fresh.append((path, *stamp, digest))
                    h.update(digest.encode())
                    content = digest[:16]
                kind = _KINDS.get(stat.S_IFMT(st.st_mode), "o")
                files[rel or "."] = (f"{kind} {stat.S_IMODE(st.st_mode):04o} "
                                     f"{st.st_uid}:{st.st_gid} {content}")  # fmt: skip
        if fresh:
            with self._lock:
                db = self._connect()
                db.execute("BEGIN")
                db.executemany(
                    "INSERT OR REPLACE INTO files (path, ino, size, mtime, ctime, digest) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    fresh,
                )
                db.execute("COMMIT")
        return "sha256:" + h.hexdigest(), files


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
    try:
        yield from _visit(fd, sel.path, "", ignore)
    finally:
        if fd != root.fd:
            os.close(fd)


def _visit(
    fd: int, base: str, inner: str, ignore: IgnoreMatcher | None
) -> Iterator[tuple[str, int, str, os.stat_result]]:
    with os.scandir(fd) as listing:
        entries = sorted(listing, key=lambda e: os.fsencode(e.name))
    for entry in entries:
        rel = f"{inner}/{entry.name}" if inner else entry.name
        path = f"{base}/{rel}" if base else rel
        ignored = ignore is not None and ignore.matches(path)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if ignored and ignore is not None and not ignore.may_include_below(path):
                continue
            if not ignored:
                yield rel, fd, entry.name, st
            child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                            | os.O_CLOEXEC, dir_fd=fd)  # fmt: skip
            try:
                yield from _visit(child, base, rel, ignore)
            finally:
                os.close(child)
        elif not ignored:
            yield rel, fd, entry.name, st
