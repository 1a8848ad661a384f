"""The exported cache's format: entries, merging writers, limits, and the spec flags."""

from __future__ import annotations

import pytest

from polyarch.digest import Digest
from polyarch.errors import UsageError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor
from polyarch.remotecache.format import (
    ARTIFACT_TYPE,
    CONFIG_TYPE,
    CacheFormatError,
    CacheRecord,
    CacheSpec,
    artifact,
    decode_config,
    encode_config,
    is_writer_tag,
    limit,
    merge,
    parse_cache_spec,
    writer_tag,
)


def record(
    key: str, size: int = 100, exported: float = 0.0, layer: str | None = None
) -> CacheRecord:
    digest = Digest.of((layer or key).encode())
    return CacheRecord(key, Descriptor(mt.OCI_LAYER_GZIP, digest, size), digest,
                       "2026-01-01T00:00:00Z", f"RUN {key}", exported)  # fmt: skip


def test_config_round_trip_is_canonical() -> None:
    records = [record("b"), record("a"), CacheRecord("c", None, None, "", "ENV", 5.0)]
    raw = encode_config(records)
    assert encode_config(reversed(records)) == raw
    assert decode_config(raw, "x") == sorted(records, key=lambda r: r.key)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"version": 2, "entries": []}', b'{"version": 1, "entries": {}}',
     b'{"version": 1, "entries": [{"key": 1}]}',
     b'{"version": 1, "entries": [{"key": "k", "layer": {"mediaType": "text/plain", '
     b'"digest": "sha256:' + b"0" * 64 + b'", "size": 1}, "diffID": "sha256:' + b"0" * 64 +
     b'"}]}'],
)  # fmt: skip
def test_bad_configs_are_refused(raw: bytes) -> None:
    with pytest.raises(CacheFormatError):
        decode_config(raw, "x")


def test_merge_keeps_every_writers_entries_and_the_latest_export_of_each() -> None:
    amd = [record("amd-step", exported=10), record("shared", exported=10)]
    arm = [record("arm-step", exported=20), record("shared", size=7, exported=20)]
    merged = merge(amd, arm)
    assert [r.key for r in merged] == ["amd-step", "arm-step", "shared"]
    assert [r.size for r in merged if r.key == "shared"] == [7]
    assert merge(arm, amd) == merged  # the order of the writers does not matter


def test_limits_drop_old_then_oldest_beyond_the_size() -> None:
    records = [record("old", exported=0), record("mid", exported=50), record("new", exported=90)]
    assert [r.key for r in limit(records, now=100, max_age=60)] == ["mid", "new"]
    assert [r.key for r in limit(records, now=100, max_size=250)] == ["mid", "new"]
    # A layer named by two entries counts once.
    shared = [record("x", exported=1, layer="L"), record("y", exported=2, layer="L")]
    assert len(limit(shared, now=3, max_size=100)) == 2


def test_artifact_names_each_layer_once() -> None:
    records = [record("x", layer="L"), record("y", layer="L"), record("z")]
    config = Descriptor(CONFIG_TYPE, Digest.of(b"{}"), 2)
    manifest = artifact(config, records)
    assert manifest.artifact_type == ARTIFACT_TYPE
    assert b'"artifactType":"' + ARTIFACT_TYPE.encode() in manifest.raw
    assert len(manifest.layers) == 2


def test_writer_tags() -> None:
    tag = writer_tag("buildcache", ["linux/arm64"], "")
    assert tag.startswith("buildcache--linux-arm64-") and len(tag) <= 128
    assert is_writer_tag(tag, "buildcache") and not is_writer_tag("buildcache", "buildcache")
    assert writer_tag("c", ["linux/amd64"], "") != writer_tag("c", ["linux/arm64"], "")
    assert writer_tag("c", ["linux/amd64"], "a") != writer_tag("c", ["linux/amd64"], "b")
    with pytest.raises(CacheFormatError):
        writer_tag("t" * 120, ["linux/amd64"], "")


def test_cache_specs() -> None:
    assert parse_cache_spec("r.lan/app:cache", export=False) == CacheSpec(
        "registry", "r.lan/app:cache"
    )
    assert parse_cache_spec("type=registry,ref=r/a:c,mode=max,max-age=24h,max-size=1GB,"
                            "ignore-error=true", export=True) == CacheSpec(
        "registry", "r/a:c", "cache", "max", 86400.0, 10**9, True)  # fmt: skip
    assert parse_cache_spec("type=local,src=/tmp/c,tag=x", export=False) == CacheSpec(
        "local", "/tmp/c", "x")  # fmt: skip
    for text, export, message in [
        ("type=gha", True, "gha caches are not supported"),
        ("type=registry", True, "needs ref=REF"),
        ("type=local,src=/x", True, "not src"),
        ("type=registry,ref=a/b:c,mode=max", False, "not mode"),
        ("type=registry,ref=a/b:c,mode=all", True, "mode must be min or max"),
        ("type=registry,ref=a/b:c,ref=d/e:f", True, "repeated"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_cache_spec(text, export=export)
