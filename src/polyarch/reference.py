"""Image references as the distribution project defines them.

`nginx` -> `docker.io/library/nginx:latest`; `localhost:5000/a/b:t`; `x@sha256:...`;
`x:t@sha256:...` (the digest wins when pulling; the tag is kept for display). A first path
component is a registry when it contains `.` or `:` or is `localhost`, as in
`distribution/reference`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from polyarch.digest import Digest
from polyarch.errors import InvalidDigestError, InvalidReferenceError

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_API: Final = "registry-1.docker.io"
_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG: Final = re.compile(r"[\w][\w.-]{0,127}")
_DOMAIN_LABEL: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN: Final = re.compile(
    rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_MAX_NAME: Final = 255


@dataclass(frozen=True, slots=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = "latest") -> Reference:
        if not text or text != text.strip():
            raise InvalidReferenceError(f"invalid reference {text!r}: empty or padded with spaces")
        rest = text
        digest: Digest | None = None
        if "@" in rest:
            rest, _, digest_text = rest.partition("@")
            try:
                digest = Digest.parse(digest_text)
            except InvalidDigestError as exc:
                raise InvalidReferenceError(f"invalid reference {text!r}: {exc}") from None
        tag: str | None = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise InvalidReferenceError(
                    f"invalid tag {tag!r} in {text!r}: want up to 128 of [A-Za-z0-9_.-], "
                    "not starting with . or -"
                )
        registry, repository = _split_domain(rest, text)
        if repository != repository.lower():
            raise InvalidReferenceError(f"invalid reference {text!r}: repository must be lowercase")
        for component in repository.split("/"):
            if not _COMPONENT.fullmatch(component):
                raise InvalidReferenceError(
                    f"invalid reference {text!r}: bad path component {component!r} "
                    "(lowercase letters, digits and single separators . _ __ -)"
                )
        if len(repository) + len(registry) + 1 > _MAX_NAME:
            raise InvalidReferenceError(f"invalid reference {text!r}: name longer than 255")
        if tag is None and digest is None:
            tag = default_tag
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host:port that serves the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        if self.tag is None:
            raise InvalidReferenceError(f"{self.name} names neither a tag nor a digest")
        return self.tag

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def familiar(self) -> str:
        """The short form people type (`nginx:latest` for `docker.io/library/nginx:latest`)."""
        text = str(self)
        if self.registry == DOCKER_HUB:
            text = text.removeprefix("docker.io/").removeprefix("library/")
        return text


def _split_domain(name: str, original: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise InvalidReferenceError(f"invalid registry {first!r} in {original!r}")
        registry = first.lower()
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
        repository = remainder
    else:
        registry, repository = DOCKER_HUB, name
    if not repository:
        raise InvalidReferenceError(f"invalid reference {original!r}: no repository")
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def is_loopback_host(host: str) -> bool:
    """`localhost`, `127.x.y.z` or `[::1]`, with or without a port (pure string check)."""
    bare = host
    if bare.startswith("["):
        bare = bare[1 : bare.find("]")] if "]" in bare else bare
    elif bare.count(":") == 1:
        bare = bare.split(":", 1)[0]
    bare = bare.lower()
    if bare in ("localhost", "::1") or bare.endswith(".localhost"):
        return True
    parts = bare.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)
