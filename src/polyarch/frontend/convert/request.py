"""What a conversion is asked: the Dockerfile, target platforms, build arguments, resolved base
images, named contexts and the build's switches; and the values the Dockerfile predefines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from polyarch.errors import InvalidReferenceError
from polyarch.frontend.dockerfile.instructions import Dockerfile
from polyarch.oci.config import ImageConfig
from polyarch.platform import Platform
from polyarch.reference import Reference

PLATFORM_ARGS: Final = (
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
)  # fmt: skip
PREDEFINED_ARGS: Final = (*PLATFORM_ARGS, "TARGETSTAGE")
PROXY_ARGS: Final = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
DEFAULT_SHELL: Final = ("/bin/sh", "-c")
ENTITLEMENTS: Final = ("security.insecure", "network.host")
INLINE_DIR: Final = "/dev/pipes"


def platform_args(target: Platform, build: Platform, stage: str = "default") -> dict[str, str]:
    return {
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant or "",
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant or "",
        "TARGETSTAGE": stage,
    }


@dataclass(frozen=True, slots=True)
class BaseImage:
    """A base image as resolved from its registry: manifest digest and config."""

    digest: str
    config: ImageConfig


# --build-once: auto (the rule decides), off (BuildKit's behaviour), or the stages forced to run
# once (names, lower case).
BuildOnce: TypeAlias = Literal["auto", "off"] | frozenset[str]
# A --build-context's kind (see NamedContext).
ContextKind: TypeAlias = Literal["local", "image", "layout", "git"]


def parse_build_once(value: str) -> BuildOnce:
    """`auto`, `off`, or `STAGE[,STAGE]`."""
    if value == "auto":
        return "auto"
    if value == "off":
        return "off"
    return frozenset(v.strip().lower() for v in value.split(",") if v.strip())


def build_once_text(value: BuildOnce) -> str:
    """The flag's form of a value (`parse_build_once` reads it back)."""
    return value if isinstance(value, str) else ",".join(sorted(value))


@dataclass(frozen=True, slots=True)
class NamedContext:
    """`--build-context NAME=VALUE`: a directory (`local`), an image (`image`: VALUE is its
    reference; `layout`: VALUE is `DIR[:TAG|@DIGEST]` of an OCI layout), or a git repository
    (`git`: VALUE is its URL with `#ref:subdir`)."""

    kind: ContextKind
    value: str


@dataclass(frozen=True, slots=True)
class ConvertRequest:
    dockerfile: Dockerfile
    platforms: tuple[Platform, ...]
    build_platform: Platform
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    # (image reference, platform) -> what it resolved to. Without them the graph expands as if
    # base images had an empty config: fine for showing a plan, wrong for building one.
    images: Mapping[tuple[str, str], BaseImage] = field(default_factory=dict)
    # "auto": stages that use no TARGET* value and are only copied from run once, natively;
    # "off": BuildKit's behaviour; or a set of stage names to run once regardless.
    build_once: BuildOnce = "auto"
    # Stages found to produce native code (after running once): planned per platform.
    per_platform: frozenset[str] = frozenset()
    ignore: tuple[str, ...] = ()  # the build context's .dockerignore patterns
    allow: frozenset[str] = frozenset()  # entitlements granted (`--allow security.insecure`)
    labels: Mapping[str, str] = field(default_factory=dict)  # `--label`: on the target image
    contexts: Mapping[str, NamedContext] = field(default_factory=dict)  # --build-context
    # `build --check`: every stage is looked at (not only the target's), as BuildKit's lint
    check_all: bool = False
    extra_hosts: tuple[str, ...] = ()  # `--add-host`: HOST=IP, in RUN steps' /etc/hosts
    network: str = "default"  # `--network`: RUN steps' network unless one names its own
    ulimits: tuple[str, ...] = ()  # `--ulimit NAME=SOFT[:HARD]`, checked
    shm_size: int = 0  # `--shm-size`, bytes

    def context_key(self, name: str) -> str:
        """The `--build-context` a name means (as given, or its familiar image name), or ""."""
        if not name:
            return ""
        if name in self.contexts:
            return name
        familiar = familiar_name(name)
        return familiar if familiar in self.contexts else ""


def familiar_name(name: str) -> str:
    """An image name as people write it: `docker.io/library/alpine:latest` is `alpine`."""
    try:
        ref = Reference.parse(name)
    except InvalidReferenceError:
        return name
    text = ref.repository if ref.registry == "docker.io" else f"{ref.registry}/{ref.repository}"
    text = text.removeprefix("library/")
    if ref.tag and ref.tag != "latest":
        text += f":{ref.tag}"
    if ref.digest:
        text += f"@{ref.digest}"
    return text
