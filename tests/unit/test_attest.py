"""Attestations, the pure parts: the flags as buildx takes them, package URLs, the provenance
predicate (min and max, v1 and v0.2, reproducible, secrets never in it), the package
databases read, the SPDX document (validated by the SPDX tools), and their storage in an OCI
layout as BuildKit stores them."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from polyarch.attest import intoto
from polyarch.attest.provenance import (
    BuildFacts,
    Facts,
    Material,
    PlatformFacts,
    Vcs,
    predicate,
    redact,
)
from polyarch.attest.sbom import packages as pk
from polyarch.attest.sbom.spdx import document
from polyarch.attest.spec import AttestSpec, ProvenanceSpec, attest_entries, parse_attests
from polyarch.attest.store import with_attestations
from polyarch.cli import cli
from polyarch.digest import Digest
from polyarch.errors import UsageError
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest, parse_document
from polyarch.platform import Platform
from polyarch.reference import Reference
from polyarch.store.layout import OciLayout

SCHEMAS = Path(__file__).parent.parent / "data" / "schemas"
AMD64 = Platform.parse("linux/amd64")


# the flags -----------------------------------------------------------------------------------


def test_the_flags_become_attest_entries_as_buildx_makes_them() -> None:
    assert attest_entries([], "false", None) == ["type=provenance,disabled=true"]
    assert attest_entries([], "true", "1") == [
        "type=sbom,disabled=false",
        "type=provenance,disabled=false",
    ]
    assert attest_entries(["type=sbom"], "mode=max", None) == [
        "type=sbom",
        "type=provenance,mode=max",
    ]


def test_provenance_true_is_buildkits_default_mode_max() -> None:
    spec = parse_attests(attest_entries([], "true", None))
    assert spec.provenance == ProvenanceSpec(mode="max")
    assert spec.sbom is None and spec.provenance_said


def test_the_last_entry_of_a_type_wins() -> None:
    spec = parse_attests(["type=provenance,mode=max", "type=provenance,disabled=true",
                          "type=sbom"])  # fmt: skip
    assert spec.provenance is None and spec.provenance_said
    assert spec.sbom is not None


def test_a_push_gets_min_provenance_unless_provenance_was_said() -> None:
    assert AttestSpec().with_default().provenance == ProvenanceSpec("min", inline_only=True)
    off = parse_attests(["type=provenance,disabled=true"])
    assert off.with_default().provenance is None
    maxed = parse_attests(["type=provenance,mode=max,version=v0.2"])
    assert maxed.with_default().provenance == ProvenanceSpec("max", "v0.2")


@pytest.mark.parametrize("entry, said", [
    ("type=vuln", "type=provenance and type=sbom"),
    ("mode=max", "type is required"),
    ("type=provenance,mode=full-ish", "mode=full-ish (min or max)"),
    ("type=provenance,version=v2", "version=v2 (v1 or v0.2)"),
    ("type=provenance,colour=blue", "unknown attribute(s) colour"),
    ("type=provenance,capture-usage=true", "no resource sampler"),
    ("type=sbom,generator=docker/buildkit-syft-scanner", "runs no generator image"),
    ("type=sbom,filename=../x", "a plain file name"),
    ("type=provenance,reproducible=perhaps", "not a boolean"),
])  # fmt: skip
def test_what_is_not_understood_is_refused(entry: str, said: str) -> None:
    with pytest.raises(UsageError, match=said.replace("(", r"\(").replace(")", r"\)")):
        parse_attests([entry])


def test_the_cli_refuses_an_unknown_attestation_before_reading_the_dockerfile(
    tmp_path: Path,
) -> None:
    (tmp_path / "Dockerfile").write_text("FRM broken\n")
    result = CliRunner().invoke(cli, ["build", "--attest", "type=vuln", "--root",
                                      str(tmp_path / "root"), str(tmp_path)])  # fmt: skip
    text = result.output + (str(result.exception) if result.exception else "")
    assert result.exit_code != 0
    assert isinstance(result.exception, UsageError)  # said by the CLI, no traceback
    assert "--attest type=vuln: polyarch makes type=provenance and type=sbom" in text
    assert "unknown instruction" not in text


# package URLs --------------------------------------------------------------------------------


def test_images_are_named_as_buildkit_names_them() -> None:
    assert intoto.image_purl("alpine", AMD64) == "pkg:docker/alpine@latest?platform=linux/amd64"
    assert intoto.image_purl("docker.io/library/debian:12") == "pkg:docker/debian@12"
    arm = Platform.parse("linux/arm64")
    assert intoto.image_purl("127.0.0.1:5000/team/app:1.0", arm) == (
        "pkg:docker/127.0.0.1:5000/team/app@1.0?platform=linux/arm64"
    )
    pinned = "x.io/a@sha256:" + "a" * 64
    assert intoto.image_purl(pinned) == f"pkg:docker/x.io/a?digest=sha256:{'a' * 64}"
    assert intoto.image_purl("/srv/layouts/App:v2", AMD64, local=True) == (
        "pkg:oci/app@v2?platform=linux/amd64"
    )


def test_subjects_name_each_tag_or_an_underscore() -> None:
    digest = Digest.of(b"m")
    named = intoto.subjects([Reference.parse("r.io/a:1"), Reference.parse("r.io/a:2")], AMD64,
                            digest)  # fmt: skip
    assert [s["name"] for s in named] == [
        "pkg:docker/r.io/a@1?platform=linux/amd64",
        "pkg:docker/r.io/a@2?platform=linux/amd64",
    ]
    assert intoto.subjects([], AMD64, digest) == [{"name": "_", "digest": {"sha256": digest.hex}}]


# provenance ----------------------------------------------------------------------------------


def _facts(**changes: Any) -> Facts:
    values: dict[str, Any] = dict(
        dockerfile_name="Dockerfile", dockerfile=b"FROM x\n",
        materials=[Material("r.io/base:1", "sha256:" + "b" * 64, AMD64)],
        started="2023-11-14T22:13:20Z", finished="2023-11-14T22:13:20Z", invocation_id="abc",
        builder_platform=AMD64, polyarch_version="0.1.0",
        build_args={"VERSION": "1.2", "NPM_TOKEN": "npm-secret-value"},
        labels={"team": "web"}, target="app", secrets=[("npmrc", False)],
        ssh=[("default", True)], vcs=Vcs("https://user:pw@git.example/x.git", "abc123-dirty"),
    )  # fmt: skip
    values.update(changes)
    platform = {k: tuple(values.pop(k)) for k in ("materials", "secrets", "ssh") if k in values}
    return Facts(BuildFacts(**values), PlatformFacts(**platform))


def test_min_provenance_keeps_materials_and_times_but_no_arguments() -> None:
    kind, body = predicate(_facts(), ProvenanceSpec(mode="min"))
    assert kind == "https://slsa.dev/provenance/v1"
    jsonschema.validate(body, json.loads((SCHEMAS / "slsa-provenance-v1.json").read_text()))
    request = body["buildDefinition"]["externalParameters"]["request"]
    assert request == {
        "frontend": "dockerfile.v0",
        "args": {"target": "app"},
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    }
    assert body["buildDefinition"]["resolvedDependencies"] == [
        {"uri": "pkg:docker/r.io/base@1?platform=linux/amd64", "digest": {"sha256": "b" * 64}}
    ]
    metadata = body["runDetails"]["metadata"]
    assert metadata["buildkit_completeness"] == {"request": False, "resolvedDependencies": False}
    assert metadata["buildkit_metadata"]["vcs"]["source"] == "https://git.example/x.git"
    assert metadata["buildkit_metadata"]["vcs"]["revision"] == "abc123-dirty"
    assert "source" not in metadata["buildkit_metadata"]


def test_max_provenance_adds_arguments_and_ids_never_secret_values() -> None:
    _kind, body = predicate(_facts(), ProvenanceSpec(mode="max"))
    request = body["buildDefinition"]["externalParameters"]["request"]
    assert request["args"] == {"build-arg:VERSION": "1.2", "label:team": "web", "target": "app"}
    assert request["secrets"] == [{"id": "npmrc"}]
    assert request["ssh"] == [{"id": "default", "optional": True}]
    assert "npm-secret-value" not in json.dumps(body)
    assert body["runDetails"]["metadata"]["buildkit_completeness"]["request"] is False
    infos = body["runDetails"]["metadata"]["buildkit_metadata"]["source"]["infos"]
    assert infos[0]["data"] == "RlJPTSB4Cg=="  # the Dockerfile itself


def test_v02_is_buildkits_conversion() -> None:
    kind, body = predicate(_facts(), ProvenanceSpec(mode="max", version="v0.2"))
    assert kind == "https://slsa.dev/provenance/v0.2"
    jsonschema.validate(body, json.loads((SCHEMAS / "slsa-provenance-v0.2.json").read_text()))
    assert body["buildType"] == "https://mobyproject.org/buildkit@v1"
    assert body["invocation"]["configSource"]["entryPoint"] == "Dockerfile"
    assert body["metadata"]["buildStartedOn"] == "2023-11-14T22:13:20Z"
    assert body["materials"][0]["digest"] == {"sha256": "b" * 64}


def test_a_git_context_is_the_config_source_without_credentials() -> None:
    facts = _facts(context_url="https://tok@git.example/app.git#main", context_commit="c" * 40,
                   locals=(), vcs=None)  # fmt: skip
    _kind, body = predicate(facts, ProvenanceSpec(mode="min"))
    source = body["buildDefinition"]["externalParameters"]["configSource"]
    assert source == {"uri": "https://git.example/app.git#main", "digest": {"sha1": "c" * 40},
                      "path": "Dockerfile"}  # fmt: skip
    metadata = body["runDetails"]["metadata"]
    assert metadata["buildkit_completeness"]["resolvedDependencies"] is True


def test_the_same_facts_give_the_same_bytes() -> None:
    a = predicate(_facts(), ProvenanceSpec())
    b = predicate(_facts(), ProvenanceSpec())
    subject = intoto.subjects([], AMD64, Digest.of(b"x"))
    assert intoto.statement(a[0], subject, a[1]) == intoto.statement(b[0], subject, b[1])
    c = predicate(_facts(started="2023-11-14T22:13:21Z"), ProvenanceSpec())
    assert intoto.statement(c[0], subject, c[1]) != intoto.statement(a[0], subject, a[1])


def test_credentials_are_redacted_from_urls() -> None:
    assert redact("https://u:p@h.example/r.git") == "https://h.example/r.git"
    assert redact("ssh://git@h.example/r.git") == "ssh://h.example/r.git"
    assert redact("https://h.example/a@b") == "https://h.example/a@b"


def test_platform_facts_cross_the_wire_strictly() -> None:
    facts = PlatformFacts((Material("a", "sha256:" + "1" * 64, AMD64),), (("s", True),), (),
                          True, (("step0", ()), ("step1", ("step0:0",))))  # fmt: skip
    assert PlatformFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts
    with pytest.raises(ValueError, match="facts"):
        PlatformFacts.from_json({"materials": []})


# package databases ---------------------------------------------------------------------------

DEBIAN = pk.Distro("debian", "12")


def test_dpkg_status_lists_installed_packages_only() -> None:
    status = (
        "Package: libc6\nStatus: install ok installed\nArchitecture: arm64\n"
        "Source: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C\n more text\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: dash\nStatus: install ok installed\nArchitecture: arm64\nVersion: 0.5.12-2\n"
    )
    found = pk.dpkg_status(status, DEBIAN, "var/lib/dpkg/status", {"dash": ("GPL-2+",)})
    assert [(p.name, p.version) for p in found] == [
        ("libc6", "2.36-9+deb12u4"),
        ("dash", "0.5.12-2"),
    ]
    assert found[0].purl == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=arm64&distro=debian-12&upstream=glibc"
    )
    assert found[1].licenses == ("GPL-2+",)


def test_debian_copyright_licences() -> None:
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nLicense: GPL-2+ or Artistic\n\nFiles: x\nLicense: BSD-3-clause\n"
            "License: GPL-2+\n Full text\n")  # fmt: skip
    assert pk.debian_copyright(text) == ("GPL-2+", "Artistic", "BSD-3-clause")


def test_apk_rpm_python_npm_readers() -> None:
    apk = "P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nP:busybox\nV:1.36.1-r5\nL:GPL-2.0-only\n"
    found = pk.apk_installed(apk, pk.Distro("alpine", "3.19.1"), "lib/apk/db/installed")
    assert [p.purl for p in found] == [
        "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1",
        "pkg:apk/alpine/busybox@1.36.1-r5?distro=alpine-3.19.1",
    ]
    python = pk.python_metadata(
        "Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n"
        "Classifier: License :: OSI Approved :: MIT License\n",
        "m",
    )
    assert python is not None and python.purl == "pkg:pypi/foo-bar@1.0"
    assert python.licenses == ("MIT License",)
    npm = pk.npm_package(b'{"name": "@types/node", "version": "20.1.0", "license": "MIT"}', "p")
    assert npm is not None and npm.purl == "pkg:npm/%40types/node@20.1.0"
    assert pk.npm_package(b"not json", "p") is None
    header = _rpm_header({1000: "bash", 1001: "5.2.15", 1002: "3.el9", 1014: "GPLv3+",
                          1022: "x86_64"})  # fmt: skip
    (rpm,) = pk.rpm_packages([header], pk.Distro("rhel", "9.3"), "rpmdb.sqlite")
    assert rpm.purl == "pkg:rpm/rhel/bash@5.2.15-3.el9?arch=x86_64&distro=rhel-9.3"
    assert rpm.licenses == ("GPLv3+",)


def _rpm_header(fields: dict[int, str]) -> bytes:
    index, store = b"", b""
    for tag, value in fields.items():
        index += struct.pack(">IIiI", tag, 6, len(store), 1)
        store += value.encode() + b"\0"
    return struct.pack(">II", len(fields), len(store)) + index + store


def test_go_binaries_build_information() -> None:
    info = (
        "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n"
        "dep\tgolang.org/x/sys\tv0.15.0\th1:x=\n"
    )
    framed = b"0" * 16 + info.encode() + b"1" * 16
    version = b"go1.21.5"
    header = pk.GO_MAGIC + bytes([8, 2]) + b"\0" * 16
    blob = b"\x7fELF" + b"junk" * 10 + header + bytes([len(version)]) + version + bytes(
        [len(framed)]) + framed  # fmt: skip
    found = pk.go_buildinfo(blob, "usr/bin/app")
    assert [(p.name, p.version, p.purl) for p in found] == [
        ("example.com/app", "", "pkg:golang/example.com/app"),
        ("golang.org/x/sys", "v0.15.0", "pkg:golang/golang.org/x/sys@v0.15.0"),
    ]
    assert pk.go_buildinfo(b"\x7fELF no build info", "x") == []


# the SPDX document ----------------------------------------------------------------------------


def test_the_spdx_document_is_valid_and_maps_licences(tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    found = [
        pk.Package("deb", "dash", "0.5.12-2", "pkg:deb/debian/dash@0.5.12-2", ("GPL-2+",
                   "BSD-3-clause"), "var/lib/dpkg/status"),
        pk.Package("npm", "x", "1.0.0", "pkg:npm/x@1.0.0", ("Some Custom Licence",), "p.json"),
        pk.Package("python", "y", "2", "pkg:pypi/y@2", ("MIT License",), "METADATA"),
    ]  # fmt: skip
    doc = document(found, image_name="r.io/app:1", image_purl="pkg:docker/r.io/app@1",
                   manifest_digest="sha256:" + "c" * 64, created="2023-11-14T22:13:20Z",
                   tool="polyarch-0.1.0")  # fmt: skip
    declared = {p["name"]: p["licenseDeclared"] for p in doc["packages"]}
    assert declared["dash"] == "GPL-2.0-or-later AND BSD-3-Clause"
    assert declared["y"] == "MIT"
    assert declared["x"] == "LicenseRef-Some-Custom-Licence"
    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(doc))
    problems = validate_full_spdx_document(parse_file(str(path)))
    assert problems == [], [p.validation_message for p in problems]


# storage ---------------------------------------------------------------------------------------


def _image(layout: OciLayout, platform: Platform) -> Descriptor:
    config = json.dumps({"architecture": platform.architecture, "os": platform.os,
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
    digest = layout.blobs.put_bytes(config, Digest.of(config))
    manifest = Manifest.create(Descriptor(mt.OCI_CONFIG, digest, len(config)), [])
    layout.write_document(manifest.raw)
    return manifest.descriptor(platform)


def test_a_manifest_becomes_an_index_with_its_attestation(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    image = _image(layout, AMD64)
    statement = intoto.statement(intoto.PREDICATE_SLSA1, intoto.subjects([], AMD64,
                                 image.digest), {"x": 1})  # fmt: skip
    top = with_attestations(layout, image, {AMD64: image}, {AMD64: [statement]})
    index = parse_document(layout.read_document(top), top.media_type)
    assert isinstance(index, Index)
    first, second = index.manifests
    assert first.digest == image.digest and first.platform == AMD64
    assert second.is_attestation and str(second.platform) == "unknown/unknown"
    assert second.annotations == {
        "vnd.docker.reference.digest": str(image.digest),
        "vnd.docker.reference.type": "attestation-manifest",
    }
    manifest = parse_document(layout.read_document(second), second.media_type)
    assert isinstance(manifest, Manifest)
    assert manifest.artifact_type == "application/vnd.docker.attestation.manifest.v1+json"
    assert manifest.subject is not None and manifest.subject.digest == image.digest
    assert json.loads(manifest.raw)["config"]["data"] == "e30="
    assert layout.blobs.read_bytes(manifest.config.digest) == b"{}"
    (layer,) = manifest.layers
    assert layer.annotations == {"in-toto.io/predicate-type": intoto.PREDICATE_SLSA1}
    assert layout.blobs.read_bytes(layer.digest) == statement
    # attaching again replaces the attestations, never stacks them
    again = with_attestations(layout, top, {AMD64: image}, {AMD64: [statement]})
    assert again == top


def test_an_index_keeps_its_annotations_and_order(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "layout")
    arm = Platform.parse("linux/arm64")
    images = {AMD64: _image(layout, AMD64), arm: _image(layout, arm)}
    index = Index.create(list(images.values()), annotations={"org.example": "1"})
    layout.write_document(index.raw)
    statements = {p: [intoto.statement(intoto.PREDICATE_SPDX, intoto.subjects(
        [], p, d.digest), {})] for p, d in images.items()}  # fmt: skip
    top = with_attestations(layout, index.descriptor(), images, statements)
    made = parse_document(layout.read_document(top), top.media_type)
    assert isinstance(made, Index)
    assert made.annotations == {"org.example": "1"}
    assert [str(d.platform) for d in made.manifests] == [
        "linux/amd64",
        "linux/arm64",
        "unknown/unknown",
        "unknown/unknown",
    ]
    assert made.images() == tuple(images.values())


# signatures ------------------------------------------------------------------------------------


def test_cosigns_payload_and_signature_manifest() -> None:
    from polyarch.attest import sign

    digest = Digest.of(b"index")
    payload = sign.payload("r.io/team/app", digest)
    assert payload == (b'{"critical":{"identity":{"docker-reference":"r.io/team/app"},"image":'
                       b'{"docker-manifest-digest":"' + str(digest).encode() + b'"},"type":'
                       b'"cosign container image signature"},"optional":null}')  # fmt: skip
    assert sign.read_payload(payload) == ("r.io/team/app", str(digest))
    assert sign.signature_tag(digest) == f"sha256-{digest.hex}.sig"
    key = sign.generate()
    layer = sign.SignedLayer(Descriptor(sign.SIMPLE_SIGNING, Digest.of(payload), len(payload)),
                             sign.sign(key, payload))  # fmt: skip
    manifest, config = sign.signature_manifest([layer])
    (made,) = sign.signature_layers(manifest)
    assert made.payload.digest == Digest.of(payload)
    assert json.loads(config)["rootfs"]["diff_ids"] == [str(Digest.of(payload))]
    assert manifest.config.digest == Digest.of(config)
    assert sign.verifies(key.public_key(), payload, made.signature)
    assert not sign.verifies(key.public_key(), payload + b" ", made.signature)
    assert not sign.verifies(sign.generate().public_key(), payload, made.signature)


def test_cosign_v3_bundles_sign_a_digest_as_dsse() -> None:
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from polyarch.attest import bundle, sign
    from polyarch.oci import mediatypes as mt

    # DSSE's pre-authentication encoding, the specification's example
    assert bundle.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")  # fmt: skip
    key, other = sign.generate(), sign.generate()
    digest = Digest.of(b"index")
    raw = bundle.make_bundle(key, digest)
    doc = json.loads(raw)
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    hint = base64.b64encode(hashlib.sha256(der).digest()).decode()
    assert doc["verificationMaterial"] == {"publicKey": {"hint": hint}}
    envelope = doc["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement == {"_type": "https://in-toto.io/Statement/v1",
                         "subject": [{"digest": {"sha256": digest.hex}}],
                         "predicateType": "https://sigstore.dev/cosign/sign/v1",
                         "predicate": {}}  # fmt: skip
    assert bundle.signed_digests(raw, key.public_key()) == {str(digest)}
    assert bundle.signed_digests(raw, other.public_key()) == set()
    # a payload changed after signing, another media type, garbage: nothing is signed
    forged = dict(statement, subject=[{"digest": {"sha256": Digest.of(b"other").hex}}])
    tampered = {**doc, "dsseEnvelope": {**envelope, "payload": base64.b64encode(
        json.dumps(forged).encode()).decode()}}  # fmt: skip
    for bad in (
        json.dumps(tampered).encode(),
        raw.replace(b"v0.3+json", b"v0.9+json"),
        b"[]",
        b"{",
        b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}',
    ):
        assert bundle.signed_digests(bad, key.public_key()) == set()
    target = Descriptor(mt.OCI_INDEX, digest, 321, annotations={"x": "y"})
    manifest, blobs = bundle.bundle_manifest(target, raw, "2026-12-08T00:00:00Z")
    body = json.loads(manifest.raw)
    assert body["artifactType"] == bundle.BUNDLE_V03
    assert body["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert blobs[manifest.config.digest] == b"{}"
    assert body["subject"] == {"mediaType": mt.OCI_INDEX, "digest": str(digest), "size": 321}
    (layer,) = body["layers"]
    assert layer["mediaType"] == bundle.BUNDLE_V03 and blobs[Digest.parse(layer["digest"])] == raw
    assert body["annotations"] == {
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
        "org.opencontainers.image.created": "2026-12-08T00:00:00Z",
    }
    entry = Descriptor(manifest.media_type, manifest.digest, len(manifest.raw),
                       artifact_type=manifest.artifact_type)  # fmt: skip
    assert bundle.is_bundle_referrer(entry)
    assert not bundle.is_bundle_referrer(Descriptor(mt.OCI_MANIFEST, digest, 1))


def test_keys_are_written_as_cosign_writes_them_and_read_back() -> None:
    import base64
    import hashlib

    from nacl.secret import SecretBox

    from polyarch.attest import sign

    key = sign.generate()
    pem = sign.encrypted_pem(key, b"pw")
    lines = pem.decode().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert all(len(line) <= 64 for line in lines)
    # go-securesystemslib's encrypted form, decrypted here without polyarch's reader
    sealed = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert sealed["kdf"]["name"] == "scrypt" and sealed["cipher"]["name"] == "nacl/secretbox"
    params = sealed["kdf"]["params"]
    box_key = hashlib.scrypt(b"pw", salt=base64.b64decode(sealed["kdf"]["salt"]), n=params["N"],
                             r=params["r"], p=params["p"], dklen=32, maxmem=1 << 27)  # fmt: skip
    der = SecretBox(box_key).decrypt(base64.b64decode(sealed["ciphertext"]),
                                     base64.b64decode(sealed["cipher"]["nonce"]))  # fmt: skip
    from cryptography.hazmat.primitives import serialization

    assert serialization.load_der_private_key(der, None).public_key().public_numbers() == (
        key.public_key().public_numbers()
    )
    again = sign.read_private(pem, b"pw")
    assert again.private_numbers() == key.private_numbers()
    with pytest.raises(sign.SignatureError, match="wrong password"):
        sign.read_private(pem, b"not it")
    public = sign.read_public(sign.public_pem(key))
    assert public.public_numbers() == key.public_key().public_numbers()
    with pytest.raises(sign.SignatureError, match="not a public key"):
        sign.read_public(b"nonsense")


# verification summaries ------------------------------------------------------------------------


def test_a_verification_summary_and_what_passes() -> None:
    from polyarch.attest import vsa

    policy = {"run": True, "command": "uname -m", "probes": ["80/=200"], "arch_check": True}
    body = vsa.predicate(resource_uri="pkg:docker/r.io/a@1?platform=linux/arm64", passed=True,
                         time_verified="2026-12-07T20:00:00Z", version="0.1.0", policy=policy,
                         runner="qemu-aarch64", checks=["config"], probes={"80/": "200"},
                         failures=[])  # fmt: skip
    assert body["verificationResult"] == "PASSED"
    assert body["verifiedLevels"] == ["POLYARCH_VERIFIED"]
    assert body["policy"]["digest"]["sha256"] == vsa.policy_digest(dict(reversed(policy.items())))
    assert vsa.passes(body) and vsa.passes(body, policy)
    assert not vsa.passes(body, {**policy, "command": "true"})
    failed = {**body, "verificationResult": "FAILED"}
    assert not vsa.passes(failed)
    assert not vsa.passes({**body, "verifier": {"id": "someone-else"}})
    statement = json.loads(intoto.statement(intoto.PREDICATE_VSA, intoto.subjects(
        [], AMD64, Digest.of(b"m")), body))  # fmt: skip
    jsonschema.validate(statement, json.loads((SCHEMAS / "intoto-statement-v1.json").read_text()))


def test_which_stages_and_whether_the_context_an_sbom_scans() -> None:
    from polyarch.attest.sbom.targets import scan_targets
    from polyarch.frontend.dockerfile import build, parse

    text = ("ARG BUILDKIT_SBOM_SCAN_STAGE=false\n"
            "FROM a AS one\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n"
            "FROM a AS two\n"
            "FROM a AS three\nCOPY --from=one / /\nCOPY --from=two / /\n")  # fmt: skip
    df = build(parse(text, "Dockerfile"), "Dockerfile")
    every = {"one", "two", "three"}
    assert scan_targets(df, {}, "three", every) == (False, ["one"])
    # a build argument is the value of the stage's ARG too (its default only when not given)
    assert scan_targets(df, {"BUILDKIT_SBOM_SCAN_STAGE": "two"}, "three", every) == (
        False,
        ["two"],
    )
    assert scan_targets(df, {"BUILDKIT_SBOM_SCAN_CONTEXT": "true"}, "three", every) == (
        True,
        ["one"],
    )
    assert scan_targets(df, {}, "three", {"three"}) == (False, [])  # not reachable


def test_layers_are_read_in_order_and_kept_per_layer() -> None:
    import io
    import tarfile

    from polyarch.attest.sbom import scan

    def layer(entries: list[tuple[str, bytes | None]]) -> io.BytesIO:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                if data is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        out.seek(0)
        return out

    status = b"Package: dash\nStatus: install ok installed\nVersion: 1\n"
    base = scan._layer_events(layer([
        ("var/lib/dpkg/status", status), ("lib/apk/db/installed", b"P:x\nV:1\n"),
        ("app/node_modules/a/package.json", b'{"name": "a", "version": "1.0.0"}'),
        ("usr/bin/tool", b"x" * 10),
    ]))  # fmt: skip
    upper = scan._layer_events(layer([
        ("lib/apk/db/.wh.installed", b""), ("app/node_modules/.wh..wh..opq", b""),
        ("app/node_modules/b/package.json", b'{"name": "b", "version": "2.0.0"}'),
        ("var/lib/dpkg/status", b"x" * 3),  # replaced by something that is not a database
    ]))  # fmt: skip
    kept = [scan._events_from_json(scan._events_json(e)) for e in (base, upper)]
    assert kept == [base, upper]  # what a later build reads instead of the layer
    tree: dict[str, scan._Found] = {}
    for events in kept:
        assert events is not None
        scan._apply(events, tree)
    assert sorted(tree) == ["app/node_modules/b/package.json", "var/lib/dpkg/status"]
    found = scan.packages(tree)
    assert [(p.kind, p.name) for p in found] == [("npm", "b")]
    assert scan._events_from_json(b'{"version": 0, "events": []}') is None


def test_hostile_package_metadata_is_skipped_not_a_traceback() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert pk.npm_package(deep, "node_modules/x/package.json") is None
    assert pk.npm_lock(deep, "package-lock.json") == []
    huge = pk.Package("npm", "x", "1", "pkg:npm/x@1", ("MIT " * 10_000,), "p")
    doc = document([huge], image_name="i", image_purl="pkg:docker/i", manifest_digest="",
                   created="2023-11-14T22:13:20Z", tool="t")  # fmt: skip
    declared = doc["packages"][1]["licenseDeclared"]
    assert declared.startswith("LicenseRef-") and len(declared) < 250
