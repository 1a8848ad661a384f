"""A copy's directory times come from what it copies, never from the clock: a directory copied
inside a directory keeps its source's time once its entries are in (BuildKit copies a
directory's info after its contents), and with --parents the directories on the way take
their source's time (or keep theirs when they were there). Two copies of the same tree, a
second apart, are the same bytes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from polyarch.layers import Root
from polyarch.worker.local.filecopy import CopyOptions, copy_sources, select_sources

T = 1_600_000_000_000_000_000


def tree(top: Path) -> None:
    for rel, k in (("b/c.txt", 5), ("b/d/e.txt", 3), ("b/d/f/g.txt", 2), ("n/o/p.md", 7)):
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
        os.utime(path, ns=(T + k, T + k))
    for rel, k in (("b/d/f", 1), ("b/d", 6), ("b", 4), ("n/o", 2), ("n", 8)):
        os.utime(top / rel, ns=(T + k, T + k))


def times(top: Path) -> dict[str, int]:
    return {str(p.relative_to(top)): p.lstat().st_mtime_ns for p in sorted(top.rglob("*"))}


def copy(src: Path, dest: Path, sources: list[str], to: str, options: CopyOptions) -> None:
    with Root(src) as source, Root(dest) as target:
        selected = select_sources(source, sources, None)
        copy_sources(source, selected, target, to, options, [], None, sources)


def test_directories_inside_a_copied_directory_keep_their_source_times(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree(src)
    first, second = tmp_path / "one", tmp_path / "two"
    for dest in (first, second):
        dest.mkdir()
        copy(src, dest, ["b"], "/out/", CopyOptions())
        time.sleep(0.01)
    got = times(first)
    assert got["out/d"] == T + 6 and got["out/d/f"] == T + 1  # not the clock
    assert got == times(second)


def test_parents_directories_take_their_source_times(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree(src)
    dest = tmp_path / "dest"
    (dest / "out" / "n").mkdir(parents=True)  # there before: keeps its time
    os.utime(dest / "out" / "n", ns=(5, 5))
    copy(src, dest, ["n/o/p.md", "b"], "/out/", CopyOptions(parents=True))
    got = times(dest)
    assert got["out/n"] == 5
    assert got["out/n/o"] == T + 2  # made by the copy: its source's time
    assert got["out/b"] == T + 4 and got["out/b/d"] == T + 6
    assert (dest / "out" / "n" / "o" / "p.md").read_text() == "n/o/p.md"
