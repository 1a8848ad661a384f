"""A copy's plain sources read from an image's layers without unpacking the image
(worker/local/sparse.py): the same entries as a full extraction, or None where that cannot be
known from the sources' own paths, and a hostile layer refused as a full unpack refuses it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from polyarch.digest import Digest
from polyarch.layers.confine import UnsafePathError
from polyarch.oci import mediatypes as mt
from polyarch.store import ContentStore
from polyarch.worker.base import LayerRef
from polyarch.worker.local.copydiff import extract_layers
from polyarch.worker.local.sparse import Wanted, extract_sources
from tests.layer_tars import E, tar_bytes

BASE = (E("usr", "dir"), E("usr/bin", "dir", mode=0o750), E("usr/bin/tool", data=b"tool v1"),
        E("usr/bin/other", data=b"x"), E("etc", "dir"), E("etc/passwd", data=b"root"),
        E("bin", "symlink", link="usr/bin"), E("opt", "dir"), E("opt/app", "dir"),
        E("opt/app/a.txt", data=b"a", uid=7, gid=8, mode=0o640),
        E("opt/app/sub", "dir"), E("opt/app/sub/b", "symlink", link="../a.txt"))  # fmt: skip


def _layers(store: ContentStore, *tars: bytes) -> list[LayerRef]:
    out = []
    for data in tars:
        digest = store.put_bytes(data)
        out.append(LayerRef(digest, len(data), Digest.of(data), mt.OCI_LAYER))
    return out


def _tree(root: Path, below: str) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    top = root / below
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            data = (os.readlink(path).encode() if path.is_symlink()
                    else path.read_bytes() if path.is_file() else b"")  # fmt: skip
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, data)
    st = top.lstat()
    out[below] = (st.st_mode, st.st_uid, st.st_gid, top.read_bytes() if top.is_file() else b"")
    return out


def test_which_sources_are_plain() -> None:
    wanted = Wanted.of(["/usr/bin/tool", "opt/app/"])
    assert wanted is not None
    assert wanted.paths == ("usr/bin/tool", "opt/app")
    assert wanted.ancestors == {"usr", "usr/bin", "opt"}
    assert wanted("usr") and wanted("usr/bin/tool") and wanted("opt/app/sub/b")
    assert not wanted("usr/bin/other") and not wanted("etc") and not wanted("opt/apple")
    for given in (["/usr/*/tool"], ["/a/../etc"], ["/"], ["."], ["a[b]"]):
        assert Wanted.of(given) is None


@pytest.mark.parametrize(
    "sources", [["/usr/bin/tool"], ["/opt/app"], ["/usr/bin/tool", "/opt/app/sub"]]
)
def test_what_is_extracted_is_what_a_full_unpack_holds(tmp_path: Path, sources: list[str]) -> None:
    store = ContentStore(tmp_path / "store")
    upper = tar_bytes(E("usr/bin/tool", data=b"tool v2", mode=0o755),
                      E("opt/app/.wh.gone"), E("etc/.wh.passwd"))  # fmt: skip
    layers = _layers(store, tar_bytes(*BASE, E("opt/app/gone", data=b"g")), upper)
    full = tmp_path / "full"
    full.mkdir()
    extract_layers(layers, store, full)
    wanted = Wanted.of(sources)
    assert wanted is not None
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    root = extract_sources(layers, store, wanted, sparse)
    assert root is not None
    root.close()
    for path in wanted.paths:
        assert _tree(sparse, path) == _tree(full, path)
    assert not (sparse / "etc").exists() and not (sparse / "usr/bin/other").exists()
    for directory in wanted.ancestors:  # the directories on the way keep their own metadata
        assert (sparse / directory).lstat().st_mode == (full / directory).lstat().st_mode


@pytest.mark.parametrize("source", ["/bin/tool", "/usr/bin/missing", "/opt/app/sub/b"])
def test_a_symlink_on_the_way_or_a_missing_source_is_left_to_a_full_unpack(
    tmp_path: Path, source: str
) -> None:
    store = ContentStore(tmp_path / "store")
    layers = _layers(store, tar_bytes(*BASE))
    wanted = Wanted.of([source])
    assert wanted is not None
    into = tmp_path / "sparse"
    into.mkdir()
    assert extract_sources(layers, store, wanted, into) is None


def test_a_source_removed_by_an_upper_layer_is_not_found(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    layers = _layers(store, tar_bytes(*BASE), tar_bytes(E("usr/.wh..wh..opq")))
    wanted = Wanted.of(["/usr/bin/tool"])
    assert wanted is not None
    into = tmp_path / "sparse"
    into.mkdir()
    assert extract_sources(layers, store, wanted, into) is None
    assert not (into / "usr/bin").exists()


@pytest.mark.parametrize("bad", [
    E("dev/weird", "file"),  # made unsupported below
    E("etc/.wh."),  # a whiteout that names nothing
    E("etc/escape", "hardlink", link="../../../etc/shadow"),
    E("etc/root", "hardlink", link="./"),
])  # fmt: skip
def test_entries_passed_over_are_refused_as_a_full_unpack_refuses_them(
    tmp_path: Path, bad: E
) -> None:
    data = tar_bytes(*BASE, bad)
    if bad.name == "dev/weird":  # type V (a volume label): no root may hold it
        at = data.index(b"dev/weird")
        data = data[: at + 156] + b"V" + data[at + 157 :]
        header = bytearray(data[at : at + 512])
        header[148:156] = b" " * 8
        header[148:155] = f"{sum(header):06o}\0".encode()
        data = data[:at] + bytes(header) + data[at + 512 :]
    store = ContentStore(tmp_path / "store")
    layers = _layers(store, data)
    wanted = Wanted.of(["/usr/bin/tool"])
    assert wanted is not None
    for into in (tmp_path / "full", tmp_path / "sparse"):
        into.mkdir()
    with pytest.raises(UnsafePathError):
        extract_layers(layers, store, tmp_path / "full")
    with pytest.raises(UnsafePathError):
        extract_sources(layers, store, wanted, tmp_path / "sparse")
