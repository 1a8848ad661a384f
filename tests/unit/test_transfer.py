import json
from pathlib import Path

import httpx
import pytest

from polyarch.digest import Digest
from polyarch.errors import RegistryError, UsageError, VerificationError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.registry import RegistryClient, RetryPolicy, Timing
from polyarch.store import OciLayout
from polyarch.transfer import (
    LayoutLocation,
    LayoutRepository,
    RegistryRepository,
    copy_image,
    create_index,
    parse_location,
    select_platforms,
)
from tests.fakes import FakeRegistry
from tests.images import write_layout_image

PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def layout_source(path: Path, name: str | None = "latest") -> LayoutRepository:
    return LayoutRepository(LayoutLocation(str(path), name), create=False)


def layout_target(path: Path, name: str | None = None) -> LayoutRepository:
    return LayoutRepository(LayoutLocation(str(path), name), create=True)


def registry_repo(registry: FakeRegistry, text: str) -> RegistryRepository:
    client = RegistryClient(
        transport=registry.transport(),
        timing=Timing(sleep=lambda s: None),
        retry=RetryPolicy(attempts=2),
    )
    return RegistryRepository(client, Reference.parse(text))


def test_parse_location() -> None:
    assert parse_location("oci:./out:v1") == LayoutLocation("./out", "v1")
    assert parse_location("oci:/tmp/x") == LayoutLocation("/tmp/x", None)
    assert parse_location("oci:/a:b/c") == LayoutLocation("/a:b/c", None)
    assert parse_location("docker://nginx") == Reference.parse("nginx")
    assert parse_location("localhost:5000/a:t") == Reference.parse("localhost:5000/a:t")


def test_layout_to_layout_keeps_every_byte(tmp_path: Path) -> None:
    digest = write_layout_image(tmp_path / "src", PLATFORMS)
    report = copy_image(layout_source(tmp_path / "src"), layout_target(tmp_path / "dst", "v1"))
    assert str(report.digest) == digest
    assert report.platforms == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    # 1 shared + 3 own layers + 3 configs, each once.
    assert (report.uploaded, report.existing) == (7, 0)
    src_blobs = sorted(p.name for p in (tmp_path / "src/blobs/sha256").iterdir())
    dst_blobs = sorted(p.name for p in (tmp_path / "dst/blobs/sha256").iterdir())
    assert src_blobs == dst_blobs
    again = copy_image(layout_source(tmp_path / "src"), layout_target(tmp_path / "dst", "v1"))
    assert (again.uploaded, again.existing) == (0, 7)


def test_platform_selection_makes_a_smaller_index(tmp_path: Path) -> None:
    write_layout_image(tmp_path / "src", PLATFORMS)
    report = copy_image(
        layout_source(tmp_path / "src"),
        layout_target(tmp_path / "dst"),
        platforms=[Platform.parse("linux/arm64")],
    )
    assert report.platforms == ["linux/arm64"]
    layout = OciLayout(tmp_path / "dst")
    top = layout.resolve("latest")
    entries = json.loads(layout.read_document(top))["manifests"]
    assert [e["platform"]["architecture"] for e in entries] == ["arm64"]
    assert top.media_type == mt.OCI_INDEX


def test_platform_selection_errors(tmp_path: Path) -> None:
    write_layout_image(tmp_path / "src", ["linux/amd64"])
    with pytest.raises(UsageError, match=r"no image for linux/s390x \(it has: linux/amd64\)"):
        copy_image(
            layout_source(tmp_path / "src"),
            layout_target(tmp_path / "dst"),
            platforms=[Platform.parse("s390x")],
        )
    assert not (tmp_path / "dst" / "blobs" / "sha256").exists() or not any(
        (tmp_path / "dst" / "blobs" / "sha256").iterdir()
    )


def test_select_platforms_keeps_original_when_all_chosen(tmp_path: Path) -> None:
    write_layout_image(tmp_path / "src", ["linux/amd64", "linux/arm64"])
    top = layout_source(tmp_path / "src").resolve().document
    assert isinstance(top, Index)
    same = select_platforms(top, Platform.parse_list(["linux/arm64,linux/amd64"]), "src")
    assert same is top


def test_layout_to_registry_and_back(tmp_path: Path) -> None:
    registry = FakeRegistry()
    digest = write_layout_image(tmp_path / "src", PLATFORMS)
    report = copy_image(layout_source(tmp_path / "src"), registry_repo(registry, "reg.test/a:v1"))
    assert str(report.digest) == digest
    assert registry.tags["a"]["v1"] == digest
    back = copy_image(registry_repo(registry, "reg.test/a:v1"), layout_target(tmp_path / "back"))
    assert str(back.digest) == digest


