import threading
from pathlib import Path

import pytest

from polyarch.digest import Digest
from polyarch.errors import BlobNotFoundError, StoreError, VerificationError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index
from polyarch.store import ContentStore, OciLayout


def test_write_verify_and_read(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b"hello blob"
    digest = store.put_bytes(data, Digest.of(data))
    assert store.has(digest, len(data))
    assert store.path(digest) == tmp_path / "blobs" / "sha256" / digest.hex
    assert store.read_bytes(digest) == data
    assert b"".join(store.iter_blob(digest, len(data))) == data
    assert list(store.blobs()) == [digest]
    assert not any(store.ingest_dir.iterdir())


def test_wrong_content_never_becomes_visible(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    claimed = Digest.of(b"the real thing")
    with pytest.raises(VerificationError) as info:
        store.ingest([b"something ", b"else"], claimed, len(b"the real thing"))
    assert info.value.expected_digest == str(claimed)
    assert info.value.actual_digest == str(Digest.of(b"something else"))
    assert not store.has(claimed)
    assert not any(store.ingest_dir.iterdir())
    assert list(store.blobs()) == []


def test_oversized_stream_is_cut_off_at_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    sent: list[int] = []

    def endless() -> object:
        while True:
            sent.append(1)
            yield b"x" * 1000

    with pytest.raises(VerificationError, match="expected 4000 bytes"):
        store.ingest(endless(), Digest.of(b"y" * 4000), 4000)  # type: ignore[arg-type]
    assert len(sent) == 5  # stopped at the first chunk past the size
    assert not any(store.ingest_dir.iterdir())


def test_stream_error_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)

    def broken() -> object:
        yield b"abc"
        raise OSError("cut")

    with pytest.raises(OSError, match="cut"):
        store.ingest(broken(), Digest.of(b"abcdef"), 6)  # type: ignore[arg-type]
    assert not any(store.ingest_dir.iterdir())
    assert list(store.blobs()) == []


def test_concurrent_writers_of_one_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = bytes(range(256)) * 4096
    digest = Digest.of(data)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.ingest((data[i : i + 65536] for i in range(0, len(data), 65536)), digest,
                         len(data))  # fmt: skip
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.read_bytes(digest) == data
    assert not any(store.ingest_dir.iterdir())


def test_corruption_on_disk_is_detected(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = store.put_bytes(b"original")
    store.path(digest).write_bytes(b"tampered")
    with pytest.raises(VerificationError):
        store.read_bytes(digest)
    with pytest.raises(VerificationError):
        list(store.iter_blob(digest))


def test_missing_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(BlobNotFoundError):
        store.open(Digest.of(b"nope"))


def test_layout_files_and_refs(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "l")
    assert (tmp_path / "l" / "oci-layout").read_text() == '{"imageLayoutVersion": "1.0.0"}'
    assert layout.index().manifests == ()
    raw = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    )
    digest = layout.write_document(raw)
    d = Descriptor(mt.OCI_INDEX, digest, len(raw))
    layout.set_ref("v1", d)
    layout.set_ref("v2", d)
    layout.set_ref("v1", d)  # replaces, does not duplicate
    assert sorted(layout.refs()) == ["v1", "v2"]
    assert layout.resolve("v1").digest == digest
    with pytest.raises(StoreError, match="holds 2 images"):
        layout.resolve(None)
    with pytest.raises(BlobNotFoundError):
        layout.resolve("v3")
    assert layout.remove_ref("v2")
    assert layout.resolve(None).digest == digest
    # Reopening reads the same state.
    assert OciLayout(tmp_path / "l", create=False).refs().keys() == {"v1"}


def test_set_ref_refuses_missing_content(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path)
    with pytest.raises(BlobNotFoundError):
        layout.set_ref("x", Descriptor(mt.OCI_INDEX, Digest.of(b"absent"), 6))


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not an OCI image layout"):
        OciLayout(tmp_path / "nothing", create=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    with pytest.raises(StoreError, match="unsupported imageLayoutVersion"):
        OciLayout(tmp_path / "bad")


def test_concurrent_set_ref_loses_nothing(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path)
    raw = Index.create([]).raw
    digest = layout.write_document(raw)
    d = Descriptor(mt.OCI_INDEX, digest, len(raw))

    def name(i: int) -> None:
        OciLayout(tmp_path).set_ref(f"t{i}", d)

    threads = [threading.Thread(target=name, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(layout.refs()) == 20
