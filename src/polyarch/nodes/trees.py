"""Trees sent by content, both ends.

The client lists a directory (the context after `.dockerignore`, a named context, a layout):
directories, symlinks, and files by digest with their mode and mtime (which COPY reads). The
node asks for the files it lacks and keeps them by digest (`ROOT/nodes/files`, so a file sent
once is never sent again), then writes the entries under the place the tree names, never
outside it and never through a symlink it made itself."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from polyarch.digest import Digest
from polyarch.errors import BuildError
from polyarch.layers import Root
from polyarch.nodes.wire import Entry
from polyarch.patterns import IgnoreMatcher
from polyarch.store.blobs import ContentStore
from polyarch.worker.local.filecopy import CopyError, select_sources

# A file's digest as listed before, by its path: (size, mtime in ns, digest). A context asked
# for part by part is hashed once per file.
Known = dict[str, tuple[int, int, str]]


def used_files(context: Path, paths: Collection[str]) -> Callable[[str], bool] | None:
    """Which files of the context a build step needs, given the paths its copy or mount
    names (wildcards too), resolved here as the node resolves them. A path that does not
    resolve here adds nothing (the node then says what is missing, as a local build would).
    None: the whole context (a path names its root). Directories and symlinks are always
    listed (they cost no transfer), so a path through a symlink resolves there too."""
    prefixes: set[str] = set()
    try:
        with Root(context) as root:
            for path in sorted(paths):
                try:
                    selected = select_sources(root, [path], None)
                except CopyError:
                    continue
                prefixes.update(s.path.strip("/") for s in selected)
    except OSError:
        return None
    if "" in prefixes or "." in prefixes:
        return None

    def used(rel: str) -> bool:
        return any(rel == p or rel.startswith(p + "/") for p in prefixes)

    return used


def walk_context(context: Path, ignore: tuple[str, ...]) -> tuple[Entry, ...]:
    """The context after `.dockerignore` as one walk finds it: directories, symlinks, and
    files with their mode, size and mtime (not read: their digest is empty)."""
    matcher = IgnoreMatcher(ignore) if ignore else None
    out: list[Entry] = []
    for top, dirs, files in os.walk(context):
        rel_top = os.path.relpath(top, context)
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            rel = name if rel_top == "." else f"{rel_top}/{name}"
            if matcher is not None and matcher.matches(rel) and not matcher.has_exclusions:
                if name in dirs:
                    dirs.remove(name)
                continue
            path = Path(top) / name
            st = path.lstat()
            if path.is_symlink():
                out.append(Entry(rel, "symlink", target=str(path.readlink())))
            elif name in dirs:
                out.append(Entry(rel, "dir", st.st_mode & 0o7777))
            elif path.is_file() and not (matcher is not None and matcher.matches(rel)):
                out.append(Entry(rel, "file", st.st_mode & 0o7777, size=st.st_size,
                                 mtime=st.st_mtime_ns))  # fmt: skip
    return tuple(out)


def context_entries(
    context: Path,
    ignore: tuple[str, ...],
    used: Callable[[str], bool] | None = None,
    known: Known | None = None,
    walked: tuple[Entry, ...] | None = None,
) -> list[Entry]:
    """The context after `.dockerignore`, as the node rebuilds it: directories, symlinks, and
    files by digest (their mode and mtime kept, which COPY reads); with `used`, only the files
    it accepts (the others are not read). `known`: digests listed before, reused while a
    file's size and mtime are the same; `walked`: the context's walk, when one was made."""
    out: list[Entry] = []
    for entry in walked if walked is not None else walk_context(context, ignore):
        if entry.type != "file":
            out.append(entry)
            continue
        if used is not None and not used(entry.path):
            continue
        seen = known.get(entry.path) if known is not None else None
        if seen is not None and seen[:2] == (entry.size, entry.mtime):
            digest = seen[2]
        else:
            digest = _file_digest(context / entry.path)
            if known is not None:
                known[entry.path] = (entry.size, entry.mtime, digest)
        out.append(dataclasses.replace(entry, digest=digest))
    return out


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def needed(entries: tuple[Entry, ...], files: ContentStore) -> tuple[str, ...]:
    """The file digests of `entries` that `files` does not hold, each once."""
    files_listed = {e.digest for e in entries if e.type == "file"}
    return tuple(sorted(d for d in files_listed if not files.has(Digest.parse(d))))


def materialize(
    entries: tuple[Entry, ...], files: ContentStore, into: Path, made: dict[str, str]
) -> None:
    """The entries written under `into`, whose files `files` holds. `made` records what was
    written there before (path -> what it is): an entry the same as before is left as it
    is, so a context asked for part by part is written once per file."""
    into.mkdir(parents=True, exist_ok=True)
    inside = into.resolve()
    for entry in entries:
        rel = entry.path
        if rel.startswith("/") or ".." in rel.split("/") or not rel or "\0" in rel:
            raise BuildError(f"context path {rel!r} leaves the context")
        identity = f"{entry.type}:{entry.mode:o}:{entry.digest}:{entry.mtime}:{entry.target}"
        if made.get(rel) == identity:
            continue
        target = into / rel
        # Never through a symlink the listing made earlier: everything lands inside.
        if not target.parent.resolve().is_relative_to(inside):
            raise BuildError(f"context path {rel!r} goes through a symlink")
        if entry.type == "dir":
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, entry.mode)
        else:
            _clear(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.type == "symlink":
                target.symlink_to(entry.target)
            else:
                shutil.copyfile(files.path(Digest.parse(entry.digest)), target)
                os.chmod(target, entry.mode)
                os.utime(target, ns=(entry.mtime, entry.mtime))
        made[rel] = identity


def written(entries: tuple[Entry, ...], files: ContentStore, into: Path) -> None:
    """A tree written afresh under `into` (what was there before removed)."""
    shutil.rmtree(into, ignore_errors=True)
    materialize(entries, files, into, {})


def _clear(target: Path) -> None:
    """What was at `target` before (an earlier listing's entry), removed: a file is never
    written through a symlink."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


@dataclass
class NodeContext:
    """The main context as a node holds it during one connection: the files kept by digest,
    the directory the build reads (`scratch/context`), what was written there, and which
    selections the client was already asked for (each is asked once per connection: the
    context of one build does not change under it)."""

    files: ContentStore
    directory: Path
    made: dict[str, str] = field(default_factory=dict)
    asked: set[tuple[str, ...]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fresh(self, entries: tuple[Entry, ...]) -> None:
        """A context sent whole before a build (the Dockerfile and its ignore files): the
        directory made again from it, nothing asked for kept."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.made.clear()
        self.asked.clear()
        materialize(entries, self.files, self.directory, self.made)
