import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from polyarch.layers import LayerSink, apply_layer, open_layer, write_layer
from polyarch.store import ContentStore
from tests.layer_tars import E, stream

ROOT = os.geteuid() == 0


def tree(path: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """path -> (type, mode, uid, gid, content-or-link), for comparing two trees."""
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(path))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", 0, st.st_uid, st.st_gid, os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, "")
        else:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return out


def sample(root: Path) -> None:
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o4755)
    (root / "etc").mkdir(mode=0o750)
    (root / "etc" / "conf").write_text("k=v\n")
    os.symlink("../etc/conf", root / "bin" / "conf-link")
    os.link(root / "etc" / "conf", root / "etc" / "conf-hard")
    (root / "empty").mkdir()
    if ROOT:
        os.chown(root / "etc" / "conf", 1000, 1001)


def tar_of(root: Path, epoch: int | None = 1_700_000_000) -> bytes:
    buf = io.BytesIO()
    write_layer(root, buf, source_date_epoch=epoch)
    return buf.getvalue()


def test_round_trip_keeps_types_modes_owners_links_and_content(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    sample(src)
    apply_layer(io.BytesIO(tar_of(src, None)), dst)
    assert tree(dst) == tree(src)
    assert (dst / "etc" / "conf").stat().st_ino == (dst / "etc" / "conf-hard").stat().st_ino


def test_tar_is_deterministic_sorted_and_clamped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sample(src)
    first = tar_of(src)
    os.utime(src / "etc" / "conf")  # touched now: later than the epoch, so clamped
    assert tar_of(src) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["bin", "bin/conf-link", "bin/tool", "empty", "etc", "etc/conf",
                     "etc/conf-hard"]  # fmt: skip
    assert all(m.mtime <= 1_700_000_000 for m in members)
    assert all(m.uname == "" and m.gname == "" for m in members)
    hard = members[-1]
    assert hard.islnk() and hard.linkname == "etc/conf"


def test_whiteouts_deleted_in_a_flat_root(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    apply_layer(stream(E("a/x"), E("a/y"), E("b"), E("c/old"), E("c/keep")), root)
    report = apply_layer(stream(E("a/.wh.x"), E(".wh.b"), E("c/.wh..wh..opq"), E("c/new")), root)
    assert report.whiteouts == 3
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "a", "a/y", "c", "c/new",
    ]  # fmt: skip


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts need root (mknod, trusted.* xattrs)")
@pytest.mark.parametrize("rootless", [False, True])
def test_overlay_whiteouts_round_trip(
    tmp_path: Path, rootless: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, overlayfs's opaque mark is trusted.overlay.opaque; in the rootless user
    namespace (overlay mounted with userxattr) user.overlay.opaque. Both become OCI opaques."""
    if rootless:
        monkeypatch.setenv("POLYARCH_ROOTLESS", "1")
    layer = tmp_path / "layer"
    layer.mkdir()
    apply_layer(stream(E("a/.wh.x"), E("c/.wh..wh..opq"), E("c/new")), layer, whiteouts="overlay")
    st = os.lstat(layer / "a" / "x")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    mark = "user.overlay.opaque" if rootless else "trusted.overlay.opaque"
    assert os.getxattr(layer / "c", mark) == b"y"
    other = "trusted.overlay.opaque" if rootless else "user.overlay.opaque"
    assert other not in os.listxattr(layer / "c")
    # And back: the upper directory becomes OCI whiteouts again.
    with tarfile.open(fileobj=io.BytesIO(tar_of(layer))) as tar:
        names = tar.getnames()
    assert "a/.wh.x" in names and "c/.wh..wh..opq" in names and "c/new" in names


def test_xattrs_are_carried(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    try:
        os.setxattr(src / "f", "user.polyarch", b"yes")
    except OSError:
        pytest.skip("this filesystem takes no user xattrs")
    dst = tmp_path / "dst"
    dst.mkdir()
    apply_layer(io.BytesIO(tar_of(src)), dst)
    assert os.getxattr(dst / "f", "user.polyarch") == b"yes"


def test_layer_sink_one_pass_digests(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sample(src)
    (src / "big").write_bytes(os.urandom(3_000_000))
    store = ContentStore(tmp_path / "store")
    blobs = []
    for _ in range(2):
        sink = LayerSink(store)
        write_layer(src, sink, source_date_epoch=0)
        blobs.append(sink.finish())
    first, second = blobs
    assert first == second  # same tree, same epoch: same bytes, same digests
    raw = tar_of(src, 0)
    assert first.diff_id.hex == hashlib.sha256(raw).hexdigest()
    stored = store.read_bytes(first.digest)
    assert len(stored) == first.size
    with store.open(first.digest) as f:
        assert open_layer(f, first.media_type).read() == raw  # type: ignore[arg-type]


def test_two_steps_on_one_base_unpack_its_layer_once(tmp_path: Path) -> None:
    """Stages on one base start together: the second asker waits for the first's unpack
    instead of unpacking the same layer beside it; both get the snapshot."""
    import threading

    from polyarch.worker.local.snapshots import SnapshotStore

    src = tmp_path / "src"
    src.mkdir()
    sample(src)
    store = ContentStore(tmp_path / "store")
    sink = LayerSink(store)
    write_layer(src, sink, source_date_epoch=0)
    blob = sink.finish()
    snapshots = SnapshotStore(tmp_path / "snapshots", store)
    calls: list[str] = []
    started, gate = threading.Event(), threading.Event()
    real = snapshots._unpack

    def counted(*args: object) -> None:
        calls.append("unpack")
        started.set()
        assert gate.wait(10)
        real(*args)  # type: ignore[arg-type]

    snapshots._unpack = counted  # type: ignore[method-assign]
    first: list[Path] = []
    thread = threading.Thread(target=lambda: first.append(
        snapshots.ensure(blob.diff_id, blob.digest, blob.media_type)))  # fmt: skip
    thread.start()
    assert started.wait(10) and snapshots.unpacking(blob.diff_id)
    second: list[Path] = []
    waiter = threading.Thread(target=lambda: second.append(
        snapshots.ensure(blob.diff_id, blob.digest, blob.media_type)))  # fmt: skip
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # waiting for the first, not unpacking beside it
    gate.set()
    thread.join(30)
    waiter.join(30)
    assert calls == ["unpack"]
    assert first == second and (first[0] / "etc" / "conf").read_text() == "k=v\n"
    assert not snapshots.unpacking(blob.diff_id)
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == [first[0].name]
