import json

import pytest

from polyarch.digest import Digest
from polyarch.errors import ManifestError, UnsupportedSchemaError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, ImageConfig, Index, Manifest, parse_document
from polyarch.platform import Platform

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def desc(media_type: str, digest: str = D1, size: int = 10, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def manifest_json(media_type: str | None = mt.OCI_MANIFEST) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "config": desc(mt.OCI_CONFIG),
        "layers": [desc(mt.OCI_LAYER_GZIP, D2, 20)],
    }
    if media_type:
        doc["mediaType"] = media_type
    return doc


def test_manifest_keeps_exact_bytes() -> None:
    # Unusual spacing and key order: the digest is over these bytes, never a re-serialisation.
    raw = (
        b'{ "layers": [],\n  "schemaVersion":2, "config": '
        + json.dumps(desc(mt.OCI_CONFIG)).encode()
        + b"}"
    )
    doc = parse_document(raw, mt.OCI_MANIFEST)
    assert isinstance(doc, Manifest)
    assert doc.raw == raw
    assert doc.digest == Digest.of(raw)
    assert doc.media_type == mt.OCI_MANIFEST


def test_docker_schema2_manifest_and_list() -> None:
    m = parse_document(json.dumps(manifest_json(mt.DOCKER_MANIFEST)).encode())
    assert isinstance(m, Manifest)
    assert m.media_type == mt.DOCKER_MANIFEST
    lst = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            desc(mt.DOCKER_MANIFEST, platform={"os": "linux", "architecture": "arm64",
                                               "variant": "v8"}),
            desc(mt.DOCKER_MANIFEST, D2, platform={"os": "linux", "architecture": "amd64"}),
        ],
    }  # fmt: skip
    idx = parse_document(json.dumps(lst).encode())
    assert isinstance(idx, Index)
    assert [str(d.platform) for d in idx.manifests] == ["linux/arm64", "linux/amd64"]


def test_kind_from_served_media_type_when_document_is_silent() -> None:
    doc = parse_document(json.dumps(manifest_json(None)).encode(), mt.DOCKER_MANIFEST)
    assert doc.media_type == mt.DOCKER_MANIFEST
    idx = parse_document(b'{"schemaVersion":2,"manifests":[]}', None)
    assert isinstance(idx, Index)


def test_refuses_manifests_and_layers_together() -> None:
    doc = manifest_json()
    doc["manifests"] = []
    with pytest.raises(ManifestError, match="both 'manifests' and 'layers'"):
        parse_document(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "raw",
    [
        b'{"schemaVersion":1,"name":"x","tag":"t","fsLayers":[]}',
        b'{"schemaVersion":1,"signatures":[]}',
    ],
)
def test_schema1_is_refused_with_a_clear_error(raw: bytes) -> None:
    with pytest.raises(UnsupportedSchemaError, match="schema 1"):
        parse_document(raw)
    with pytest.raises(UnsupportedSchemaError, match="schema 1"):
        parse_document(b"{}", mt.DOCKER_SCHEMA1_SIGNED)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[]", "JSON object"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b'{"schemaVersion":2,"schemaVersion":2,"manifests":[]}', "duplicate key"),
        (b'{"schemaVersion":3,"manifests":[]}', "schemaVersion"),
        (b'{"schemaVersion":true,"manifests":[]}', "schemaVersion"),
        (b'{"schemaVersion":2,"mediaType":"text/plain","layers":[]}', "unsupported media type"),
    ],
)
def test_malformed_documents(raw: bytes, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        parse_document(raw)


def test_declared_type_must_agree_with_served_type() -> None:
    raw = json.dumps(manifest_json(mt.OCI_MANIFEST)).encode()
    with pytest.raises(ManifestError, match="served as"):
        parse_document(raw, mt.DOCKER_MANIFEST)


@pytest.mark.parametrize(
    "bad",
    [
        desc(mt.OCI_CONFIG, "sha256:xyz"),
        desc(mt.OCI_CONFIG, "sha256:../../" + "a" * 58),
        desc(mt.OCI_CONFIG, size=-1),
        desc(mt.OCI_CONFIG, size=True),
        desc(mt.OCI_CONFIG, size="10"),
        {"digest": D1, "size": 1},
        desc(mt.OCI_CONFIG, urls="http://x"),
        desc(mt.OCI_CONFIG, annotations={"a": 1}),
    ],
)
def test_bad_descriptors_are_refused(bad: dict[str, object]) -> None:
    doc = manifest_json()
    doc["config"] = bad
    with pytest.raises(ManifestError):
        parse_document(json.dumps(doc).encode())


def test_oversized_document_is_refused() -> None:
    raw = b'{"schemaVersion":2,"manifests":[],"annotations":{"x":"' + b"a" * (4 << 20) + b'"}}'
    with pytest.raises(ManifestError, match="limit"):
        parse_document(raw)


def test_created_documents_round_trip() -> None:
    config = Descriptor(mt.OCI_CONFIG, Digest.parse(D1), 5)
    layer = Descriptor(mt.OCI_LAYER_GZIP, Digest.parse(D2), 7, annotations={"b": "2", "a": "1"})
    m = Manifest.create(config, [layer])
    again = parse_document(m.raw, mt.OCI_MANIFEST)
    assert again == m
    entry = m.descriptor(Platform.parse("linux/arm/v7"))
    idx = Index.create([entry], annotations={"k": "v"})
    parsed = parse_document(idx.raw)
    assert isinstance(parsed, Index)
    assert parsed.manifests == (entry,)
    assert parsed.digest == idx.digest
    assert json.loads(idx.raw)["manifests"][0]["platform"] == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
    }


def test_attestation_entries_are_recognised() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, D1, platform={"os": "linux", "architecture": "amd64"}),
            desc(
                mt.OCI_MANIFEST,
                D2,
                platform={"os": "unknown", "architecture": "unknown"},
                annotations={
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": D1,
                },
            ),
        ],
    }
    idx = parse_document(json.dumps(doc).encode())
    assert isinstance(idx, Index)
    assert [d.digest for d in idx.images()] == [Digest.parse(D1)]
    assert idx.manifests[1].is_attestation


def test_image_config() -> None:
    raw = json.dumps(
        {
            "architecture": "arm",
            "os": "linux",
            "variant": "v7",
            "created": "2021-08-06T00:00:00Z",
            "config": {
                "Env": ["PATH=/usr/bin"],
                "Entrypoint": ["/entrypoint.sh"],
                "ExposedPorts": {"81/tcp": {}, "80/tcp": {}},
                "Labels": {"io.daocloud.system": "build-in"},
            },
            "rootfs": {"type": "layers", "diff_ids": [D1]},
            "history": [{"created_by": "x"}, {"empty_layer": True}],
        }
    ).encode()
    config = ImageConfig.parse(raw)
    assert str(config.platform) == "linux/arm/v7"
    assert config.entrypoint == ("/entrypoint.sh",)
    assert config.cmd is None
    assert config.exposed_ports == ("80/tcp", "81/tcp")
    assert config.diff_ids == (Digest.parse(D1),)
    assert config.history_length == 2
    with pytest.raises(ManifestError):
        ImageConfig.parse(b'{"os":"linux","architecture":"amd64","config":{"Env":"x"}}')
