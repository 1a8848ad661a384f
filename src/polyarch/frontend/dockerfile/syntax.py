"""Dockerfile text to syntax nodes, exactly as BuildKit's `frontend/dockerfile/parser` does.

Parser directives at the top (`# syntax=`, `# escape=`, `# check=`; each at most once; the first
line that is not one ends them), the escape token (`\\` or `` ` ``) as line continuation,
comment lines (also inside a continuation), empty continuation lines (a warning), instruction
names in any case, per-instruction flags (`--name=value` words before the arguments), the
argument forms of each instruction (JSON array or shell form, name=value lists, words), and
heredocs (`<<EOF`, `<<-EOF`, quoted names, several per line, file descriptor prefixes) for
RUN, COPY and ADD in shell form.

Each node keeps BuildKit's fields: `cmd`, `sub_cmd`, `json`, `original`, `start_line`,
`end_line`, `flags`, `value`, `heredocs`, and the comment lines right before it (`comments`,
BuildKit's PrevComment: where `# check=` overrides and descriptions are read). A line longer than
BuildKit's scanner takes (65,535 bytes) is refused as BuildKit refuses it. The `syntax` and
`check` directives are found as BuildKit's `ParseDirective` finds them (after a `#!` line too;
the value ends at its first space, so `# syntax=docker/dockerfile:1 // note` names
`docker/dockerfile:1`). Pure: the caller reads the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from polyarch.errors import DockerfileError
from polyarch.frontend.dockerfile.shell import ExpansionError, ShellLexer, go_is_space

INSTRUCTIONS: Final = frozenset(
    {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
     "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
)  # fmt: skip
_HEREDOC_COMMANDS: Final = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVES: Final = frozenset({"syntax", "escape", "check"})
_DIRECTIVE_RE: Final = re.compile(
    r"\A#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z"
)
_DIRECTIVE_BODY: Final = re.compile(
    r"\A([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z"
)
_HEREDOC_RE: Final = re.compile(r"\A(\d*)<<(-?)\s*([^<]*)\Z")
_SPLIT_WS: Final = re.compile(r"[\t\v\f\r ]+")
_BOM: Final = "\ufeff"
MAX_LINE_BYTES: Final = 65535  # bufio.MaxScanTokenSize - 1: the longest line BuildKit reads
_JSON_SPACE: Final = " \t\n\r"


@dataclass(frozen=True, slots=True)
class Heredoc:
    name: str
    file_descriptor: int
    content: str
    expand: bool = True  # False when any part of the name was quoted
    chomp: bool = False  # <<- : leading tabs are stripped from the content when used

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "file_descriptor": self.file_descriptor, "content": self.content}


@dataclass(frozen=True, slots=True)
class Node:
    """One instruction as written. For ONBUILD, `sub` holds the triggered instruction."""

    cmd: str  # upper case
    original: str
    start_line: int
    end_line: int
    flags: tuple[str, ...] = ()
    value: tuple[str, ...] = ()
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    args: str = ""  # the text after the flags, as BuildKit's line parsers see it
    sub: Node | None = None
    written_cmd: str = ""  # the instruction name in the case it was written
    comments: tuple[str, ...] = ()  # the comment lines just before it (BuildKit's PrevComment)
    legacy: bool = False  # ENV/LABEL in the legacy `key value` form (no `=`)

    @property
    def sub_cmd(self) -> str | None:
        return self.sub.cmd if self.sub is not None else None

    def to_json(self) -> dict[str, Any]:
        """BuildKit's field names; an ONBUILD shows its trigger's form, values and flags."""
        shown = self.sub if self.sub is not None else self
        return {
            "cmd": self.cmd,
            "sub_cmd": self.sub_cmd,
            "json": shown.json,
            "original": self.original,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "flags": list(shown.flags),
            "value": list(shown.value),
            "heredocs": [h.to_json() for h in self.heredocs],
        }


@dataclass(frozen=True, slots=True)
class ParseWarning:
    """What BuildKit's parser warns about (an empty continuation line), at the line it names
    (the instruction's last line)."""

    message: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class ParseResult:
    nodes: tuple[Node, ...]
    escape: str = "\\"
    # escape as the parser took it; syntax and check as BuildKit's ParseDirective finds them
    directives: dict[str, str] = field(default_factory=dict)
    warnings: tuple[ParseWarning, ...] = ()


def parse(text: str, path: str = "Dockerfile") -> ParseResult:
    return _Parser(text, path).run()


def detect_directive(text: str, key: str, *, any_format: bool = False) -> str | None:
    """A `syntax` or `check` directive's value as BuildKit's `parseDirective` finds it: a
    first `#!` line is skipped, the value ends at its first space; with `any_format` (how the
    syntax is detected) `// key=` lines and a JSON document's key are also read."""
    if text.startswith(_BOM):
        text = text[1:]
    first, newline, rest = text.partition("\n")
    if first.startswith("#!"):
        text = rest if newline else ""
    for prefix in ("#", "//") if any_format else ("#",):
        for name, value in _directive_lines(text, prefix):
            if name == key:
                return value.split(" ", 1)[0]
    if any_format:
        try:
            document = json.loads(text)
        except ValueError:
            return None
        found = document.get(key) if isinstance(document, dict) else None
        return found if isinstance(found, str) else None
    return None


def _directive_lines(text: str, prefix: str) -> list[tuple[str, str]]:
    """The directives at the top of `text` written after `prefix` (BuildKit's DirectiveParser:
    the first line that is not one ends them; a repeated one ends them too)."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in text.split("\n"):
        if not line.startswith(prefix):
            break
        match = _DIRECTIVE_BODY.match(_lstrip_go(line[len(prefix) :]))
        if match is None or match.group(1).lower() not in _DIRECTIVES:
            break
        name = match.group(1).lower()
        if name in seen:
            break
        seen.add(name)
        out.append((name, match.group(2)))
    return out


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.text = text
        self.escape = "\\"
        self.directives: dict[str, str] = {}
        self.directives_done = False
        self.index = 0
        self.line_no = 0
        self.warnings: list[ParseWarning] = []
        # Not str.splitlines: it knows more line ends than BuildKit's scanner ("\n" only).
        self.lines = _split_lines(text)
        if self.lines and self.lines[0].startswith(_BOM):
            self.lines[0] = self.lines[0][1:]

    def error(self, message: str, line: int | None = None) -> DockerfileError:
        return DockerfileError(message, path=self.path, line=line or max(self.line_no, 1))

    def take(self) -> str:
        """The next line, as BuildKit's scanner reads it: one longer than its buffer ends the
        parse (named at that line, where BuildKit names the line before)."""
        raw = self.lines[self.index]
        self.index += 1
        if len(raw) > MAX_LINE_BYTES // 4 and len(raw.rstrip("\n").encode()) > MAX_LINE_BYTES:
            raise self.error(
                f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
                self.line_no + 1,
            )
        return raw

    # directives --------------------------------------------------------------------------

    def directive(self, token: str) -> bool:
        """Whether the line is a parser directive (taken when it is)."""
        if self.directives_done:
            return False
        match = _DIRECTIVE_RE.match(token)
        if match is None:
            self.directives_done = True
            return False
        key = match.group(1).lower()
        if key not in _DIRECTIVES:
            self.directives_done = True
            return False
        if key in self.directives:
            raise self.error(f"only one {key} parser directive can be used", self.line_no + 1)
        value = match.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise self.error(
                    f"invalid escape token '{value}' does not match ` or \\", self.line_no + 1
                )
            self.escape = value
        self.directives[key] = value
        return True

    # lines -------------------------------------------------------------------------------

    def process_line(self, raw: str, strip_left: bool) -> tuple[str, bool]:
        token = raw.rstrip("\r\n")
        if strip_left:
            token = _lstrip_go(token)
        is_directive = self.directive(token)
        return ("" if token.startswith("#") else token), is_directive

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        e = re.escape(self.escape)
        match = re.search(rf"([^{e}]){e}[ \t]*\Z|\A{e}[ \t]*\Z", line)
        if match is None:
            return line, True
        return line[: match.start()] + (match.group(1) or ""), False

    def run(self) -> ParseResult:
        nodes: list[Node] = []
        comments: list[str] = []
        while self.index < len(self.lines):
            raw = self.take()
            if _is_comment(raw):
                # As BuildKit takes it: the line after its first byte, trimmed.
                comment = _strip_go(raw[1:])
                comments = [*comments, comment] if comment else []
            processed, is_directive = self.process_line(raw, strip_left=True)
            if is_directive:
                comments = comments[:-1]
            self.line_no += 1
            start = self.line_no
            line, end_of_line = self.trim_continuation(processed)
            if end_of_line and line == "":
                continue
            empty_continuation = False
            while not end_of_line and self.index < len(self.lines):
                raw = self.take()
                processed, _ = self.process_line(raw, strip_left=False)
                self.line_no += 1
                if _is_comment(raw):
                    continue
                if _lstrip_go(processed.rstrip("\r\n")) == "":
                    empty_continuation = True
                    continue
                more, end_of_line = self.trim_continuation(processed)
                line += more
            if empty_continuation:
                self.warnings.append(ParseWarning(
                    f"Empty continuation line found in: {line}", self.path, self.line_no
                ))  # fmt: skip
            nodes.append(self.node(line, start, tuple(comments)))
            comments = []
        if not nodes:
            raise self.error("file with no instructions")
        directives = {k: v for k, v in self.directives.items() if k == "escape"}
        for key, any_format in (("syntax", True), ("check", False)):
            value = detect_directive(self.text, key, any_format=any_format)
            if value is not None:
                directives[key] = value
        return ParseResult(tuple(nodes), self.escape, directives, tuple(self.warnings))

    # one instruction ---------------------------------------------------------------------

    def node(self, line: str, start: int, comments: tuple[str, ...] = ()) -> Node:
        try:
            cmd, written, flags, args = _split_command(line)
            value, is_json, sub = self.arguments(cmd, args, start)
        except (ExpansionError, ValueError) as exc:
            raise self.error(str(exc), start) from None
        heredocs: tuple[Heredoc, ...] = ()
        original = line
        target = sub if sub is not None else None
        carrier_cmd = target.cmd if target is not None else cmd
        carrier_json = target.json if target is not None else is_json
        if carrier_cmd in _HEREDOC_COMMANDS and not carrier_json:
            heredocs = self.read_heredocs(line, start)
            if target is None and heredocs:
                original = line + "\n" + "".join(h.content + h.name + "\n" for h in heredocs)
        node = Node(
            cmd=cmd,
            original=original,
            start_line=start,
            end_line=self.line_no,
            flags=flags,
            value=value,
            json=is_json,
            heredocs=heredocs if target is None else (),
            args=args,
            sub=None,
            written_cmd=written,
            comments=comments,
            legacy=cmd in ("ENV", "LABEL") and _legacy_form(args, self.escape),
        )
        if target is not None:
            # BuildKit shows an ONBUILD's heredocs nowhere; polyarch keeps them on the trigger.
            target = Node(
                cmd=target.cmd, original=target.original, start_line=start,
                end_line=self.line_no, flags=target.flags, value=target.value,
                json=target.json, heredocs=heredocs, args=target.args,
                written_cmd=target.written_cmd,
            )  # fmt: skip
            node = Node(
                cmd=node.cmd, original=node.original, start_line=start, end_line=self.line_no,
                flags=node.flags, value=node.value, json=node.json, args=node.args,
                sub=target, written_cmd=written, comments=comments,
            )  # fmt: skip
        return node

    def arguments(
        self, cmd: str, args: str, start: int
    ) -> tuple[tuple[str, ...], bool, Node | None]:
        if cmd in ("ADD", "COPY", "VOLUME"):
            parsed = _maybe_json(args)
            if parsed is not None:
                return parsed, True, None
            return _whitespace_words(args), False, None
        if cmd in ("CMD", "ENTRYPOINT", "RUN", "SHELL"):
            if args == "":
                return (), False, None
            parsed = _maybe_json(args)
            if parsed is not None:
                return parsed, True, None
            return (args,), False, None
        if cmd in ("ENV", "LABEL"):
            return self.name_values(args, cmd), False, None
        if cmd == "ARG":
            return tuple(_parse_words(args, self.escape)), False, None
        if cmd in ("EXPOSE", "FROM"):
            return _whitespace_words(args), False, None
        if cmd in ("MAINTAINER", "STOPSIGNAL", "USER", "WORKDIR"):
            return ((args,) if args else ()), False, None
        if cmd == "HEALTHCHECK":
            return _health(args)
        if cmd == "ONBUILD":
            if args == "":
                return (), False, None
            sub_cmd, written, sub_flags, sub_args = _split_command(args)
            sub_value, sub_json, _ = self.arguments(sub_cmd, sub_args, start)
            sub = Node(
                cmd=sub_cmd, original=args, start_line=start, end_line=start, flags=sub_flags,
                value=sub_value, json=sub_json, args=sub_args, written_cmd=written,
            )  # fmt: skip
            return (), False, sub
        # Unknown instruction: BuildKit's parser keeps it (the instruction layer refuses it).
        return ("",), False, None

    def name_values(self, rest: str, key: str) -> tuple[str, ...]:
        words = _parse_words(rest, self.escape)
        if not words:
            return ()
        if "=" not in words[0]:
            parts = _SPLIT_WS.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise ValueError(f"{key} must have two arguments")
            return (parts[0], parts[1])
        out: list[str] = []
        for word in words:
            if "=" not in word:
                raise ValueError(
                    f"Syntax error - can't find = in {json.dumps(word)}. "
                    "Must be of the form: name=value"
                )
            name, _, value = word.partition("=")
            out += [name, value]
        return tuple(out)

    def read_heredocs(self, line: str, start: int) -> tuple[Heredoc, ...]:
        found: list[Heredoc] = []
        for spec in _heredoc_specs(line):
            content: list[str] = []
            terminated = False
            while self.index < len(self.lines):
                raw = self.lines[self.index]
                self.index += 1
                self.line_no += 1
                candidate = raw.rstrip("\r\n")
                if spec.chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == spec.name:
                    terminated = True
                    break
                content.append(raw)
            if not terminated:
                raise self.error(
                    f"unterminated heredoc {spec.name!r}: no line {spec.name!r} before the end of "
                    "the file",
                    start,
                )
            found.append(
                Heredoc(spec.name, spec.file_descriptor, "".join(content), spec.expand, spec.chomp)
            )
        return tuple(found)


# helpers (pure functions of one line) -------------------------------------------------------


def _split_lines(text: str) -> list[str]:
    """Lines ending in "\\n" (kept), as BuildKit's scanner splits; "\\r" stays in the line."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _lstrip_go(text: str) -> str:
    i = 0
    while i < len(text) and go_is_space(text[i]):
        i += 1
    return text[i:]


def _strip_go(text: str) -> str:
    end = len(text)
    while end > 0 and go_is_space(text[end - 1]):
        end -= 1
    return _lstrip_go(text[:end])


def _is_comment(raw: str) -> bool:
    return _lstrip_go(raw.rstrip("\r\n")).startswith("#")


def _split_command(line: str) -> tuple[str, str, tuple[str, ...], str]:
    stripped = _strip_go(line)
    parts = _SPLIT_WS.split(stripped, maxsplit=1)
    written = parts[0]
    cmd = written.upper()
    flags: tuple[str, ...] = ()
    args = ""
    if len(parts) == 2:
        args, flags = _extract_flags(parts[1])
    return cmd, written, flags, _strip_go(args)


def _extract_flags(line: str) -> tuple[str, tuple[str, ...]]:
    """Leading `--flag[=value]` words (quotes and backslashes processed); `--` ends them."""
    words: list[str] = []
    word: list[str] = []
    blank_ok = False
    phase = "spaces"
    quote = ""
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if go_is_space(ch):
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], tuple(words)
            phase = "word"
        if pos == n:
            text = "".join(word)
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if phase == "word":
            if go_is_space(ch):
                phase = "spaces"
                text = "".join(word)
                if text == "--":
                    return line[pos:], tuple(words)
                if blank_ok or text:
                    words.append(text)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
            continue
        # inside quotes
        if ch == quote:
            phase = "word"
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                phase = "word"
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word.append(ch)
        pos += 1
    return "", tuple(words)


