import pytest

from polyarch.patterns import IgnoreMatcher, ignore_file_for, read_patterns

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


@pytest.mark.parametrize("bad", ["[-x]", "[x-]", "[a-b-c]", "trailing\\", "!", "[", "a[]"])
def test_malformed_patterns_are_errors_as_in_moby(bad: str) -> None:
    from polyarch.errors import DockerfileError

    with pytest.raises(DockerfileError, match=r"\.dockerignore: "):
        read_patterns(f"ok\n{bad}\n")


def test_brackets_are_regex_classes_as_in_moby() -> None:
    matcher = IgnoreMatcher(read_patterns("[^a]x\n[!]y\nz[\\]]\n"))
    assert matcher.matches("bx") and not matcher.matches("ax")  # ^ negates
    assert matcher.matches("!y") and not matcher.matches("qy")  # ! is a plain character
    assert matcher.matches("z]")  # an escape inside a class


def test_leading_double_star_is_a_suffix_match() -> None:
    matcher = IgnoreMatcher(read_patterns("**foo\n"))
    assert matcher.matches("barfoo") and matcher.matches("a/foo")
