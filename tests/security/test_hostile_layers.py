"""Hostile layers: every escape is refused or confined, and the host is never touched."""

import os
from pathlib import Path

import pytest

from polyarch.layers import UnsafePathError, apply_layer
from tests.layer_tars import E, stream


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A root to extract into, and a 'host' directory beside it that must stay untouched."""
    root = tmp_path / "root"
    host = tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (host / "passwd").write_text("host secret\n")
    return root, host


def host_untouched(host: Path) -> None:
    assert sorted(p.name for p in host.iterdir()) == ["passwd"]
    assert (host / "passwd").read_text() == "host secret\n"


@pytest.mark.parametrize(
    "name", ["../host/evil", "a/../../host/evil", "../../../../../../tmp/evil", "a/b/../../../x"]
)
def test_dotdot_names_are_refused(world: tuple[Path, Path], name: str) -> None:
    root, host = world
    with pytest.raises(UnsafePathError, match=r"\.\."):
        apply_layer(stream(E(name, data=b"pwned")), root)
    host_untouched(host)


def test_absolute_names_stay_inside(world: tuple[Path, Path]) -> None:
    root, host = world
    apply_layer(stream(E(f"{host}/evil", data=b"inside")), root)
    assert (root / str(host).lstrip("/") / "evil").read_bytes() == b"inside"
    host_untouched(host)


@pytest.mark.parametrize("target", ["/", "../..", "../../host", "/../../../"])
def test_writing_through_a_symlink_is_confined(world: tuple[Path, Path], target: str) -> None:
    root, host = world
    apply_layer(
        stream(E("link", "symlink", link=target), E("link/passwd", data=b"overwritten")), root
    )
    host_untouched(host)
    assert b"overwritten" in b"".join(p.read_bytes() for p in root.rglob("passwd"))


def test_absolute_symlink_to_host_dir_is_resolved_in_root(world: tuple[Path, Path]) -> None:
    root, host = world
    apply_layer(stream(E("d", "symlink", link=str(host)), E("d/new", data=b"x")), root)
    host_untouched(host)
    assert (root / str(host).lstrip("/") / "new").read_bytes() == b"x"
    assert os.readlink(root / "d") == str(host)  # the link itself is kept as written


def test_symlink_chain_and_loop(world: tuple[Path, Path]) -> None:
    root, host = world
    apply_layer(
        stream(
            E("a", "symlink", link="b"),
            E("b", "symlink", link="../c"),
            E("c", "symlink", link=f"{host}/.."),
            E("a/escaped", data=b"x"),
        ),
        root,
    )
    host_untouched(host)
    with pytest.raises(UnsafePathError, match="too many levels"):
        apply_layer(stream(E("l1", "symlink", link="l2"), E("l2", "symlink", link="l1"),
                           E("l1/f", data=b"x")), root)  # fmt: skip


def test_hardlinks_cannot_reach_outside(world: tuple[Path, Path]) -> None:
    root, host = world
    with pytest.raises(UnsafePathError):
        apply_layer(stream(E("hl", "hardlink", link="../host/passwd")), root)
    # An absolute link name is inside the root, where the target does not exist.
    with pytest.raises(UnsafePathError, match="target not in the layers"):
        apply_layer(stream(E("hl", "hardlink", link=f"{host}/passwd")), root)
    # A hard link to a symlink that points out links the symlink, never the host file.
    apply_layer(
        stream(E("sl", "symlink", link=f"{host}/passwd"), E("hl2", "hardlink", link="sl")), root
    )
    assert os.path.islink(root / "hl2")
    assert os.stat(root / "hl2", follow_symlinks=False).st_ino == os.lstat(root / "sl").st_ino
    host_untouched(host)


def test_hardlink_through_symlinked_directory_is_confined(world: tuple[Path, Path]) -> None:
    root, host = world
    with pytest.raises(UnsafePathError):
        apply_layer(stream(E("d", "symlink", link=str(host)), E("hl", "hardlink", link="d/passwd")),
                    root)  # fmt: skip
    host_untouched(host)


@pytest.mark.parametrize("name", [".wh..", "a/.wh..", ".wh.", ".wh..wh.x", "a/.wh.."])
def test_bad_whiteouts_are_refused(world: tuple[Path, Path], name: str) -> None:
    root, host = world
    (root / "a").mkdir()
    with pytest.raises(UnsafePathError, match="invalid whiteout"):
        apply_layer(stream(E(name)), root)
    host_untouched(host)
    assert (root / "a").is_dir()


def test_whiteout_through_symlink_removes_inside_only(world: tuple[Path, Path]) -> None:
    root, host = world
    apply_layer(stream(E("h", "symlink", link=str(host)), E("h/.wh.passwd")), root)
    host_untouched(host)


def test_entries_naming_the_root(world: tuple[Path, Path]) -> None:
    root, host = world
    for name in (".", "./", "/", "a/.."):
        if name == "a/..":
            with pytest.raises(UnsafePathError):
                apply_layer(stream(E(name, "symlink", link="/")), root)
            continue
        with pytest.raises(UnsafePathError, match="root itself"):
            apply_layer(stream(E(name, "symlink", link=str(host))), root)
    # A directory entry for the root is fine: it only sets the root's mode.
    apply_layer(stream(E("./", "dir", mode=0o755)), root)
    assert root.is_dir() and not root.is_symlink()
    host_untouched(host)


def test_device_nodes_need_root(world: tuple[Path, Path]) -> None:
    root, _host = world
    with pytest.raises(UnsafePathError, match="device node"):
        apply_layer(stream(E("dev/sda", "blk")), root, allow_devices=False)
    assert not (root / "dev" / "sda").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="creating device nodes needs root")
def test_device_nodes_as_root(world: tuple[Path, Path]) -> None:
    root, _ = world
    apply_layer(stream(E("dev/null", "chr", mode=0o666)), root)
    st = os.lstat(root / "dev" / "null")
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0


def test_device_nodes_are_skipped_rootless(
    world: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the rootless user namespace no device node can be made: a base image's are skipped
    (as containerd does there), the rest of the layer is applied."""
    monkeypatch.setenv("POLYARCH_ROOTLESS", "1")
    root, host = world
    apply_layer(stream(E("dev/sda", "blk"), E("dev/null", "chr"), E("etc/f", data=b"x")), root)
    assert not (root / "dev" / "sda").exists() and not (root / "dev" / "null").exists()
    assert (root / "etc" / "f").read_bytes() == b"x"
    host_untouched(host)


