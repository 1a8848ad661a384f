"""Platforms (`linux/arm64`, `linux/arm/v7`, ...): parsing, normalisation, names, matching.

Normalisation and matching follow containerd's `platforms` package, which is what BuildKit,
buildx and the Docker engine use: `aarch64` is `arm64`, `arm64/v8` is `arm64`, a bare `arm` is
`arm/v7`, `armhf` is `arm/v7`, `x86_64` is `amd64`. A wanted platform matches index entries of
the same os and architecture whose variant it can run: `arm/v7` runs `arm/v7`, `arm/v6` and
`arm/v5`; `amd64/v3` runs `amd64/v3`, `v2` and plain `amd64`. Unlike containerd's `Only`,
polyarch never picks a 32-bit `arm` image for an `arm64` target: a build tool that silently
produced armhf binaries in an arm64 image would be wrong, so that case is an explicit choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from polyarch.errors import InvalidPlatformError

_KNOWN_OS: Final = frozenset(
    {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
     "aix", "android", "ios", "js", "wasip1", "plan9", "dragonfly"}
)  # fmt: skip
_ARCH_ALIASES: Final[dict[str, str]] = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "i386": "386",
    "i686": "386",
    "armhf": "arm",
    "armel": "arm",
    "ppc64el": "ppc64le",
    "mips64el": "mips64le",
}
_KNOWN_ARCH: Final = frozenset(
    {"amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le",
     "mips64", "mipsle", "mips", "loong64", "wasm"}
)  # fmt: skip
_COMPONENT: Final = re.compile(r"\A[a-z0-9_.-]+\Z")


def _normalize_arch(arch: str, variant: str | None) -> tuple[str, str | None]:
    raw_arch = arch.lower()
    v = variant.lower() if variant else None
    arch = _ARCH_ALIASES.get(raw_arch, raw_arch)
    if raw_arch == "armhf":
        v = "v7"
    elif raw_arch == "armel":
        v = "v6"
    elif arch == "386":
        v = None
    elif arch == "amd64":
        if v == "v1":
            v = None
    elif arch == "arm64":
        if v in ("8", "v8", "v8.0"):
            v = None
        elif v in ("9", "9.0", "v9.0"):
            v = "v9"
    elif arch == "arm":
        if v in (None, "7"):
            v = "v7"
        elif v in ("5", "6", "8"):
            v = "v" + v
    return arch, v


@dataclass(frozen=True, slots=True)
class Platform:
    """A normalised platform. Build one with `Platform.parse` or `Platform.of`."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = field(default=None, compare=True)

    @classmethod
    def of(cls, os: str, architecture: str, variant: str | None = None) -> Platform:
        """Normalise the three parts as containerd does (`aarch64` -> `arm64`, ...)."""
        if not os or not architecture:
            raise InvalidPlatformError("a platform needs an os and an architecture")
        arch, var = _normalize_arch(architecture, variant or None)
        for part in (os.lower(), arch, var or "x"):
            if not _COMPONENT.match(part):
                raise InvalidPlatformError(f"invalid platform component {part!r}")
        return cls(os.lower(), arch, var)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse `os/arch[/variant]`, `arch[/variant]` (os defaults to linux) or `os`."""
        spec = text.strip()
        if not spec:
            raise InvalidPlatformError("empty platform")
        parts = spec.split("/")
        if len(parts) > 3 or any(not p for p in parts):
            raise InvalidPlatformError(
                f"invalid platform {text!r}: want os/arch[/variant], e.g. linux/arm64"
            )
        first = parts[0].lower()
        if len(parts) == 1:
            if first in _KNOWN_OS:
                raise InvalidPlatformError(
                    f"invalid platform {text!r}: an architecture is needed (e.g. {first}/amd64)"
                )
            return cls._checked(text, "linux", first, None)
        if len(parts) == 2:
            if first in _KNOWN_OS:
                return cls._checked(text, first, parts[1], None)
            return cls._checked(text, "linux", first, parts[1])
        if first not in _KNOWN_OS:
            raise InvalidPlatformError(f"invalid platform {text!r}: unknown os {parts[0]!r}")
        return cls._checked(text, first, parts[1], parts[2])

    @classmethod
    def _checked(cls, text: str, os: str, arch: str, variant: str | None) -> Platform:
        platform = cls.of(os, arch, variant)
        if platform.architecture not in _KNOWN_ARCH:
            raise InvalidPlatformError(
                f"unknown architecture {arch!r} in platform {text!r}; known: "
                + ", ".join(sorted(_KNOWN_ARCH))
            )
        return platform

    @classmethod
    def parse_list(cls, texts: Iterable[str]) -> tuple[Platform, ...]:
        """Parse `--platform` values, each of which may be comma separated; keep order, no dups."""
        seen: dict[Platform, None] = {}
        for text in texts:
            for item in text.split(","):
                if item.strip():
                    seen.setdefault(cls.parse(item), None)
        return tuple(seen)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    # Names of this platform in other worlds -------------------------------------------------

    @property
    def uname_machine(self) -> str:
        """What `uname -m` prints on (or under emulation of) this platform."""
        arch = self.architecture
        if arch == "arm":
            return {"v5": "armv5tel", "v6": "armv6l"}.get(self.variant or "v7", "armv7l")
        return _UNAME.get(arch, arch)

    @property
    def qemu_name(self) -> str:
        """The suffix of the qemu-user binary (`qemu-<name>-static`) that runs this platform."""
        return _QEMU.get(self.architecture, self.architecture)

    @property
    def debian_arch(self) -> str:
        """The Debian architecture name (`dpkg --print-architecture`)."""
        if self.architecture == "arm":
            return "armhf" if (self.variant or "v7") in ("v7", "v8") else "armel"
        return _DEBIAN.get(self.architecture, self.architecture)

    def oci_fields(self) -> dict[str, str]:
        """The platform as the fields of an OCI descriptor or image config."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out

    # Matching -------------------------------------------------------------------------------

    def compatible_variants(self) -> tuple[str | None, ...]:
        """Variants of this architecture that this platform runs, best first."""
        arch, variant = self.architecture, self.variant
        if arch == "arm":
            order = ["v8", "v7", "v6", "v5"]
            start = order.index(variant) if variant in order else 1
            return tuple(order[start:])
        if arch == "amd64":
            levels: list[str | None] = ["v4", "v3", "v2"]
            start = levels.index(variant) if variant in levels else len(levels)
            return (*levels[start:], None)
        if arch == "arm64" and variant is not None:
            return (variant, None) if variant != "v8" else (None,)
        return (variant,)

    def matches(self, other: Platform) -> bool:
        """True if an image of platform `other` runs here (same os and arch, usable variant)."""
        if self.os != other.os or self.architecture != other.architecture:
            return False
        return other.variant in self.compatible_variants()

    def rank(self, other: Platform) -> int | None:
        """How well `other` suits this platform: 0 is exact, higher is worse, None is unusable."""
        if self.os != other.os or self.architecture != other.architecture:
            return None
        variants = self.compatible_variants()
        if other.variant not in variants:
            return None
        return variants.index(other.variant)


