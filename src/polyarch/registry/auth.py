"""Registry authentication: challenges (RFC 7235 `WWW-Authenticate`), token scopes, and the
auth flow that puts credentials on requests.

The flow attaches credentials only to requests for the registry's own origin. A 401 from that
origin with a bearer challenge refreshes the token for the scopes the challenge names and sends
the request once more; a 401 from any other origin (a redirect target) is left as it is:
anonymous treatment, never the registry's credentials sent to a realm the registry did not name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Final

import httpx

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


def bearer_or_basic(values: Sequence[str]) -> Challenge | None:
    """The challenge to answer among `WWW-Authenticate` values: bearer first, else basic."""
    found: Challenge | None = None
    for value in values:
        for challenge in parse_challenges(value):
            if challenge.scheme == "bearer":
                return challenge
            if challenge.scheme == "basic" and found is None:
                found = challenge
    return found


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


SCOPES: Final = "polyarch.scopes"  # a request extension: the token scopes it needs


class RegistryAuth(httpx.Auth):
    """Credentials for one registry origin, as an httpx auth flow.

    `authorization(scopes)` gives the header value for the scopes (a cached or new token, or
    basic credentials), `challenged(challenge, scopes)` records a challenge the registry sent
    (and forgets the token for those scopes).
    """

    def __init__(
        self,
        origin: httpx.URL,
        authorization: Callable[[list[str]], str | None],
        challenged: Callable[[Challenge, list[str]], None],
    ) -> None:
        self.origin = origin
        self.authorization = authorization
        self.challenged = challenged

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not same_origin(request.url, self.origin):
            request.headers.pop("Authorization", None)
            yield request  # another origin: anonymous, whatever it answers
            return
        scopes = list(request.extensions.get(SCOPES, []))
        header = self.authorization(scopes)
        if header:
            request.headers["Authorization"] = header
        response = yield request
        if response.status_code != 401:
            return
        challenge = bearer_or_basic(response.headers.get_list("WWW-Authenticate"))
        if challenge is None or challenge.scheme != "bearer":
            return
        wanted = [*scopes, *(s for s in challenge.scopes if s not in scopes)]
        self.challenged(challenge, wanted)
        request.extensions = {**request.extensions, SCOPES: wanted}
        if not isinstance(request.stream, httpx.ByteStream):
            return  # a streamed body cannot be sent twice: the caller tries again whole
        header = self.authorization(wanted)
        if header:
            request.headers["Authorization"] = header
        yield request
