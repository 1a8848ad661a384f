"""Hostile Dockerfiles, contexts and images against a real build: the host is never touched,
and every error is clear. Each test runs as root and rootless (`place`)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from tests.security.conftest import Place

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("runc"),
    reason="building needs root and runc",
)


def archive(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_add_into_a_symlinked_directory_stays_in_the_image(place: Place, tmp_path: Path) -> None:
    """The issue's reproduction: a context symlink to a host directory (the user's own,
    rootless), then ADD an archive (with a whiteout entry) through it."""
    target = place.space / "r1-target"
    target.mkdir()
    (target / "keep").write_text("keep\n")
    if place.user is not None:
        for path in (target, target / "keep"):
            shutil.chown(path, place.user, place.user)
    ctx = place.space / "ctx"
    (ctx / "tree").mkdir(parents=True)
    (ctx / "tree" / "evil").symlink_to(target)
    (ctx / "payload.tar").write_bytes(archive([("owned", b"PWNED\n"), (".wh.keep", b"")]))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY tree/ /\nADD payload.tar /evil/\n")
    mode_before = target.stat().st_mode
    result = place.polyarch("build", "--root", str(place.space / "root"), "--platform",
                            "linux/amd64", "-t", "local/r1:1", str(ctx))  # fmt: skip
    assert sorted(p.name for p in target.iterdir()) == ["keep"]
    assert (target / "keep").read_text() == "keep\n"
    assert target.stat().st_mode == mode_before
    assert result.returncode == 0, result.stderr
    # The archive landed where the symlink points inside the image.
    from tests.integration.test_build import flatten, image

    layout, manifest, _config = image(place.space / "root", "local/r1:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    inside = tree / str(target).lstrip("/")
    assert (inside / "owned").read_text() == "PWNED\n"


def test_copy_keeps_setuid_bits(place: Place, tmp_path: Path) -> None:
    ctx = place.space / "ctx"
    ctx.mkdir()
    tool = ctx / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY tool /tool\nCOPY --chown=10:10 tool /chowned\n"
        "COPY --chmod=2755 tool /setgid\n"
    )
    result = place.polyarch("build", "--root", str(place.space / "root"), "-t", "local/suid:1",
                            str(ctx))  # fmt: skip
    assert result.returncode == 0, result.stderr
    from tests.integration.test_build import flatten, image

    layout, manifest, _config = image(place.space / "root", "local/suid:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert stat.S_IMODE((tree / "tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((tree / "chowned").stat().st_mode) == 0o4755
    assert (tree / "chowned").stat().st_uid == 10
    assert stat.S_IMODE((tree / "setgid").stat().st_mode) == 0o2755


def test_empty_root_is_an_error(place: Place) -> None:
    ctx = place.space / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    result = place.polyarch("build", "--root", "", str(ctx))
    assert result.returncode == 2
    assert "--root" in result.stderr and "Traceback" not in result.stderr


def _image_with_dev_symlink(tmp_path: Path, registry: object, base: str) -> str:
    """The base image plus a layer that replaces /dev with a symlink to a host directory."""
    import gzip
    import hashlib
    import json as json_

    from polyarch.digest import Digest
    from polyarch.oci import mediatypes as mt
    from polyarch.oci.models import Descriptor, Index, Manifest
    from polyarch.reference import Reference
    from polyarch.registry import RegistryClient
    from tests.layer_tars import E, tar_bytes

    host = tmp_path / "host-dev"
    host.mkdir()
    client = RegistryClient()
    base_ref = Reference.parse(base)
    top = client.get_manifest(base_ref).document
    if isinstance(top, Index):
        top = client.get_manifest(base_ref.with_digest(top.manifests[0].digest)).document
    assert isinstance(top, Manifest)
    config = json_.loads(b"".join(client.get_blob(base_ref, top.config)))
    raw = tar_bytes(E(".wh.dev"), E("dev", "symlink", link=str(host)))
    blob = gzip.compress(raw, mtime=0)
    target = Reference.parse(registry.ref("hostile/devlink:1"))  # type: ignore[attr-defined]
    layer = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(blob), len(blob))
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(raw).hexdigest())
    config.pop("history", None)
    config_raw = json_.dumps(config).encode()
    config_desc = Descriptor(mt.OCI_CONFIG, Digest.of(config_raw), len(config_raw))
    for old in top.layers:
        client.upload_blob(target, old, lambda old=old: client.get_blob(base_ref, old))
    client.upload_blob(target, layer, lambda: [blob])
    client.upload_blob(target, config_desc, lambda: [config_raw])
    manifest = Manifest.create(config_desc, [*top.layers, layer])
    client.put_manifest(target, manifest.raw, manifest.media_type)
    return str(target)


def test_a_dev_symlink_in_the_image_never_reaches_the_host(
    place: Place, registry: object, base: str
) -> None:
    ref = _image_with_dev_symlink(place.space, registry, base)
    host = place.space / "host-dev"
    if place.user is not None:
        shutil.chown(host, place.user, place.user)
    ctx = place.space / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN echo hi\n")
    result = place.polyarch("build", "--root", str(place.space / "r1"), str(ctx))
    assert result.returncode == 1
    assert "/dev is a symlink in the image" in result.stderr
    assert list(host.iterdir()) == []  # nothing created, no ptmx replaced
    verify = place.polyarch("verify", "--root", str(place.space / "r2"), "--run", "true", ref)
    assert verify.returncode == 1
    assert "/dev is a symlink in the image" in verify.stdout + verify.stderr
    assert list(host.iterdir()) == []


def test_a_symlinked_dockerfile_is_not_followed(place: Place) -> None:
    secret = place.space / "secret"
    secret.write_text("root:supersecret:0:0\n")
    if place.user is not None:  # the user's own file: rootless, it could read it
        shutil.chown(secret, place.user, place.user)
    ctx = place.space / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").symlink_to(secret)
    result = place.polyarch("build", "--root", str(place.space / "root"), str(ctx))
    assert result.returncode == 1
    assert "symlink" in result.stderr and "supersecret" not in result.stderr
    (ctx / "Dockerfile").unlink()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    (ctx / ".dockerignore").symlink_to("/dev/zero")
    result = place.polyarch("build", "--root", str(place.space / "root"), str(ctx))
    assert result.returncode == 1 and "symlink" in result.stderr


def test_a_layout_pointing_at_dev_zero_is_refused(place: Place) -> None:
    layout = place.space / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").symlink_to("/dev/zero")
    result = place.polyarch("inspect", f"oci:{layout}:x")
    assert result.returncode == 1
    assert "symlink" in result.stderr and "Traceback" not in result.stderr


def test_a_socket_left_by_a_step_is_not_in_the_layer(
    place: Place, tmp_path: Path, base: str
) -> None:
    ctx = place.space / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nRUN perl -MIO::Socket::UNIX -e "
        "'IO::Socket::UNIX->new(Type=>SOCK_STREAM(),Local=>\"/sock\",Listen=>1) or die' "
        "&& echo made > /marker\n"
    )
    result = place.polyarch("build", "--root", str(place.space / "root"), "-t", "local/sock:1",
                            str(ctx))  # fmt: skip
    assert result.returncode == 0, result.stderr
    from tests.integration.test_build import flatten, image

    layout, manifest, _config = image(place.space / "root", "local/sock:1")
    tree = flatten(layout, manifest, tmp_path / "tree")
    assert (tree / "marker").is_file() and not (tree / "sock").exists()


def test_a_damaged_cache_is_set_aside(place: Place) -> None:
    root = place.space / "root"
    ctx = place.space / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /d\n")
    assert place.polyarch("build", "--root", str(root), str(ctx)).returncode == 0
    (root / "cache.db").write_bytes(os.urandom(8192))
    for name in ("cache.db-wal", "cache.db-shm"):
        (root / name).unlink(missing_ok=True)
    again = place.polyarch("build", "--root", str(root), str(ctx))
    assert again.returncode == 0, again.stderr
    assert "damaged" in again.stderr and (root / "cache.db.damaged").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("[a]\n" + "x = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML"),
     (None, "not UTF-8")],
    ids=["nested", "latin-1"],
)  # fmt: skip
def test_bad_project_files_are_clear_errors(place: Place, text: str | None, fragment: str) -> None:
    config = place.space / "polyarch.toml"
    if text is None:
        config.write_bytes("[image]\nname = 'caf\xe9'\n".encode("latin-1"))
    else:
        config.write_text(text)
    result = place.polyarch("--config", str(config), "config")
    assert result.returncode in (1, 2)
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_docker_output_to_a_directory_is_refused_first(place: Place) -> None:
    ctx = place.space / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /d\n")
    result = place.polyarch("build", "--root", str(place.space / "root"), "--output",
                            f"type=docker,dest={place.space}", str(ctx))  # fmt: skip
    assert result.returncode == 2
    assert "is a directory" in result.stderr
