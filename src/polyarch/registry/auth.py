"""Registry authentication challenges (RFC 7235 `WWW-Authenticate`) and token scopes. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

_TOKEN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        scope = self.params.get("scope")
        return tuple(scope.split()) if scope else ()


def parse_challenges(header: str) -> list[Challenge]:
    """Parse one `WWW-Authenticate` value, which may hold several comma-separated challenges."""
    out: list[Challenge] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        match = _TOKEN.match(header, i)
        if match is None:
            break
        token, j = match.group(), match.end()
        k = j
        while k < n and header[k] in " \t":
            k += 1
        if k < n and header[k] == "=" and out:
            k += 1
            while k < n and header[k] in " \t":
                k += 1
            value, k = _value(header, k)
            out[-1].params[token.lower()] = value
            i = k
        else:
            out.append(Challenge(token.lower(), {}))
            i = j
    return out


def _value(text: str, i: int) -> tuple[str, int]:
    if i < len(text) and text[i] == '"':
        chars: list[str] = []
        i += 1
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            chars.append(text[i])
            i += 1
        return "".join(chars), i + 1
    # RFC 7235 wants a token here; real servers send URLs unquoted, so read up to , or space.
    end = i
    while end < len(text) and text[end] not in ", \t":
        end += 1
    return text[i:end], end


def repository_scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"