def _parse_words(rest: str, escape: str) -> list[str]:
    """Words split on white space, quotes and escapes kept (BuildKit's parseWords)."""
    words: list[str] = []
    phase = "spaces"
    quote = ""
    blank_ok = False
    word: list[str] = []
    pos = 0
    n = len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == "spaces":
            if pos == n:
                break
            if go_is_space(ch):
                pos += 1
                continue
            phase = "word"
        if pos == n:
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == "word":
            if go_is_space(ch):
                phase = "spaces"
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if ch == quote:
            phase = "word"
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = "word"
                pos += 1
                continue
            pos += 1
            word.append(ch)
            ch = rest[pos]
        word.append(ch)
        pos += 1
    return words


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _maybe_json(args: str) -> tuple[str, ...] | None:
    """The strings of a JSON array when the whole text is one (BuildKit's json.Unmarshal):
    `["echo", "a"] && echo b` is shell form, not an array with text after it."""
    text = _lstrip_go(args)
    if not text.startswith("["):
        return None
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return None
    if text[end:].strip(_JSON_SPACE):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of strings only")
    return tuple(value)


def _legacy_form(args: str, escape: str) -> bool:
    """ENV/LABEL written `key value` (BuildKit's NoDelim): the first word has no `=`."""
    words = _parse_words(args, escape)
    return bool(words) and "=" not in words[0]


