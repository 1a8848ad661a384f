"""polyarch against a real Distribution registry, cross-checked with skopeo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polyarch.api import RegistryOptions, Session
from polyarch.digest import Digest
from polyarch.errors import AuthenticationError, RegistryError, VerificationError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor
from polyarch.reference import Reference
from polyarch.registry import RegistryClient
from tests.images import write_layout_image
from tests.registry_server import RunningRegistry

PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def polyarch(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", *args], capture_output=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"polyarch {' '.join(args)} failed ({result.returncode}):\n{result.stderr.decode()}"
        )
    return result


def skopeo_raw(registry: RunningRegistry, ref: str) -> bytes:
    return subprocess.run(
        ["skopeo", "inspect", "--raw", *registry.skopeo_args(""), f"docker://{ref}"],
        check=True,
        capture_output=True,
    ).stdout


def test_pushed_index_reads_identically_with_skopeo(
    registry: RunningRegistry, skopeo: str, tmp_path: Path
) -> None:
    digest = write_layout_image(tmp_path / "src", PLATFORMS, name="v1")
    ref = registry.ref("cross/pushed:v1")
    out = polyarch("copy", f"oci:{tmp_path / 'src'}:v1", ref).stdout.decode()
    assert digest in out and "linux/arm/v7" in out
    ours = polyarch("inspect", "--raw", ref).stdout
    theirs = skopeo_raw(registry, ref)
    assert ours == theirs
    assert Digest.of(theirs) == Digest.parse(digest)
    for entry in json.loads(theirs)["manifests"]:
        child = skopeo_raw(registry, f"{registry.ref('cross/pushed')}@{entry['digest']}")
        assert Digest.of(child) == Digest.parse(entry["digest"])
    table = polyarch("inspect", ref).stdout.decode()
    for platform in PLATFORMS:
        assert platform in table


def test_skopeo_pushes_and_polyarch_copies_and_inspects(
    registry: RunningRegistry, skopeo: str, tmp_path: Path
) -> None:
    write_layout_image(tmp_path / "src", PLATFORMS, name="v1", seed=7)
    ref = registry.ref("cross/by-skopeo:v1")
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'src'}:v1",
            f"docker://{ref}",
        ],
        check=True,
        capture_output=True,
    )
    pushed = Digest.of(skopeo_raw(registry, ref))
    info = json.loads(polyarch("inspect", "--format", "json", ref).stdout)
    assert info["digest"] == str(pushed)
    assert [m["platform"]["architecture"] for m in info["manifests"]] == ["amd64", "arm64", "arm"]
    arm = json.loads(polyarch("inspect", "--format", "json", "--platform", "arm/v7", ref).stdout)
    assert arm["platform"] == "linux/arm/v7"
    # Registry to registry within one registry: blobs are mounted, not downloaded.
    out = polyarch("copy", ref, registry.ref("cross/copied:v1")).stdout.decode()
    assert "0 copied" in out and "7 mounted" in out
    assert Digest.of(skopeo_raw(registry, registry.ref("cross/copied:v1"))) == pushed
    # Registry to a layout polyarch writes, which skopeo must read back identically.
    polyarch("copy", ref, f"oci:{tmp_path / 'out'}:v1")
    layout_raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'out'}:v1"],
        check=True,
        capture_output=True,
    ).stdout
    assert Digest.of(layout_raw) == pushed
    subprocess.run(
        ["skopeo", "copy", "--all", f"oci:{tmp_path / 'out'}:v1", f"dir:{tmp_path / 'dir'}"],
        check=True,
        capture_output=True,
    )


def test_copy_between_two_registries_skips_existing(
    registry: RunningRegistry, second_registry: RunningRegistry, tmp_path: Path
) -> None:
    write_layout_image(tmp_path / "src", PLATFORMS, name="v1", seed=3)
    polyarch("copy", f"oci:{tmp_path / 'src'}:v1", registry.ref("two/app:v1"))
    first = polyarch("copy", registry.ref("two/app:v1"), second_registry.ref("two/app:v1"))
    assert "7 copied" in first.stdout.decode()
    again = polyarch("copy", registry.ref("two/app:v1"), second_registry.ref("two/app:v2"))
    assert "0 copied" in again.stdout.decode() and "7 already there" in again.stdout.decode()
    only_arm = polyarch(
        "copy",
        "--platform",
        "linux/arm64",
        registry.ref("two/app:v1"),
        second_registry.ref("two/arm:v1"),
    ).stdout.decode()
    assert "platforms linux/arm64;" in only_arm


def test_failed_push_leaves_the_existing_tag(registry: RunningRegistry, tmp_path: Path) -> None:
    write_layout_image(tmp_path / "old", ["linux/amd64"], name="v1", seed=11)
    polyarch("copy", f"oci:{tmp_path / 'old'}:v1", registry.ref("safe/app:v1"))
    before = skopeo_raw(registry, registry.ref("safe/app:v1"))
    write_layout_image(tmp_path / "new", PLATFORMS, name="v1", seed=12)
    victim = max((tmp_path / "new/blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    victim.write_bytes(b"\0" * victim.stat().st_size)
    result = polyarch(
        "copy", f"oci:{tmp_path / 'new'}:v1", registry.ref("safe/app:v1"), check=False
    )
    assert result.returncode == 1
    assert "does not match" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
    assert skopeo_raw(registry, registry.ref("safe/app:v1")) == before


def test_index_create_from_per_platform_pushes(registry: RunningRegistry, tmp_path: Path) -> None:
    session = Session(RegistryOptions())
    parts = []
    for i, platform in enumerate(["linux/amd64", "linux/arm64"]):
        layout = tmp_path / f"p{i}"
        write_layout_image(layout, [platform], name="idx", seed=20 + i)
        ref = registry.ref(f"agg/part:{platform.split('/')[1]}")
        session.copy(f"oci:{layout}:idx", ref, platforms=[])
        # Push the single manifest (not the one-entry index) as buildx per-arch builds do.
        single = json.loads(polyarch("inspect", "--raw", ref).stdout)["manifests"][0]["digest"]
        polyarch("copy", f"{registry.ref('agg/part')}@{single}", ref)
        parts.append(ref)
    out = polyarch("index", "create", registry.ref("agg/app:1.1.0"), *parts).stdout.decode()
    assert "platforms linux/amd64,linux/arm64" in out
    index = json.loads(polyarch("inspect", "--raw", registry.ref("agg/app:1.1.0")).stdout)
    assert index["mediaType"] == mt.OCI_INDEX
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    session.close()


def test_tags_chunked_upload_and_verified_download(registry: RunningRegistry) -> None:
    ref = Reference.parse(registry.ref("api/blobs:x"))
    with RegistryClient() as client:
        data = bytes(range(256)) * 40_000  # about 10 MB
        desc = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(data), len(data))
        chunks = [data[i : i + 1_000_000] for i in range(0, len(data), 1_000_000)]
        assert client.upload_blob(ref, desc, lambda: chunks, chunk_size=3_000_000) == "uploaded"
        assert client.upload_blob(ref, desc, lambda: chunks) == "exists"
        assert client.blob_size(ref, desc.digest) == len(data)
        assert b"".join(client.get_blob(ref, desc)) == data
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        cdesc = Descriptor(mt.OCI_CONFIG, Digest.of(config), len(config))
        client.upload_blob(ref, cdesc, lambda: [config])
        from polyarch.oci.models import Manifest

        manifest = Manifest.create(cdesc, [desc])
        for i in range(5):
            client.put_manifest(ref.with_tag(f"t{i}"), manifest.raw, manifest.media_type)
        assert sorted(client.list_tags(ref, page_size=2)) == [f"t{i}" for i in range(5)]
        # A descriptor that lies about the content is caught on download.
        wrong = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(b"other"), len(data))
        with pytest.raises(RegistryError):
            b"".join(client.get_blob(ref, wrong))
        liar = Descriptor(mt.OCI_LAYER_GZIP, desc.digest, len(data) - 1)
        with pytest.raises(VerificationError):
            b"".join(client.get_blob(ref, liar))


def test_tls_registry_with_basic_auth(
    secure_registry: RunningRegistry, skopeo: str, tmp_path: Path
) -> None:
    write_layout_image(tmp_path / "src", ["linux/amd64", "linux/arm64"], name="v1", seed=30)
    ref = secure_registry.ref("private/app:v1")
    args = secure_registry.polyarch_args()
    polyarch(*args, "copy", f"oci:{tmp_path / 'src'}:v1", ref)
    ours = polyarch(*args, "inspect", "--raw", ref).stdout
    assert ours == skopeo_raw(secure_registry, ref)
    # Without credentials: 401 with a clear message; without the CA: not trusted, no http.
    no_auth = polyarch("--certs-dir", str(secure_registry.certs_dir), "inspect", ref, check=False)
    assert no_auth.returncode == 1
    assert b"HTTP 401" in no_auth.stderr and b"docker login" in no_auth.stderr
    assert b"no credentials for" in no_auth.stderr
    no_ca = polyarch("--authfile", str(secure_registry.authfile), "inspect", ref, check=False)
    assert no_ca.returncode == 1
    assert b"not trusted" in no_ca.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"auths": {secure_registry.host: {"username": "builder", "password": "wrong"}}})
    )
    wrong = polyarch(
        "--certs-dir",
        str(secure_registry.certs_dir),
        "--authfile",
        str(bad),
        "inspect",
        ref,
        check=False,
    )
    assert wrong.returncode == 1 and b"HTTP 401" in wrong.stderr
    assert b"wrong" not in wrong.stderr
    # Rejected credentials are told from missing ones, naming where they came from.
    assert b"rejected the credentials for user 'builder' from " + str(bad).encode() in wrong.stderr


def test_tls_auth_errors_in_the_api(secure_registry: RunningRegistry) -> None:
    options = RegistryOptions(certs_dirs=(secure_registry.certs_dir,))  # type: ignore[arg-type]
    with Session(options) as session, pytest.raises(AuthenticationError) as info:
        session.inspect(secure_registry.ref("private/none:v1"))
    assert info.value.status == 401


def test_cli_errors_are_one_line_with_status_and_code(registry: RunningRegistry) -> None:
    missing = polyarch("inspect", registry.ref("nothing/here:v1"), check=False)
    assert missing.returncode == 1
    err = missing.stderr.decode()
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "HTTP 404" in err and "MANIFEST_UNKNOWN" in err and "nothing/here:v1" in err
    bad_ref = polyarch("inspect", "Not/A:Ref:", check=False)
    assert bad_ref.returncode == 1 and b"invalid" in bad_ref.stderr
    assert polyarch("--version").stdout.decode().startswith("polyarch, version ")
