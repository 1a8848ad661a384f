"""`.dockerignore` files, matched as moby's patternmatcher does. Pure; shared by the frontend
(the plan) and the worker (the files a step takes), neither of which owns it.

Reading (moby `ignorefile.ReadAll`): a leading BOM is dropped, lines starting with `#` are
comments, lines are trimmed, blank lines skipped, `!` marks an exception, each pattern is
cleaned like a path (`./a` is `a`, `a//b/` is `a/b`) and a leading `/` dropped.

Matching (moby `patternmatcher`): `*` is any run of characters except `/`, `?` one
character except `/`, `[...]` a regular-expression class (`[^x]` negates; `!` is literal), `\\`
escapes the next character, `**` any number of directories (`**/x` also matches `x`; a
trailing `**` matches everything below). A path is excluded when the last pattern that matches
it, or one of its parent directories, is not an exception. Patterns are checked as Go's
`filepath.Match` checks them: a malformed class (`[-x]`, `[x-]`, `[a-b-c]`) or a trailing
backslash is an error, as is a lone `!`.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from polyarch.errors import DockerfileError

_BOM: Final = "\ufeff"


def read_patterns(text: str, path: str = ".dockerignore") -> tuple[str, ...]:
    patterns: list[str] = []
    for number, raw in enumerate(text.split("\n")):
        line = raw[1:] if number == 0 and raw.startswith(_BOM) else raw
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append(("!" if invert else "") + pattern)
    # Compile now so a bad pattern is reported with the file name, not later mid-build.
    try:
        read_patterns_list(patterns)
    except BadPatternError as exc:
        raise DockerfileError(str(exc), path=path) from None
    return tuple(patterns)


class BadPatternError(ValueError):
    """A pattern moby's patternmatcher refuses (filepath.ErrBadPattern, a lone `!`)."""


def read_patterns_list(patterns: Iterable[str]) -> tuple[_Pattern, ...]:
    """Patterns as moby's `patternmatcher.New` takes them: trimmed, cleaned, `!` for an
    exception, each checked with Go's `filepath.Match` syntax (a bad class or a trailing
    backslash is an error)."""
    out: list[_Pattern] = []
    for raw in patterns:
        text = raw.strip()
        if not text:
            continue
        text = posixpath.normpath(text)
        exclusion = text.startswith("!")
        if exclusion:
            if len(text) == 1:
                raise BadPatternError('illegal exclusion pattern: "!"')
            text = text[1:]
        _check_syntax(text)
        kind, regex = _compile(text)
        out.append(_Pattern(text, exclusion, kind, regex, tuple(text.split("/"))))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    exclusion: bool
    kind: str  # "exact", "prefix", "suffix" or "regexp", as moby's matchType
    regex: re.Pattern[str] | None
    dirs: tuple[str, ...]

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


class IgnoreMatcher:
    def __init__(self, patterns: Iterable[str] | tuple[_Pattern, ...]) -> None:
        items = tuple(patterns)
        if items and isinstance(items[0], _Pattern):
            compiled: tuple[_Pattern, ...] = items  # type: ignore[assignment]
        else:
            compiled = read_patterns_list(items)  # type: ignore[arg-type]
        self.patterns = compiled
        self.has_exclusions = any(p.exclusion for p in compiled)

    def matches(self, path: str, *, parents_kept: bool = False) -> bool:
        """True if `path` (relative to the context, `/`-separated) is ignored (moby's
        MatchesOrParentMatches). `parents_kept`: a walker's clean path (no `.`, `..` or
        doubled `/`) whose parent directories it found not ignored; with no `!` rule only the
        path itself can match then."""
        if parents_kept and not self.has_exclusions:  # (a walker's paths are clean)
            return any(pattern.match(path) for pattern in self.patterns)
        file = posixpath.normpath(path).lstrip("/")
        if file in ("", "."):
            return False
        parents = file.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # cannot change the outcome
            hit = pattern.match(file)
            if not hit and parents:
                for i in range(len(parents)):
                    if pattern.match("/".join(parents[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """False when nothing under an ignored `directory` can be brought back by a `!` rule,
        so a walker may skip it whole."""
        if not self.has_exclusions:
            return False
        prefix = posixpath.normpath(directory).lstrip("/").split("/")
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            dirs = pattern.dirs
            # The exception could match something below when its leading parts allow it.
            for i, part in enumerate(prefix):
                if i >= len(dirs):
                    break
                if "**" in dirs[i]:
                    return True
                _kind, regex = _compile(dirs[i])
                if not (part == dirs[i] if regex is None else regex.match(part)):
                    break
            else:
                return True
        return False


_SHOULD_ESCAPE: Final = frozenset(".+()|{}$")


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """moby's Pattern.compile: the match type, and the regex when it needs one."""
    out = ["^"]
    kind = "exact"
    i = 0
    n = len(pattern)
    index = 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            i, kind = _star(pattern, i, kind, index == 0, out)
        elif ch == "?":
            out.append("[^/]")
            kind = "regexp"
        elif ch in _SHOULD_ESCAPE:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
                kind = "regexp"
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
            kind = "regexp"
        else:
            out.append(ch)
        index += 1
    if kind != "regexp":
        return kind, None
    out.append("$")
    try:
        with warnings.catch_warnings():
            # `[[`, `--` or `&&` in a class: Python warns that a later version may read them
            # as set operations; Go's regexp (moby's) reads them as characters, as re does now.
            warnings.simplefilter("ignore", FutureWarning)
            return kind, re.compile("".join(out))
    except re.error as exc:
        raise BadPatternError(f"bad pattern {pattern!r}: {exc}") from None


def _star(pattern: str, i: int, kind: str, first: bool, out: list[str]) -> tuple[int, str]:
    """A `*` of moby's Pattern.compile (at `i`, after it): `**` (with its `/`) or `*`, its
    regex appended to `out`; returns where to go on and the match type."""
    n = len(pattern)
    if i < n and pattern[i] == "*":
        i += 1
        if i < n and pattern[i] == "/":
            i += 1
        if i >= n:
            if kind == "exact":
                kind = "prefix"
            else:
                out.append(".*")
                kind = "regexp"
        else:
            out.append("(.*/)?")
            kind = "regexp"
        if first:
            kind = "suffix"
    else:
        out.append("[^/]*")
        kind = "regexp"
    return i, kind


def _check_syntax(pattern: str) -> None:
    """Go's filepath.Match(pattern, ".") error: malformed classes, a trailing backslash."""
    bad = BadPatternError(f"syntax error in pattern: {pattern!r}")
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise bad
            i += 2
            continue
        if ch != "[":
            i += 1
            continue
        i += 1
        if i < n and pattern[i] == "^":
            i += 1
        ranges = 0
        while True:
            if i < n and pattern[i] == "]" and ranges > 0:
                i += 1
                break
            i = _class_char(pattern, i, bad)
            if i < n and pattern[i] == "-":
                i = _class_char(pattern, i + 1, bad)
            ranges += 1


def _class_char(pattern: str, i: int, bad: BadPatternError) -> int:
    """Go's getEsc: one (possibly escaped) character of a class; returns the next index."""
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise bad
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            raise bad
    i += 1
    if i >= n:
        raise bad
    return i


def ignore_file_for(dockerfile: str, context: str) -> tuple[str, str]:
    """Where to look for ignore rules: `<Dockerfile>.dockerignore` first, then the context's
    `.dockerignore` (BuildKit's order). Returns both candidate paths, best first."""
    return (dockerfile + ".dockerignore", posixpath.join(context, ".dockerignore"))
