"""`--annotation` parsed as buildx parses it."""

from __future__ import annotations

import pytest

from polyarch.errors import UsageError
from polyarch.image.annotations import Annotation, for_level, parse_annotation
from polyarch.platform import Platform


def test_levels_platforms_and_keys_with_colons() -> None:
    assert parse_annotation("org.opencontainers.image.title=app") == [
        Annotation("manifest", "org.opencontainers.image.title", "app")]  # fmt: skip
    assert parse_annotation("index,manifest:k=v=w") == [
        Annotation("index", "k", "v=w"), Annotation("manifest", "k", "v=w")]  # fmt: skip
    arm = Platform.parse("linux/arm64")
    only_arm = parse_annotation("manifest[linux/arm64]:k=v")
    assert only_arm == [Annotation("manifest", "k", "v", arm)]
    assert for_level(only_arm, "manifest", arm) == {"k": "v"}
    assert for_level(only_arm, "manifest", Platform.parse("linux/amd64")) == {}
    assert for_level(only_arm, "index") == {}
    # A key with a colon that is not a level stays whole (a manifest annotation).
    assert parse_annotation("com.example:build=1") == [
        Annotation("manifest", "com.example:build", "1")]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [("novalue", "KEY=VALUE"), ("index-descriptor:k=v", "not supported"),
     ("index[linux/amd64]:k=v", "no platform"), ("manifest:=v", "no key")],
)  # fmt: skip
def test_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_annotation(text)
