"""Git references as BuildKit reads them (cases after dfgitutil's own tests)."""

from __future__ import annotations

import pytest

from polyarch.frontend.gitref import GitRef, GitRefError, parse_git_ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://github.com/moby/buildkit.git",
         GitRef("https://github.com/moby/buildkit.git")),
        ("https://github.com/moby/buildkit.git#v0.10.1:docs",
         GitRef("https://github.com/moby/buildkit.git", "v0.10.1", "docs")),
        ("https://github.com/moby/buildkit.git#:docs/../docs/",
         GitRef("https://github.com/moby/buildkit.git", "", "docs")),
        ("git@github.com:moby/buildkit.git#main",
         GitRef("git@github.com:moby/buildkit.git", "main")),
        ("ssh://git@example.com:2222/r.git#abc1234",
         GitRef("ssh://git@example.com:2222/r.git", "abc1234")),
        ("git://127.0.0.1:9418/r.git",
         GitRef("git://127.0.0.1:9418/r.git", unencrypted=True)),
        ("http://example.com/r.git#x",
         GitRef("http://example.com/r.git", "x", unencrypted=True)),
        ("https://example.com/r.git?tag=v1&subdir=a/b&keep-git-dir",
         GitRef("https://example.com/r.git", "refs/tags/v1", "a/b", keep_git_dir=True)),
        ("https://example.com/r.git?branch=dev&submodules=false&checksum=abcdef0",
         GitRef("https://example.com/r.git", "refs/heads/dev", "", "abcdef0", None, False)),
        ("https://example.com/r.git?ref=main#main",
         GitRef("https://example.com/r.git", "main")),
    ],
)  # fmt: skip
def test_git_refs(text: str, expected: GitRef) -> None:
    assert parse_git_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    ["./r.git", "../r.git", "r.git", "/abs/r.git", "https://example.com/archive.tar.gz",
     "https://example.com/r", "ftp://example.com/r.git", "file:///srv/r.git", "example.com/r.git"],
)  # fmt: skip
def test_not_git_refs(text: str) -> None:
    assert parse_git_ref(text) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://example.com/r.git?ref=a#b", "ref conflicts"),
        ("https://example.com/r.git?tag=a&branch=b", "mutually exclusive"),
        ("https://example.com/r.git?subdir=a#:b", "subdir conflicts"),
        ("https://example.com/r.git?keep-git-dir=maybe", "invalid keep-git-dir"),
        ("https://example.com/r.git?ref=", "has no value"),
        ("https://example.com/r.git?ref=a&ref=b", "multiple values"),
        ("https://example.com/r.git?mtime=commit", "unknown query 'mtime'"),
        ("https://example.com/r.git?checksum=zzz", "checksum wants a commit"),
    ],
)
def test_bad_git_refs(text: str, message: str) -> None:
    with pytest.raises(GitRefError, match=message):
        parse_git_ref(text)


def test_short_name() -> None:
    ref = parse_git_ref("https://github.com/foo/bar.git#baz/qux:quux/quuz")
    assert ref is not None and ref.short_name == "bar" and ref.ref == "baz/qux"
    assert ref.subdir == "quux/quuz"