def test_registry_to_registry_mounts_within_one_registry(tmp_path: Path) -> None:
    registry = FakeRegistry()
    write_layout_image(tmp_path / "src", PLATFORMS)
    copy_image(layout_source(tmp_path / "src"), registry_repo(registry, "reg.test/a:v1"))
    report = copy_image(
        registry_repo(registry, "reg.test/a:v1"), registry_repo(registry, "reg.test/b:v1")
    )
    assert (report.mounted, report.uploaded) == (7, 0)
    assert not [r for r in registry.log if r.method == "GET" and "/blobs/" in r.url.path]


def test_failed_copy_leaves_existing_tag_untouched(tmp_path: Path) -> None:
    registry = FakeRegistry()
    old = write_layout_image(tmp_path / "old", ["linux/amd64"], seed=1)
    copy_image(layout_source(tmp_path / "old"), registry_repo(registry, "reg.test/a:v1"))
    write_layout_image(tmp_path / "new", PLATFORMS, seed=2)
    # Corrupt one blob of the new image: the copy must fail before the tag moves.
    victim = max((tmp_path / "new/blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    victim.write_bytes(b"x" * victim.stat().st_size)
    with pytest.raises(VerificationError):
        copy_image(layout_source(tmp_path / "new"), registry_repo(registry, "reg.test/a:v1"))
    assert registry.tags["a"]["v1"] == old
    assert not [r for r in registry.log if r.method == "PUT" and r.url.path.endswith("/v1")][1:]


def test_registry_failure_midway_leaves_tag(tmp_path: Path) -> None:
    registry = FakeRegistry()
    old = write_layout_image(tmp_path / "old", ["linux/amd64"], seed=1)
    copy_image(layout_source(tmp_path / "old"), registry_repo(registry, "reg.test/a:v1"))
    write_layout_image(tmp_path / "new", PLATFORMS, seed=2)
    registry.faults.append(
        lambda r: httpx.Response(500) if r.method == "PUT" and "/manifests/sha256" in r.url.path
        else None
    )  # fmt: skip
    with pytest.raises(RegistryError):
        copy_image(layout_source(tmp_path / "new"), registry_repo(registry, "reg.test/a:v1"))
    assert registry.tags["a"]["v1"] == old


def test_index_create_from_single_platform_images(tmp_path: Path) -> None:
    registry = FakeRegistry()
    for platform in PLATFORMS:
        src = tmp_path / platform.replace("/", "-")
        write_layout_image(src, [platform], seed=len(platform))
        # Push each as a plain image (the index's only entry), as `build one arch` would.
        layout = OciLayout(src)
        index = layout.read_document(layout.resolve("latest"))
        entry = json.loads(index)["manifests"][0]
        single = Descriptor(entry["mediaType"], Digest.parse(entry["digest"]), entry["size"])
        layout.set_ref("single", single)
        tag = platform.replace("/", "-")
        copy_image(layout_source(src, "single"), registry_repo(registry, f"reg.test/parts:{tag}"))
    sources = [registry_repo(registry, f"reg.test/parts:{p.replace('/', '-')}") for p in PLATFORMS]
    report = create_index(sources, registry_repo(registry, "reg.test/app:v1"))
    assert report.platforms == PLATFORMS
    assert report.media_type == mt.OCI_INDEX
    fetched = registry_repo(registry, "reg.test/app:v1").resolve().document
    assert isinstance(fetched, Index)
    for entry in fetched.manifests:
        child = registry_repo(registry, "reg.test/app:v1").fetch_document(entry)
        assert isinstance(child, Manifest)
    assert report.mounted > 0  # blobs came across repositories by mount, not by download


def test_index_create_refuses_two_images_for_one_platform(tmp_path: Path) -> None:
    registry = FakeRegistry()
    for seed in (1, 2):
        write_layout_image(tmp_path / f"s{seed}", ["linux/amd64"], seed=seed)
        copy_image(
            layout_source(tmp_path / f"s{seed}"), registry_repo(registry, f"reg.test/p:{seed}")
        )
    with pytest.raises(UsageError, match="two images for linux/amd64"):
        create_index(
            [registry_repo(registry, "reg.test/p:1"), registry_repo(registry, "reg.test/p:2")],
            registry_repo(registry, "reg.test/app:v1"),
        )
    assert "app" not in registry.tags
