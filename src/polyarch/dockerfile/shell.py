"""BuildKit's shell-word lexer: quotes, escapes and `$var` expansion, without running a shell.

Behaviour follows `frontend/dockerfile/shell/lex.go`: single quotes take everything literally,
double quotes expand `$` and let the escape token escape `"`, `$` and itself; outside quotes the
escape token escapes any character. Expansion forms: `$a`, `${a}`, `${a:-w}`, `${a-w}`,
`${a:+w}`, `${a+w}`, `${a:?msg}`, `${a?msg}`, `${a#p}`, `${a##p}`, `${a%p}`, `${a%%p}`,
`${a/p/r}`, `${a//p/r}` (p a shell pattern: `*`, `?`, `[...]`). Words are split on unquoted
white space after expansion, as BuildKit does (an expansion's spaces split words too).
Pure: the caller passes the variables.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from polyarch.errors import PolyarchError

_EOF = ""
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
# Go's unicode.IsSpace, which differs from str.isspace on \\x1c-\\x1f.
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                      "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")  # fmt: skip


def go_is_space(ch: str) -> bool:
    return ch in _GO_SPACE


class ExpansionError(PolyarchError):
    """A word whose quotes or `${...}` cannot be processed."""


@dataclass
class _Words:
    word: str = ""
    words: list[str] | None = None
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if go_is_space(ch):
            if self.in_word and self.word:
                self._push()
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def _push(self) -> None:
        if self.words is None:
            self.words = []
        self.words.append(self.word)
        self.word = ""
        self.in_word = False

    def result(self) -> list[str]:
        if self.word:
            self._push()
        return self.words or []


class ShellLexer:
    """One lexer per escape token; options as BuildKit's `shell.Lex` fields."""

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_unset: bool = False,
    ) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand and unquote, keeping white space: one word in, one string out."""
        return _Run(self, word, env).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand, unquote and split on unquoted white space."""
        return _Run(self, word, env).process()[1]

    def names_used(self, word: str) -> set[str]:
        """Variable names the word refers to (expanded or not), for cache keys and analysis."""
        recorder = _Recorder()
        with contextlib.suppress(ExpansionError):
            _Run(self, word, recorder).process()
        return recorder.asked


class _Recorder(dict[str, str]):
    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return False


class _Run:
    def __init__(self, lexer: ShellLexer, source: str, env: Mapping[str, str]) -> None:
        self.lx = lexer
        self.source = source
        self.text = source
        self.pos = 0
        self.env = env

    # scanner ----------------------------------------------------------------------------

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        if self.pos >= len(self.text):
            return _EOF
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    # grammar ----------------------------------------------------------------------------

    def process(self) -> tuple[str, list[str]]:
        try:
            return self.stop_on(None, raw_escapes=self.lx.raw_escapes)
        except ExpansionError as exc:
            raise ExpansionError(f"failed to process {self.source!r}: {exc}") from None

    def stop_on(self, stop: str | None, *, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek() != _EOF:
            ch = self.peek()
            if stop is not None and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "$":
                text = self.dollar()
                result.append(text)
                words.add_string(text)
            elif ch == "'":
                text = self.single_quote()
                result.append(text)
                words.add_raw_string(text)
            elif ch == '"':
                text = self.double_quote()
                result.append(text)
                words.add_raw_string(text)
            else:
                ch = self.next()
                if ch == self.lx.escape:
                    if raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop is not None:
            raise ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.lx.raw_quotes else []
        while True:
            ch = self.next()
            if ch == _EOF:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.lx.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        opening = self.next()
        out = [opening] if self.lx.raw_quotes else []
        while True:
            peek = self.peek()
            if peek == _EOF:
                raise ExpansionError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if peek == '"':
                closing = self.next()
                if self.lx.raw_quotes:
                    out.append(closing)
                return "".join(out)
            if peek == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.lx.escape:
                if self.lx.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue
                if following in ('"', "$", self.lx.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        chars: list[str] = []
        while self.peek() != _EOF:
            ch = self.peek()
            if not chars and ch.isdigit():
                while self.peek() != _EOF and self.peek().isdigit():
                    chars.append(self.next())
                return "".join(chars)
            if not chars and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdigit() or ch == "_"):
                break
            chars.append(self.next())
        return "".join(chars)

    def dollar(self) -> str:
        self.next()  # the $
        if self.peek() == "{":
            self.next()
            return self.braced()
        name = self.name()
        if not name:
            return "$"
        value, found = self.lookup(name)
        if not found and self.lx.skip_unset:
            return "$" + name
        return value

    def word_until(self, stop: str, *, raw_escapes: bool) -> str:
        try:
            return self.stop_on(stop, raw_escapes=raw_escapes)[0]
        except ExpansionError:
            if self.peek() == _EOF:
                raise ExpansionError("syntax error: missing '}'") from None
            raise

    def braced(self) -> str:
        first = self.peek()
        if first == _EOF:
            raise ExpansionError("syntax error: missing '}'")
        if first in "{}:":
            raise ExpansionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        modifier = ch
        if ch == "}":
            value, found = self.lookup(name)
            if not found and self.lx.skip_unset:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self.replace(name)
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier += ch
        if ch not in ("+", "-", "?", "#", "%"):
            if ch == _EOF:
                raise ExpansionError("syntax error: missing '}'")
            raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        pattern_op = ch in "#%"
        if null_is_unset and pattern_op:
            raise ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        word = self.word_until("}", raw_escapes=pattern_op)
        value, found = self.lookup(name)
        if not found and self.lx.skip_unset:
            return "${" + name + modifier + word + "}"
        empty = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not found:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        pattern = _glob(word, self.lx.escape)
        lengths = range(len(value), -1, -1) if greedy else range(len(value) + 1)
        for n in lengths:
            if ch == "#" and pattern.fullmatch(value[:n]):
                return value[n:]
            if ch == "%" and pattern.fullmatch(value[len(value) - n :]):
                return value[: len(value) - n]
        return value

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern = self.word_until("/", raw_escapes=True)
        replacement = self.word_until("}", raw_escapes=True)
        value, found = self.lookup(name)
        if not found and self.lx.skip_unset:
            slashes = "//" if replace_all else "/"
            return "${" + name + slashes + pattern + "/" + replacement + "}"
        regex = re.compile(_glob(pattern, self.lx.escape).pattern, re.DOTALL)
        literal = replacement.replace("\\", "\\\\")
        return regex.sub(literal, value, count=0 if replace_all else 1)


def _glob(pattern: str, escape: str) -> re.Pattern[str]:
    """A shell pattern (`*`, `?`, `[...]`, escaped characters literal) as a regex (greedy)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find(
                "]", i + 2 if i + 1 < len(pattern) and pattern[i + 1] in "!^" else i + 1
            )
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("]", "\\]")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)
