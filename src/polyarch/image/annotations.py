"""`--annotation` as buildx takes it (pure): `KEY=VALUE` for every image manifest, or with
the levels first, `index,manifest:KEY=VALUE`, and a platform, `manifest[linux/arm64]:K=V`.

Levels: `manifest` (the default), `index` (needs an index: two or more platforms),
`manifest-descriptor` (the manifest's entry in the index). `index-descriptor` (the entry of
an OCI layout's index.json) is refused: polyarch does not write it yet."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from polyarch.errors import UsageError
from polyarch.platform import Platform

LEVELS = ("manifest", "index", "manifest-descriptor")
_LEVEL = re.compile(r"^(?P<level>[a-z-]+)(?:\[(?P<platform>[^\]]+)\])?$")


@dataclass(frozen=True, slots=True)
class Annotation:
    level: str
    key: str
    value: str
    platform: Platform | None = None  # only for the image of this platform

    def applies(self, level: str, platform: Platform | None = None) -> bool:
        if self.level != level:
            return False
        return self.platform is None or platform is None or self.platform == platform


def parse_annotation(text: str) -> list[Annotation]:
    head, eq, value = text.partition("=")
    if not eq or not head:
        raise UsageError(f"--annotation wants [LEVEL[,LEVEL][[PLATFORM]]:]KEY=VALUE, got {text!r}")
    levels_text, colon, key = head.rpartition(":")
    # A key may hold colons itself (org.opencontainers.image.source is common; `a:b` too):
    # the part before the last colon is levels only when each of its parts is one.
    parts = levels_text.split(",") if colon else []
    matches = [_LEVEL.match(p.strip()) for p in parts]
    if not colon or not all(m and m.group("level") in (*LEVELS, "index-descriptor")
                            for m in matches):  # fmt: skip
        return [Annotation("manifest", head, value)]
    if not key:
        raise UsageError(f"--annotation {text!r}: no key")
    out = []
    for match in matches:
        assert match is not None
        level = match.group("level")
        if level == "index-descriptor":
            raise UsageError(f"--annotation {text!r}: index-descriptor annotations are not "
                             "supported (use index or manifest)")  # fmt: skip
        platform = Platform.parse(match.group("platform")) if match.group("platform") else None
        if platform is not None and level == "index":
            raise UsageError(f"--annotation {text!r}: an index has no platform")
        out.append(Annotation(level, key, value, platform))
    return out


def parse_annotations(values: Iterable[str]) -> tuple[Annotation, ...]:
    return tuple(a for text in values for a in parse_annotation(text))


def for_level(
    annotations: Iterable[Annotation], level: str, platform: Platform | None = None
) -> Mapping[str, str]:
    return {a.key: a.value for a in annotations if a.applies(level, platform)}