def _whitespace_words(args: str) -> tuple[str, ...]:
    if args == "":
        return ()
    return tuple(_SPLIT_WS.split(args))


def _health(args: str) -> tuple[tuple[str, ...], bool, None]:
    sep = 0
    while sep < len(args) and not go_is_space(args[sep]):
        sep += 1
    if sep == 0:
        return (), False, None
    rest = _lstrip_go(args[sep:])
    kind = args[:sep]
    if rest == "":
        return (kind,), False, None
    parsed = _maybe_json(rest)
    if parsed is not None:
        return (kind, *parsed), True, None
    return (kind, rest), False, None


@dataclass(frozen=True, slots=True)
class _HeredocSpec:
    name: str
    file_descriptor: int
    expand: bool
    chomp: bool


_RAW_LEXER: Final = ShellLexer("\\", raw_quotes=True, raw_escapes=True, skip_unset=True)
_WORD_LEXER: Final = ShellLexer("\\", skip_unset=True)
_QUOTED_LEXER: Final = ShellLexer("\\", raw_quotes=True, skip_unset=True)


def heredoc_word(word: str) -> _HeredocSpec | None:
    """A heredoc word (`<<EOF`, `<<-EOF`, `<< EOF`, `3<<'EOF'`) as BuildKit's ParseHeredoc
    reads it; None when the word is not one."""
    match = _HEREDOC_RE.match(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    try:
        plain = _WORD_LEXER.process_words(rest, {})
        quoted = _QUOTED_LEXER.process_words(rest, {})
    except ExpansionError:
        return None
    if len(plain) != 1 or len(quoted) != 1:
        return None
    count = plain[0].count("'") + plain[0].count('"')
    raw_count = quoted[0].count("'") + quoted[0].count('"')
    return _HeredocSpec(
        name=plain[0],
        file_descriptor=int(match.group(1) or 0),
        expand=count == raw_count,
        chomp=match.group(2) == "-",
    )


def _heredoc_specs(line: str) -> list[_HeredocSpec]:
    try:
        words = _RAW_LEXER.process_words(line, {})
    except ExpansionError:
        return []
    return [spec for spec in map(heredoc_word, words) if spec is not None]


def chomp(content: str) -> str:
    """`<<-` content: leading tabs removed from every line."""
    return re.sub(r"(?m)^\t+", "", content)
