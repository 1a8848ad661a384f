import pytest

from polyarch.dockerfile.ignore import IgnoreMatcher, ignore_file_for, read_patterns

RULES = """\ufeff# comment
node_modules
**/*.log
!important.log
/dist/
./build
*.md
!README.md
docs/**/secret?.txt
[ab]c
  spaced.txt
"""


def test_reading_cleans_patterns() -> None:
    assert read_patterns(RULES) == (
        "node_modules", "**/*.log", "!important.log", "dist", "build", "*.md", "!README.md",
        "docs/**/secret?.txt", "[ab]c", "spaced.txt",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("node_modules", True),
        ("node_modules/a/b.js", True),  # a parent directory matches
        ("src/node_modules/x", False),  # patterns are anchored at the context root
        ("x.log", True),
        ("deep/down/x.log", True),  # **/ also matches zero directories
        ("important.log", False),  # exception, later rule wins
        ("dist/app.js", True),
        ("build/out", True),
        ("README.md", False),
        ("CHANGES.md", True),
        ("sub/CHANGES.md", False),  # * does not cross /
        ("docs/secret1.txt", True),
        ("docs/a/b/secret2.txt", True),
        ("docs/a/secret10.txt", False),  # ? is exactly one character
        ("ac", True),
        ("cc", False),
        ("spaced.txt", True),
        ("./README.md", False),
        ("/CHANGES.md", True),
        ("src/main.js", False),
    ],
)
def test_matching(path: str, ignored: bool) -> None:
    assert IgnoreMatcher(read_patterns(RULES)).matches(path) is ignored


def test_exception_under_ignored_directory() -> None:
    matcher = IgnoreMatcher(read_patterns("vendor\n!vendor/keep.txt\n"))
    assert matcher.matches("vendor/drop.txt")
    assert not matcher.matches("vendor/keep.txt")
    assert matcher.may_include_below("vendor")
    assert not IgnoreMatcher(read_patterns("vendor\n")).may_include_below("vendor")


def test_escapes_and_double_star_at_end() -> None:
    matcher = IgnoreMatcher(read_patterns("a\\*b\nlogs/**\n"))
    assert matcher.matches("a*b") and not matcher.matches("axb")
    assert matcher.matches("logs/x/y") and matcher.matches("logs/z")


def test_ignore_file_lookup_order() -> None:
    assert ignore_file_for("build/app.Dockerfile", "ctx") == (
        "build/app.Dockerfile.dockerignore",
        "ctx/.dockerignore",
    )