def test_file_replacing_symlinked_dir_does_not_follow(world: tuple[Path, Path]) -> None:
    root, host = world
    apply_layer(stream(E("passwd", "symlink", link=f"{host}/passwd"), E("passwd", data=b"new")),
                root)  # fmt: skip
    assert (root / "passwd").read_bytes() == b"new" and not (root / "passwd").is_symlink()
    host_untouched(host)


def test_directory_replaced_by_symlink_mid_layer_is_resolved_afresh(
    world: tuple[Path, Path],
) -> None:
    root, host = world
    apply_layer(
        stream(E("a/x", data=b"1"), E("a", "symlink", link=str(host)), E("a/y", data=b"2")),
        root,
    )
    host_untouched(host)
    assert (root / str(host).lstrip("/") / "y").read_bytes() == b"2"
    assert os.readlink(root / "a") == str(host)


def test_archive_semantics_keep_whiteout_names_as_files(world: tuple[Path, Path]) -> None:
    """ADD unpacks archives, not layers: a `.wh.` entry is a file, never a deletion."""
    root, host = world
    (root / "victim").write_text("stays\n")
    apply_layer(stream(E(".wh.victim", data=b""), E(".wh..wh..opq", data=b"")), root,
                whiteouts="keep")  # fmt: skip
    assert (root / "victim").read_text() == "stays\n"
    assert (root / ".wh.victim").is_file() and (root / ".wh..wh..opq").is_file()
    host_untouched(host)