def runs_natively(machine: Platform, platform: Platform) -> bool:
    """Whether `machine` runs `platform`'s binaries without an emulator.

    The same architecture, whatever the variant: the kernel runs its own machine's programs
    itself (no binfmt handler can take them), so linux/amd64/v3 or linux/arm64/v9 run natively,
    as in BuildKit; a CPU that lacks the variant's instructions kills the program with SIGILL.
    And 32-bit x86 on amd64 (the kernel's IA-32 compatibility). 32-bit arm on arm64 is not
    assumed: many arm64 server CPUs lack AArch32.
    """
    if machine.os != platform.os:
        return False
    if machine.architecture == platform.architecture:
        return True
    return machine.architecture == "amd64" and platform.architecture == "386"


def best_match(want: Platform, candidates: Sequence[Platform | None]) -> int | None:
    """Index of the candidate that suits `want` best (first of equals), or None."""
    best: tuple[int, int] | None = None
    for index, candidate in enumerate(candidates):
        if candidate is None:
            continue
        score = want.rank(candidate)
        if score is not None and (best is None or score < best[0]):
            best = (score, index)
    return None if best is None else best[1]


_UNAME: Final = {
    "amd64": "x86_64", "arm64": "aarch64", "386": "i686", "ppc64le": "ppc64le",
    "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64",
    "mips64": "mips64", "mipsle": "mips", "mips": "mips", "loong64": "loongarch64",
}  # fmt: skip
_QEMU: Final = {
    "amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386", "ppc64le": "ppc64le",
    "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el",
    "mips64": "mips64", "mipsle": "mipsel", "mips": "mips", "loong64": "loongarch64",
}  # fmt: skip
_DEBIAN: Final = {
    "amd64": "amd64", "arm64": "arm64", "386": "i386", "ppc64le": "ppc64el", "s390x": "s390x",
    "riscv64": "riscv64", "mips64le": "mips64el", "loong64": "loong64",
}  # fmt: skip
_UNAME_TO_ARCH: Final = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None), "aarch64": ("arm64", None),
    "arm64": ("arm64", None), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"), "armv8l": ("arm", "v8"), "i386": ("386", None),
    "i686": ("386", None), "ppc64le": ("ppc64le", None), "s390x": ("s390x", None),
    "riscv64": ("riscv64", None), "loongarch64": ("loong64", None),
}  # fmt: skip


def from_uname(system: str, machine: str) -> Platform:
    """The platform of a machine from `uname -s` and `uname -m` (pure: the caller reads them)."""
    arch, variant = _UNAME_TO_ARCH.get(machine.lower(), (machine.lower(), None))
    return Platform.of(system.lower(), arch, variant)
