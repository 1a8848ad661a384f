import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyarch.frontend.dockerfile.shell import ExpansionError, ShellLexer

ENV = {"a": "hello world", "e": "", "p": "/usr/local/bin/python3.11", "x": "a.b.c.d"}
LEX = ShellLexer()


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$a", "hello world"),
        ("${a}", "hello world"),
        ("x${a}y", "xhello worldy"),
        ("'$a'", "$a"),
        ('"$a"', "hello world"),
        ("\\$a", "$a"),
        ("$unset", ""),
        ("${unset:-dflt}", "dflt"),
        ("${e:-dflt}", "dflt"),
        ("${e-dflt}", ""),
        ("${unset-dflt}", "dflt"),
        ("${a:+alt}", "alt"),
        ("${e:+alt}", ""),
        ("${e+alt}", "alt"),
        ("${unset+alt}", ""),
        ("${a:?must}", "hello world"),
        ("${e?must}", ""),
        ("${p#*/}", "usr/local/bin/python3.11"),
        ("${p##*/}", "python3.11"),
        ("${p%/*}", "/usr/local/bin"),
        ("${p%%/*}", ""),
        ("${x%.*}", "a.b.c"),
        ("${x%%.*}", "a"),
        ("${x#?.}", "b.c.d"),
        ("${x/./-}", "a-b.c.d"),
        ("${x//./-}", "a-b-c-d"),
        ("${x//[bc]/X}", "a.b.c.d"),  # BuildKit takes brackets literally
        ("${x//./\\*}", "a\\*b\\*c\\*d"),
        ("${x/#a/X}", "a.b.c.d"),
        ("${unset:-${a}}", "hello world"),
        ('"a\\"b"', 'a"b'),
        ('"a\\b"', "a\\b"),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("$1", ""),
        ("$$", ""),
        ("${a}${e}${a}", "hello worldhello world"),
    ],
)
def test_expansion(word: str, expected: str) -> None:
    assert LEX.process_word(word, ENV) == expected


def test_words_split_after_expansion_unless_quoted() -> None:
    assert LEX.process_words("$a b", ENV) == ["hello", "world", "b"]
    assert LEX.process_words('"$a" b', ENV) == ["hello world", "b"]
    assert LEX.process_words("'' x", ENV) == ["x"]


@pytest.mark.parametrize(
    ("word", "fragment"),
    [
        ("${unset:?must be set}", "unset: must be set"),
        ("${unset?}", "unset: is not allowed to be unset"),
        ("${e:?}", "e: is not allowed to be empty"),
        ("${a", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:a}", "bad substitution"),
        ("${a:#x}", "unsupported modifier (:#)"),
        ("${a!}", "unsupported modifier (!)"),
        ("'open", "matching single-quote"),
        ('"open', "matching double-quote"),
    ],
)
def test_expansion_errors(word: str, fragment: str) -> None:
    with pytest.raises(ExpansionError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        LEX.process_word(word, ENV)


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("${v#[}", {"v": "[x]"}, "x]"),  # brackets are literal: no exception, no class
        ("${v%]}", {"v": "[x]"}, "[x"),
        ("${v#[a-z]}", {"v": "bcd"}, "bcd"),
        ("${v#[a-z]}", {"v": "[a-z]x"}, "x"),
        ("${v##*[}", {"v": "a[b[c"}, "c"),
        ("${v#\\*}", {"v": "*x"}, "x"),
        ("${v%\\?}", {"v": "a?"}, "a"),
        ("${v#a*}", {"v": "abcabc"}, "bcabc"),  # shortest
        ("${v##a*c}", {"v": "abcabc"}, ""),  # longest
        ("${v%b*}", {"v": "abcabc"}, "abca"),
        ("${v%%b*}", {"v": "abcabc"}, "a"),
        ("${v//b/$$}", {"v": "abc"}, "ac"),  # `$$` is the special parameter `$`: unset
    ],
)
def test_patterns_as_buildkit(word: str, env: dict[str, str], expected: str) -> None:
    assert LEX.process_word(word, env) == expected


def test_pattern_escapes_other_than_wildcards_are_errors() -> None:
    with pytest.raises(ExpansionError, match="invalid escape"):
        LEX.process_word("${v#\\a}", {"v": "a"})


def test_heredoc_marker_glues_to_its_word() -> None:
    assert LEX.process_words("cat << EOF > out", {}) == ["cat", "<< EOF", ">", "out"]
    assert LEX.process_words("a < b", {}) == ["a", "<", "b"]


def test_skip_process_quotes_keeps_quotes_and_expands() -> None:
    lexer = ShellLexer(skip_process_quotes=True)
    assert lexer.process_word("'$a' \"$a\" \\$", {"a": "x"}) == "'x' \"x\" $"


def test_backtick_escape() -> None:
    assert ShellLexer("`").process_word("a` b`$x c:\\d", {"x": "X"}) == "a b$x c:\\d"


def test_skip_unset_keeps_references() -> None:
    lexer = ShellLexer(skip_unset=True)
    assert lexer.process_word("$u ${u} ${u:-d} ${u#p}", {}) == "$u ${u} ${u:-d} ${u#p}"


def test_names_used() -> None:
    assert LEX.names_used("echo $TARGETARCH ${BUILDOS:-x} '$NOT' \\$NOR") == {
        "TARGETARCH",
        "BUILDOS",
    }


_plain = st.text(alphabet=st.characters(blacklist_characters="'\\$\""), max_size=30)


@given(_plain)
def test_single_quotes_are_literal(text: str) -> None:
    assert LEX.process_word(f"'{text}'", {"a": "x"}) == text


@given(st.text(max_size=30))
def test_escaping_every_character_gives_it_back(text: str) -> None:
    assert LEX.process_word("".join("\\" + ch for ch in text), {}) == text


@given(st.text(alphabet=st.characters(blacklist_characters='"\\$'), max_size=30), _plain)
def test_double_quoted_variable_keeps_its_value(before: str, value: str) -> None:
    assert LEX.process_word(f'"{before}$v"', {"v": value}) == before + value


@given(st.text(max_size=20), st.text(max_size=20))
def test_default_only_when_unset_or_empty(value: str, default: str) -> None:
    safe = default.replace("\\", "\\\\").replace("}", "\\}").replace("$", "\\$")
    safe = safe.replace('"', '\\"').replace("'", "\\'")
    got = LEX.process_word("${v:-" + safe + "}", {"v": value})
    assert got == (value if value else default)
