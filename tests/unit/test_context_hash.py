"""The digest of what a copy takes from a build context (worker/local/context.py): the walk
takes exactly what the ignore rules leave, file digests are reused while a file is unchanged,
and names that are not UTF-8 are hashed and remembered like any other."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from polyarch.layers import Root
from polyarch.patterns import IgnoreMatcher
from polyarch.worker.local import context
from polyarch.worker.local.filecopy import CopyError, select_sources

TREE = ("a/b/c.txt", "a/b/d.js", "a/e.txt", "a/keep/f.txt", "g.txt", "h/i/j/k.txt",
        "h/i/l.md", "node_modules/m/n.js", "node_modules/m/o.txt", ".git/HEAD")  # fmt: skip
PATTERNS = [
    [],
    [".git"],
    ["a"],
    ["a/b"],
    ["**/*.txt"],
    ["*/b", "h/**"],
    ["a", "!a/keep"],
    ["a", "!a/keep/f.txt", "node_modules/*/o.txt"],
    ["**", "!h/i/l.md"],
    ["h/i/*", "!h/i/j"],
]


def _tree(root: Path) -> None:
    for name in TREE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


@pytest.mark.parametrize("patterns", PATTERNS, ids=[",".join(p) or "none" for p in PATTERNS])
@pytest.mark.parametrize("source", [".", "a", "h/i"])
def test_the_walk_takes_what_the_rules_leave(tmp_path: Path, patterns: list[str],
                                             source: str) -> None:  # fmt: skip
    _tree(tmp_path)
    matcher = IgnoreMatcher(patterns)
    expected = set()
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for name in dirnames + filenames:
            path = os.path.relpath(os.path.join(dirpath, name), tmp_path)
            inside = source == "." or path.startswith(source + "/")
            if inside and not matcher.matches(path):  # the full check, parents and all
                expected.add(path)
    with Root(tmp_path) as root:
        try:
            selected = select_sources(root, [source], matcher)
        except CopyError:  # a source the rules ignore whole: nothing to walk
            assert source != "."
            return
        walked = {f"{source}/{inner}".removeprefix("./") for sel in selected
                  for inner, _fd, _name, _st in context._walk(root, sel, matcher)}  # fmt: skip
    assert walked == expected


def test_unchanged_files_are_not_read_again_whatever_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "ctx"
    tree.mkdir()
    odd = os.fsdecode(b"caf\xe9.txt")  # Latin-1, not UTF-8: held with a surrogate escape
    (tree / odd).write_text("one")
    (tree / os.fsdecode(b"d\xff")).mkdir()
    (tree / os.fsdecode(b"d\xff") / "\u00e9t\u00e9").write_text("two")
    (tree / "plain.txt").write_text("three")
    read: list[str] = []
    real = context._file_digest

    def counting(dir_fd: int, name: str) -> str:
        read.append(name)
        return real(dir_fd, name)

    monkeypatch.setattr(context, "_file_digest", counting)
    db = tmp_path / "files.db"
    matcher = IgnoreMatcher([])

    def digest() -> tuple[str, dict[str, str]]:
        with Root(tree) as root:
            return context.ContextHasher(db).digest(root, select_sources(root, ["."], matcher),
                                                    matcher)  # fmt: skip

    first, files = digest()
    assert sorted(read) == sorted([odd, "\u00e9t\u00e9", "plain.txt"])
    assert files[odd].startswith("f ")
    read.clear()
    assert digest()[0] == first and read == []  # every digest reused, odd names too
    (tree / odd).write_text("changed")
    changed, _files = digest()
    assert read == [odd] and changed != first


def test_a_damaged_table_of_digests_is_only_a_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    tree = tmp_path / "ctx"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    db = tmp_path / "files.db"
    matcher = IgnoreMatcher([])

    def digest() -> str:
        with Root(tree) as root:
            return context.ContextHasher(db).digest(root, select_sources(root, ["."], matcher),
                                                    matcher)[0]  # fmt: skip

    first = digest()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE trees SET files = ?", (b"\x00garbage",))
    read: list[str] = []
    real = context._file_digest
    monkeypatch.setattr(context, "_file_digest",
                        lambda fd, name: read.append(name) or real(fd, name))  # fmt: skip
    assert digest() == first and read == ["a.txt"]  # read again, the same digest
    db.write_bytes(b"not a database at all")
    assert digest() == first
