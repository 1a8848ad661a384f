"""`.dockerignore` files, matched as moby's patternmatcher does. Pure.

Reading (moby `ignorefile.ReadAll`): a leading BOM is dropped, lines starting with `#` are
comments, lines are trimmed, blank lines skipped, `!` marks an exception, each pattern is
cleaned like a path (`./a` is `a`, `a//b/` is `a/b`) and a leading `/` dropped.

Matching: `*` is any run of characters except `/`, `?` one character except `/`, `[...]` a
class, `\\` escapes, `**` any number of directories (`**/x` also matches `x`). A path is
excluded when the last pattern that matches it, or one of its parent directories, is not an
exception.
"""

from __future__ import annotations

import posixpath
import re
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
                pattern = pattern.lstrip("/") or "/"
        patterns.append(("!" if invert else "") + pattern)
    # Compile now so a bad pattern is reported with the file name, not later mid-build.
    for pattern in patterns:
        try:
            _compile(pattern.removeprefix("!"))
        except re.error as exc:
            raise DockerfileError(f"bad pattern {pattern!r}: {exc}", path=path) from None
    return tuple(patterns)


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]
    dirs: tuple[str, ...]


class IgnoreMatcher:
    def __init__(self, patterns: Iterable[str]) -> None:
        compiled: list[_Pattern] = []
        for raw in patterns:
            exclusion = raw.startswith("!")
            text = raw[1:] if exclusion else raw
            if not text:
                continue
            text = posixpath.normpath(text)
            compiled.append(_Pattern(text, exclusion, _compile(text), tuple(text.split("/"))))
        self.patterns = tuple(compiled)
        self.has_exclusions = any(p.exclusion for p in compiled)

    def matches(self, path: str) -> bool:
        """True if `path` (relative to the context, `/`-separated) is ignored."""
        file = posixpath.normpath(path).lstrip("/")
        if file in ("", "."):
            return False
        parents = file.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # cannot change the outcome
            hit = bool(pattern.regex.match(file))
            if not hit and parents:
                for i in range(len(parents)):
                    if pattern.regex.match("/".join(parents[: i + 1])):
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
                if dirs[i] == "**":
                    return True
                if not re.fullmatch(_compile(dirs[i]).pattern, part):
                    break
            else:
                return True
        return False


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                    out.append("(.*/)?")  # **/ : zero or more directories
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i < n:
                out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise re.error("unterminated character class")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.DOTALL)


def ignore_file_for(dockerfile: str, context: str) -> tuple[str, str]:
    """Where to look for ignore rules: `<Dockerfile>.dockerignore` first, then the context's
    `.dockerignore` (BuildKit's order). Returns both candidate paths, best first."""
    return (dockerfile + ".dockerignore", posixpath.join(context, ".dockerignore"))
