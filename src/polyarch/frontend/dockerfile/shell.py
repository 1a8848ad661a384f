"""BuildKit's shell-word lexer: quotes, escapes and `$var` expansion, without running a shell.

Behaviour follows `frontend/dockerfile/shell/lex.go`: single quotes take everything literally,
double quotes expand `$` and let the escape token escape `"`, `$` and itself; outside quotes the
escape token escapes any character. Expansion forms: `$a`, `${a}`, `${a:-w}`, `${a-w}`,
`${a:+w}`, `${a+w}`, `${a:?msg}`, `${a?msg}`, `${a#p}`, `${a##p}`, `${a%p}`, `${a%%p}`,
`${a/p/r}`, `${a//p/r}` (p a pattern of `*` and `?`; BuildKit takes brackets literally, and
its escape takes only `*`, `?` and itself). Words are split on unquoted white space after
expansion, as BuildKit does (an expansion's spaces split words too). `<<` followed by white
space is glued to the next word, as BuildKit's lexer does for heredocs (`RUN << EOF`).
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
        skip_process_quotes: bool = False,
    ) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.skip_process_quotes = skip_process_quotes

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand and unquote, keeping white space: one word in, one string out."""
        return _Run(self, word, env).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand, unquote and split on unquoted white space."""
        return _Run(self, word, env).process()[1]

    def process_word_matches(
        self, word: str, env: Mapping[str, str]
    ) -> tuple[str, set[str], set[str]]:
        """`process_word`, with the names found in `env` and those not found (BuildKit's
        ProcessWordWithMatches: every lookup counts, `${x:-default}` included)."""
        run = _Run(self, word, env)
        result = run.process()[0]
        return result, run.matched, run.unmatched

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
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

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
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
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
            quotes = not self.lx.skip_process_quotes
            if ch == "$":
                text = self.dollar()
                result.append(text)
                words.add_string(text)
            elif ch == "<":
                text = self.possible_heredoc()
                result.append(text)
                words.add_raw_string(text)
            elif ch == "'" and quotes:
                text = self.single_quote()
                result.append(text)
                words.add_raw_string(text)
            elif ch == '"' and quotes:
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

    def possible_heredoc(self) -> str:
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        space = []
        while self.peek() in ("\t", "\r", " ") and self.peek() != _EOF:
            space.append(self.next())
        return "<<" + "".join(space)

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
        if ch == "#":
            return _trim_prefix(word, value, greedy)
        return _trim_prefix(_reverse_pattern(word), value[::-1], greedy)[::-1]

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern = self.stop_on("/", raw_escapes=True)[0]
        except ExpansionError:
            if self.peek() == _EOF:
                raise ExpansionError("syntax error: missing '/' in ${}") from None
            raise
        replacement = self.word_until("}", raw_escapes=True)
        value, found = self.lookup(name)
        if not found and self.lx.skip_unset:
            slashes = "//" if replace_all else "/"
            return "${" + name + slashes + pattern + "/" + replacement + "}"
        regex = _pattern(pattern, greedy=True, anchored=False)
        if replace_all:
            return regex.sub(lambda m: _go_expand(replacement, m), value)
        hit = regex.search(value)
        if hit is None:
            return value
        return value[: hit.start()] + replacement + value[hit.end() :]


_REGEX_SPECIAL = frozenset("[]{}.+()|^$")


def _pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """BuildKit's convertShellPatternToRegex: `*` any string (shortest unless greedy), `?` one
    character, `\\` escapes `*`, `?` and itself only (`\\}` and `\\/` are the characters);
    everything else, brackets included, is literal."""
    out = ["^"] if anchored else []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/"):
                continue
            i += 1
            if following not in ("*", "?", "\\"):
                raise ExpansionError(f"invalid pattern ({pattern}) in substitution: invalid "
                                     f"escape '\\{following}'")  # fmt: skip
            out.append(re.escape(following))
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))  # no DOTALL: Go's `.` does not match a newline


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    found = _pattern(pattern, greedy=greedy, anchored=True).match(value)
    return value[found.end() :] if found else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each escape before the character it escapes."""
    chars = list(pattern)
    out = [""] * len(chars)
    last = len(chars) - 1
    i = 0
    while i <= last:
        ch = chars[i]
        if ch == "\\" and i != last:
            out[last - i - 1] = ch
            out[last - i] = chars[i + 1]
            i += 2
        else:
            out[last - i] = ch
            i += 1
    return "".join(out)


def _go_expand(template: str, match: re.Match[str]) -> str:
    """Go's Regexp.ReplaceAllString template: `$$` is `$`, `$0`/`${0}` the match, other
    names (no groups here) expand to nothing."""
    out: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch != "$" or i + 1 >= len(template):
            out.append(ch)
            i += 1
            continue
        following = template[i + 1]
        if following == "$":
            out.append("$")
            i += 2
            continue
        if following == "{":
            end = template.find("}", i + 2)
            name = template[i + 2 : end] if end > 0 else ""
            if end < 0 or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                out.append(ch)
                i += 1
                continue
            i = end + 1
        else:
            named = re.match(r"[A-Za-z0-9_]+", template[i + 1 :])
            if named is None:
                out.append(ch)
                i += 1
                continue
            name = named.group(0)
            i += 1 + len(name)
        if name == "0":
            out.append(match.group(0))
    return "".join(out)
