"""Attestations on real builds: SLSA provenance and SPDX SBOMs per platform, stored in the
index as BuildKit stores them, pushed to Distribution and read back with skopeo; the SBOM
checked against what the image's own dpkg says and validated by the SPDX tools; secrets
never in them; the same bytes again with SOURCE_DATE_EPOCH."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import needs_emulation, polyarch, remove_tree
from tests.registry_server import RunningRegistry

pytestmark = needs_emulation
BOTH = "linux/amd64,linux/arm64"
EPOCH = "1700000000"
SECRET_VALUE = "s3cr3t-value-never-written"
TOKEN_VALUE = "tok3n-value-never-written"
GIT_REMOTE = "https://ci-bot:gh-cred3ntial@git.example/team/app.git"


def _raw(skopeo: str, ref: str) -> dict[str, Any]:
    done = subprocess.run([skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _blob(skopeo: str, ref: str, digest: str, into: Path) -> bytes:
    """A blob read back through skopeo (an independent client), by copying the image."""
    layout = into / "layout"
    if not layout.exists():
        subprocess.run([skopeo, "copy", "--all", "--src-tls-verify=false", f"docker://{ref}",
                        f"oci:{layout}:x"], capture_output=True, check=True)  # fmt: skip
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


@dataclass
class Attested:
    ref: str
    index: dict[str, Any]
    statements: dict[str, dict[str, dict[str, Any]]]  # platform -> predicate type -> statement
    raw: list[bytes]  # every attestation blob and manifest, as pushed


@pytest.fixture(scope="module")
def attested(
    tiny: str, registry: RunningRegistry, skopeo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Attested]:
    """The tiny Debian for amd64 and arm64 with --sbom and --provenance mode=max, a secret
    and a build argument named like a token, pushed; its attestations read back."""
    ctx = tmp_path_factory.mktemp("attest-ctx")
    (ctx / "Dockerfile").write_text(
        f"FROM {tiny}\n"
        "ARG GITHUB_TOKEN\n"
        "RUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo built > /built\n"
    )
    # The context is a git checkout whose remote's URL carries a credential.
    for command in (
        ["init", "-q"],
        ["remote", "add", "origin", GIT_REMOTE],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"],
    ):
        subprocess.run(["git", "-C", str(ctx), *command], check=True, capture_output=True)
    root = tmp_path_factory.mktemp("attest-root")
    ref = registry.ref("attest/tiny:1")
    env = {"SOURCE_DATE_EPOCH": EPOCH, "TOK": SECRET_VALUE}
    command = ("build", "--root", str(root), "--platform", BOTH, "-t", ref, "--push",
               "--sbom=true", "--provenance=mode=max", "--secret", "id=tok,env=TOK",
               "--build-arg", f"GITHUB_TOKEN={TOKEN_VALUE}", str(ctx))  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        polyarch(*command)
        again = polyarch(*command, "--quiet")  # the same build: the same index
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    index = _raw(skopeo, ref)
    assert again.stdout.strip().splitlines()[-1] == _digest(skopeo, ref)
    statements, raw = _attestations(skopeo, ref, index, tmp_path_factory.mktemp("read"))
    yield Attested(ref, index, statements, raw)
    remove_tree(root)


def _attestations(skopeo: str, ref: str, index: dict[str, Any], into: Path
                  ) -> tuple[dict[str, dict[str, dict[str, Any]]], list[bytes]]:  # fmt: skip
    """The statements of each platform (by predicate type) and every attestation blob."""
    statements: dict[str, dict[str, dict[str, Any]]] = {}
    raw: list[bytes] = []
    by_digest = {m["digest"]: m for m in index["manifests"]}
    for entry in index["manifests"]:
        if entry["platform"]["os"] != "unknown":
            continue
        manifest_bytes = _blob(skopeo, ref, entry["digest"], into)
        raw.append(manifest_bytes)
        manifest = json.loads(manifest_bytes)
        target = by_digest[entry["annotations"]["vnd.docker.reference.digest"]]
        platform = f"{target['platform']['os']}/{target['platform']['architecture']}"
        statements[platform] = {}
        for layer in manifest["layers"]:
            blob = _blob(skopeo, ref, layer["digest"], into)
            raw.append(blob)
            statement = json.loads(blob)
            statements[platform][statement["predicateType"]] = statement
    return statements, raw


def _digest(skopeo: str, ref: str) -> str:
    import hashlib

    done = subprocess.run([skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                          capture_output=True, check=True)  # fmt: skip
    return "sha256:" + hashlib.sha256(done.stdout).hexdigest()


def _file_in_layer(blob: bytes, name: str) -> set[str]:
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return {line for line in member.read().decode().splitlines() if line}


def test_the_index_holds_an_attestation_manifest_per_platform(attested: Attested) -> None:
    entries = attested.index["manifests"]
    images = [e for e in entries if e["platform"]["os"] != "unknown"]
    attestations = [e for e in entries if e["platform"]["os"] == "unknown"]
    assert [e["platform"]["architecture"] for e in images] == ["amd64", "arm64"]
    assert entries[: len(images)] == images  # after the images, as BuildKit lists them
    assert len(attestations) == 2
    for entry in attestations:
        assert entry["platform"] == {"architecture": "unknown", "os": "unknown"}
        assert entry["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
        assert entry["annotations"]["vnd.docker.reference.digest"] in {e["digest"] for e in images}
        assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


def test_attestation_manifests_are_buildkits_oci_artifacts(attested: Attested) -> None:
    manifests = [json.loads(b) for b in attested.raw if b"artifactType" in b[:200]]
    assert len(manifests) == 2
    images = {e["digest"]: e for e in attested.index["manifests"]}
    for manifest in manifests:
        assert manifest["artifactType"] == "application/vnd.docker.attestation.manifest.v1+json"
        assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
        assert manifest["config"]["digest"] == (
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        )
        subject = manifest["subject"]
        assert images[subject["digest"]]["size"] == subject["size"]
        types = [layer["annotations"]["in-toto.io/predicate-type"] for layer in manifest["layers"]]
        assert sorted(types) == ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"]
        assert {layer["mediaType"] for layer in manifest["layers"]} == {
            "application/vnd.in-toto+json"
        }


def test_statements_name_their_platform_image(attested: Attested) -> None:
    digests = {
        f"{e['platform']['os']}/{e['platform']['architecture']}": e["digest"]
        for e in attested.index["manifests"]
        if e["platform"]["os"] != "unknown"
    }
    for platform, by_type in attested.statements.items():
        for statement in by_type.values():
            assert statement["_type"] == "https://in-toto.io/Statement/v1"
            (subject,) = statement["subject"]
            assert subject["digest"] == {"sha256": digests[platform].removeprefix("sha256:")}
            assert subject["name"].startswith("pkg:docker/")
            assert "platform=" + platform in subject["name"].replace("%2F", "/")


def test_provenance_records_bases_arguments_and_secrets_by_id(attested: Attested) -> None:
    for platform, by_type in attested.statements.items():
        predicate = by_type["https://slsa.dev/provenance/v1"]["predicate"]
        definition = predicate["buildDefinition"]
        (base,) = definition["resolvedDependencies"]
        assert base["uri"].startswith("pkg:docker/")
        assert "tiny" in base["uri"] and len(base["digest"]["sha256"]) == 64
        request = definition["externalParameters"]["request"]
        assert request["frontend"] == "dockerfile.v0"
        assert request["secrets"] == [{"id": "tok", "optional": True}]  # as BuildKit: not required
        assert request["args"]["build-arg:SOURCE_DATE_EPOCH"] == EPOCH
        assert "build-arg:GITHUB_TOKEN" not in request["args"]  # named like a token
        assert definition["externalParameters"]["configSource"]["path"] == "Dockerfile"
        metadata = predicate["runDetails"]["metadata"]
        assert metadata["startedOn"] == metadata["finishedOn"] == "2023-11-14T22:13:20Z"
        assert metadata["buildkit_reproducible"] is True
        assert metadata["buildkit_completeness"]["request"] is False
        source = metadata["buildkit_metadata"]["source"]["infos"][0]
        assert source["language"] == "Dockerfile"
        vcs = metadata["buildkit_metadata"]["vcs"]
        assert vcs["source"] == "https://git.example/team/app.git"  # no credential
        assert len(vcs["revision"]) == 40 and vcs["localdir:context"] == "."
        assert predicate["runDetails"]["builder"]["version"]["polyarch"]
        assert platform in ("linux/amd64", "linux/arm64")


def test_no_secret_value_is_in_any_attestation(attested: Attested) -> None:
    for blob in attested.raw:
        assert SECRET_VALUE.encode() not in blob
        assert TOKEN_VALUE.encode() not in blob
        assert b"gh-cred3ntial" not in blob


def _valid_spdx(document: dict[str, Any], tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(document))
    problems = validate_full_spdx_document(parse_file(str(path)))
    assert problems == [], [p.validation_message for p in problems]


def test_every_sbom_is_valid_spdx(attested: Attested, tmp_path: Path) -> None:
    for by_type in attested.statements.values():
        _valid_spdx(by_type["https://spdx.dev/Document"]["predicate"], tmp_path)


NPM_LOCK = {
    "node_modules/left-pad": ("left-pad", "1.3.0", "WTFPL"),
    "node_modules/@babel/core": ("@babel/core", "7.24.0", "MIT"),
    "node_modules/@babel/core/node_modules/semver": ("semver", "6.3.1", "ISC"),
}
PY_LOCK = {"requests": ("2.31.0", "Apache-2.0"), "six": ("1.16.0", "MIT")}


@pytest.fixture(scope="module")
def debian_sbom(base: str, registry: RunningRegistry, skopeo: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One platform of Debian (dpkg's database), with npm packages (and their lock file) and
    Python distributions (and their pins) added, built with --sbom; returns the SBOM, the
    lines dpkg-query printed in the image, and the index."""
    ctx = tmp_path_factory.mktemp("sbom-ctx")
    lock: dict[str, Any] = {"lockfileVersion": 3, "packages": {"": {"name": "app"}}}
    for path, (name, version, licence) in NPM_LOCK.items():
        (ctx / "app" / path).mkdir(parents=True)
        (ctx / "app" / path / "package.json").write_text(json.dumps(
            {"name": name, "version": version, "license": licence}))  # fmt: skip
        lock["packages"][path] = {"version": version, "license": licence}
    (ctx / "app" / "package-lock.json").write_text(json.dumps(lock))
    for name, (version, licence) in PY_LOCK.items():
        info = ctx / "site" / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\n"
            f"Version: {version}\nLicense-Expression: {licence}\n"
        )
    (ctx / "Dockerfile").write_text(
        f"FROM {base} AS deps\n"
        "ARG BUILDKIT_SBOM_SCAN_STAGE=true\n"
        "COPY site/ /usr/lib/python3/dist-packages/\n"
        f"FROM {base}\n"
        "COPY app/ /app/\n"
        "COPY --from=deps /usr/lib/python3/dist-packages/ /usr/lib/python3/dist-packages/\n"
        "RUN dpkg-query -W -f '${Package} ${Version}\\n' > /dpkg-list.txt\n"
    )
    (ctx / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, (v, _l) in PY_LOCK.items()))
    root = tmp_path_factory.mktemp("sbom-root")
    ref = registry.ref("attest/debian:1")
    polyarch("build", "--root", str(root), "-t", ref, "--push", "--sbom=true", "--build-arg",
             "BUILDKIT_SBOM_SCAN_CONTEXT=true", str(ctx))  # fmt: skip
    index = _raw(skopeo, ref)
    into = tmp_path_factory.mktemp("sbom-read")
    statements, _raw_blobs = _attestations(skopeo, ref, index, into)
    (image_entry,) = [e for e in index["manifests"] if e["platform"]["os"] != "unknown"]
    image = json.loads(_blob(skopeo, ref, image_entry["digest"], into))
    dpkg = _file_in_layer(_blob(skopeo, ref, image["layers"][-1]["digest"], into),
                          "dpkg-list.txt")  # fmt: skip
    documents = json.loads(polyarch("inspect", "--sbom", ref).stdout)
    parts = {d["name"].rpartition("(")[2].rstrip(")") if "(" in d["name"] else "image": d
             for d in documents}  # fmt: skip
    yield {"sbom": parts["image"], "parts": parts,
           "provenance": statements["linux/amd64"].get("https://slsa.dev/provenance/v1"),
           "dpkg": dpkg, "index": index}  # fmt: skip
    remove_tree(root)


def _by_type(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    out = {}
    for package in document["packages"]:
        for ref in package.get("externalRefs", []):
            if ref["referenceLocator"].startswith(f"pkg:{kind}/"):
                out[ref["referenceLocator"]] = package
    return out


def test_the_sbom_lists_what_dpkg_says_the_image_holds(debian_sbom: dict[str, Any]) -> None:
    debs = _by_type(debian_sbom["sbom"], "deb")
    assert len(debian_sbom["dpkg"]) > 50  # a real Debian, not an empty list
    assert {f"{p['name']} {p['versionInfo']}" for p in debs.values()} == debian_sbom["dpkg"]
    assert all("arch=" in purl and "distro=debian-12" in purl for purl in debs)
    licensed = [p for p in debs.values() if p["licenseDeclared"] != "NOASSERTION"]
    assert len(licensed) > len(debs) // 2  # read from /usr/share/doc/*/copyright


def test_the_sbom_lists_the_npm_and_python_lock_files(debian_sbom: dict[str, Any]) -> None:
    npm = {(p["name"], p["versionInfo"], p["licenseDeclared"])
           for p in _by_type(debian_sbom["sbom"], "npm").values()}  # fmt: skip
    assert npm == set(NPM_LOCK.values())
    python = {p["name"]: (p["versionInfo"], p["licenseDeclared"])
              for p in _by_type(debian_sbom["sbom"], "pypi").values()}  # fmt: skip
    assert python == PY_LOCK


def test_the_stages_and_the_context_asked_for_are_scanned_too(
    debian_sbom: dict[str, Any], tmp_path: Path
) -> None:
    parts = debian_sbom["parts"]
    assert sorted(parts) == ["context", "image", "stage deps"]
    stage = {p["name"] for p in _by_type(parts["stage deps"], "pypi").values()}
    assert stage == set(PY_LOCK)
    context = {(p["name"], p["versionInfo"]) for p in _by_type(parts["context"], "npm").values()}
    assert context == {(n, v) for n, v, _l in NPM_LOCK.values()}  # package-lock.json
    pinned = {p["name"]: p["versionInfo"] for p in _by_type(parts["context"], "pypi").values()}
    assert pinned == {n: v for n, (v, _l) in PY_LOCK.items()}  # requirements.txt
    for document in parts.values():
        _valid_spdx(document, tmp_path)
    assert len({d["documentNamespace"] for d in parts.values()}) == 3


def test_a_one_platform_image_becomes_an_index_and_sbom_is_valid(
    debian_sbom: dict[str, Any], tmp_path: Path
) -> None:
    index = debian_sbom["index"]
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [e["platform"]["os"] for e in index["manifests"]] == ["linux", "unknown"]
    _valid_spdx(debian_sbom["sbom"], tmp_path)
    # a push gets buildx's default: mode=min provenance (no arguments, no Dockerfile)
    provenance = debian_sbom["provenance"]["predicate"]
    assert "source" not in provenance["runDetails"]["metadata"]["buildkit_metadata"]


def test_every_statement_meets_the_in_toto_and_slsa_schemas(attested: Attested) -> None:
    import jsonschema

    schemas = Path(__file__).parent.parent / "data" / "schemas"
    statement = json.loads((schemas / "intoto-statement-v1.json").read_text())
    slsa = json.loads((schemas / "slsa-provenance-v1.json").read_text())
    for by_type in attested.statements.values():
        for item in by_type.values():
            jsonschema.validate(item, statement)
        jsonschema.validate(by_type["https://slsa.dev/provenance/v1"]["predicate"], slsa)


def test_inspect_lists_attestations_and_prints_each_kind(attested: Attested) -> None:
    listed = polyarch("inspect", attested.ref).stdout
    assert "Attestations:" in listed
    rows = [line for line in listed.split("Attestations:")[1].splitlines() if "https://" in line]
    assert sorted((r.split()[0], r.split()[1]) for r in rows) == [
        ("linux/amd64", "https://slsa.dev/provenance/v1"),
        ("linux/amd64", "https://spdx.dev/Document"),
        ("linux/arm64", "https://slsa.dev/provenance/v1"),
        ("linux/arm64", "https://spdx.dev/Document"),
    ]
    as_json = json.loads(polyarch("inspect", "--format", "json", attested.ref).stdout)
    assert len(as_json["attestations"]) == 4
    one = json.loads(polyarch("inspect", "--provenance", "--platform", "linux/arm64",
                              attested.ref).stdout)  # fmt: skip
    assert one == attested.statements["linux/arm64"]["https://slsa.dev/provenance/v1"]["predicate"]
    both = json.loads(polyarch("inspect", "--sbom", attested.ref).stdout)
    assert sorted(both) == ["linux/amd64", "linux/arm64"]
    assert both["linux/amd64"]["spdxVersion"] == "SPDX-2.3"
    none = polyarch("inspect", "--verification", attested.ref, check=False)
    assert none.returncode == 2 and "carries no verification summary" in none.stderr


# signatures and verification summaries ---------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cosign key pair made by `polyarch sign --generate-key` (password from
    COSIGN_PASSWORD), and a second, unrelated pair."""
    where = tmp_path_factory.mktemp("keys")
    (where / "other").mkdir()
    old = os.environ.get("COSIGN_PASSWORD")
    os.environ["COSIGN_PASSWORD"] = "correct horse"
    try:
        polyarch("sign", "--generate-key", cwd=str(where))
        polyarch("sign", "--generate-key", cwd=str(where / "other"))
        yield where
    finally:
        if old is None:
            os.environ.pop("COSIGN_PASSWORD", None)
        else:
            os.environ["COSIGN_PASSWORD"] = old


def _openssl_verified(skopeo: str, ref: str, digest: str, public: Path, into: Path) -> bool:
    """Whether the cosign signature tag of `digest` holds a signature OpenSSL verifies with
    `public` over a simple-signing payload naming that digest, read as cosign lays it out
    (containers/image reads the same: Debian's build has its sigstore support disabled, so
    skopeo cannot be the checker here)."""
    import base64
    import hashlib

    repository = ref.rsplit(":", 1)[0] if "@" not in ref else ref.split("@", maxsplit=1)[0]
    tag = f"{repository}:{digest.replace('sha256:', 'sha256-')}.sig"
    try:
        manifest = _raw(skopeo, tag)
    except subprocess.CalledProcessError:
        return False
    for layer in manifest["layers"]:
        if layer["mediaType"] != "application/vnd.dev.cosign.simplesigning.v1+json":
            continue
        done = subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{tag}",
                               f"dir:{into / 'sig'}"], capture_output=True, check=True)  # fmt: skip
        assert done.returncode == 0
        payload = (into / "sig" / layer["digest"].removeprefix("sha256:")).read_bytes()
        assert hashlib.sha256(payload).hexdigest() == layer["digest"].removeprefix("sha256:")
        claims = json.loads(payload)["critical"]
        signature = into / "sig.der"
        signature.write_bytes(base64.b64decode(layer["annotations"][
            "dev.cosignproject.cosign/signature"]))  # fmt: skip
        (into / "payload").write_bytes(payload)
        checked = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public),
                                  "-signature", str(signature), str(into / "payload")],
                                 capture_output=True, text=True, check=False)  # fmt: skip
        import shutil

        shutil.rmtree(into / "sig", ignore_errors=True)
        if (checked.returncode == 0 and claims["image"]["docker-manifest-digest"] == digest
                and claims["type"] == "cosign container image signature"
                and claims["identity"]["docker-reference"] == repository):  # fmt: skip
            return True
    return False


def test_signatures_in_cosigns_layout_that_openssl_verifies(
    attested: Attested, keys: Path, skopeo: str, tmp_path: Path
) -> None:
    assert (
        (keys / "cosign.key")
        .read_text()
        .startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    )
    assert oct((keys / "cosign.key").stat().st_mode & 0o777) == "0o600"
    index_digest = _digest(skopeo, attested.ref)
    public = keys / "cosign.pub"
    assert not _openssl_verified(skopeo, attested.ref, index_digest, public, tmp_path)
    env_password = os.environ.get("COSIGN_PASSWORD")
    os.environ["COSIGN_PASSWORD"] = "wrong"
    try:
        wrong = polyarch("sign", "--key", str(keys / "cosign.key"), attested.ref, check=False)
        assert wrong.returncode != 0 and "wrong password" in wrong.stderr
        os.environ["COSIGN_PASSWORD"] = "correct horse"
        signed = polyarch("sign", "--key", str(keys / "cosign.key"), attested.ref)
        lines = signed.stdout.splitlines()
        assert [line.split()[1] for line in lines] == ["image", "linux/amd64", "linux/arm64"]
        again = polyarch("sign", "--key", str(keys / "cosign.key"), attested.ref)
        assert again.stdout == signed.stdout
    finally:
        if env_password is None:
            os.environ.pop("COSIGN_PASSWORD", None)
        else:
            os.environ["COSIGN_PASSWORD"] = env_password
    repository = attested.ref.rsplit(":", 1)[0]
    sig = _raw(skopeo, f"{repository}:{index_digest.replace('sha256:', 'sha256-')}.sig")
    assert len(sig["layers"]) == 1  # signing twice kept one signature
    assert _raw(skopeo, attested.ref) == attested.index  # the image's tag did not move
    assert _openssl_verified(skopeo, attested.ref, index_digest, public, tmp_path)
    for entry in attested.index["manifests"][:2]:
        assert _openssl_verified(skopeo, attested.ref, entry["digest"], public, tmp_path)
    other = keys / "other" / "cosign.pub"
    assert not _openssl_verified(skopeo, attested.ref, index_digest, other, tmp_path)
    checked = polyarch("verify", "--no-run", "--key", str(public), attested.ref)
    assert "signed by" in checked.stdout
    unsigned = polyarch("verify", "--no-run", "--key", str(other), attested.ref, check=False)
    assert unsigned.returncode == 1 and "carries no valid signature" in unsigned.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic, in Sigstore's types
def test_cosign_v3_bundles_as_referrers_that_sigstores_types_and_openssl_read(
    tiny: str, registry: RunningRegistry, keys: Path, skopeo: str, tmp_path: Path
) -> None:
    import base64
    import hashlib
    import urllib.request

    from sigstore_protobuf_specs.dev.sigstore.bundle.v1 import Bundle

    (tmp_path / "Dockerfile").write_text(f"FROM {tiny}\nLABEL signed=bundle\n")
    ref = registry.ref("attest/bundle:1")
    polyarch("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "-t", ref,
             "--push", str(tmp_path))  # fmt: skip
    index = _raw(skopeo, ref)
    digests = [_digest(skopeo, ref)] + [e["digest"] for e in index["manifests"]
                                        if e["platform"]["os"] != "unknown"]  # fmt: skip
    key = str(keys / "cosign.key")
    old = os.environ.get("COSIGN_PASSWORD")
    os.environ["COSIGN_PASSWORD"] = "correct horse"
    try:
        signed = polyarch("sign", "--new-bundle-format", "--key", key, ref)
        again = polyarch("sign", "--new-bundle-format", "--key", key, ref)
    finally:
        if old is None:
            os.environ.pop("COSIGN_PASSWORD", None)
        else:
            os.environ["COSIGN_PASSWORD"] = old
    assert [line.split()[2] for line in signed.stdout.splitlines()] == digests
    assert again.stdout == signed.stdout
    assert _raw(skopeo, ref) == index  # no tag of the image moved
    public = keys / "cosign.pub"
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(public), "-outform", "DER"],
                         capture_output=True, check=True).stdout  # fmt: skip
    repository = ref.rsplit(":", 1)[0]
    name = repository.split("/", 1)[1]
    for digest in digests:
        listed = _raw(skopeo, f"{repository}:{digest.replace(':', '-')}")  # the tag schema
        (entry,) = listed["manifests"]  # signing twice attached one bundle
        assert entry["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
        manifest = _raw(skopeo, f"{repository}@{entry['digest']}")
        assert manifest["subject"]["digest"] == digest
        assert manifest["annotations"]["dev.sigstore.bundle.content"] == "dsse-envelope"
        (layer,) = manifest["layers"]
        url = f"http://{registry.host}/v2/{name}/blobs/{layer['digest']}"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(url) as response:  # plain HTTP to the test's own registry
            raw = response.read()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer["digest"]
        parsed = Bundle.from_dict(json.loads(raw))  # Sigstore's own types read it
        assert parsed.media_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
        assert parsed.verification_material.public_key.hint == (
            base64.b64encode(hashlib.sha256(der).digest()).decode())  # fmt: skip
        envelope = parsed.dsse_envelope
        statement = json.loads(envelope.payload)
        assert statement["subject"] == [{"digest": {"sha256": digest.removeprefix("sha256:")}}]
        assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
        kind = envelope.payload_type.encode()
        pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(envelope.payload), envelope.payload)
        (tmp_path / "pae").write_bytes(pae)
        (tmp_path / "sig.der").write_bytes(envelope.signatures[0].sig)
        checked = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public),
                                  "-signature", str(tmp_path / "sig.der"), str(tmp_path / "pae")],
                                 capture_output=True, check=False)  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        assert not _openssl_verified(skopeo, ref, digest, public, tmp_path)  # no .sig tag
    checked_here = polyarch("verify", "--no-run", "--key", str(public), ref)
    assert "signed by" in checked_here.stdout
    other = keys / "other" / "cosign.pub"
    unsigned = polyarch("verify", "--no-run", "--key", str(other), ref, check=False)
    assert unsigned.returncode == 1 and "carries no valid signature" in unsigned.stderr


def test_verify_attests_its_result_and_a_later_verify_takes_it(
    attested: Attested, skopeo: str, tmp_path: Path
) -> None:
    required = polyarch("verify", "--require-attested", attested.ref, check=False)
    assert required.returncode == 1 and "no passing verification summary" in required.stderr
    done = polyarch("verify", "--root", str(tmp_path / "root"), "--attest", "--run",
                    "test -f /built", attested.ref)  # fmt: skip
    assert done.stdout.count("attached the verification summary") == 2
    assert _raw(skopeo, attested.ref) == attested.index  # a referrer: the digest is the same
    taken = polyarch("verify", "--require-attested", "--platform", BOTH, attested.ref)
    assert taken.stdout.count("attested") >= 2
    summaries = json.loads(polyarch("inspect", "--verification", attested.ref).stdout)
    assert sorted(summaries) == ["linux/amd64", "linux/arm64"]
    arm = summaries["linux/arm64"]
    assert arm["verificationResult"] == "PASSED"
    assert arm["verifier"]["id"] == "urn:polyarch:verify"
    assert "qemu-aarch64" in arm["polyarch_verify"]["ran"]
    assert "(native" in summaries["linux/amd64"]["polyarch_verify"]["ran"]
    assert arm["resourceUri"].startswith("pkg:docker/")


def test_attestations_as_referrers_leave_the_index_to_the_images(
    tiny: str, registry: RunningRegistry, skopeo: str, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {tiny}\nRUN echo hi > /hi\n")
    ref = registry.ref("attest/referrers:1")
    polyarch("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "--output",
             f"type=registry,name={ref},attestations=referrers", str(tmp_path))  # fmt: skip
    index = _raw(skopeo, ref)
    assert [e["platform"]["os"] for e in index["manifests"]] == ["linux", "linux"]
    repository = ref.rsplit(":", 1)[0]
    for entry in index["manifests"]:
        listed = _raw(skopeo, f"{repository}:{entry['digest'].replace(':', '-')}")
        (referrer,) = listed["manifests"]
        assert referrer["artifactType"] == "application/vnd.docker.attestation.manifest.v1+json"
        manifest = _raw(skopeo, f"{repository}@{referrer['digest']}")
        assert manifest["subject"]["digest"] == entry["digest"]
    listed = polyarch("inspect", ref).stdout
    assert listed.count("https://slsa.dev/provenance/v1") == 2  # the default, min
    arm = json.loads(polyarch("inspect", "--provenance", "--platform", "linux/arm64",
                              ref).stdout)  # fmt: skip
    assert arm["buildDefinition"]["buildType"].endswith("slsa-definitions.md")


def test_local_outputs_get_the_statements_beside_the_files(tiny: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {tiny}\nRUN echo hi > /hi\n")
    out = tmp_path / "out"
    polyarch("build", "--root", str(tmp_path / "root"), "--platform", BOTH, "--sbom=true",
             "--attest", "type=provenance,mode=max,filename=prov.json", "-o",
             f"type=local,dest={out}", str(tmp_path))  # fmt: skip
    for platform in ("linux_amd64", "linux_arm64"):
        assert (out / platform / "hi").read_text() == "hi\n"
        provenance = json.loads((out / platform / "prov.json").read_text())
        assert provenance["predicateType"] == "https://slsa.dev/provenance/v1"
        sbom = json.loads((out / platform / "sbom.spdx.json").read_text())
        assert sbom["predicate"]["spdxVersion"] == "SPDX-2.3"
    plain = tmp_path / "plain"
    polyarch("build", "--root", str(tmp_path / "root"), "--platform", "linux/amd64", "-o",
             f"type=local,dest={plain}", str(tmp_path))  # fmt: skip
    assert sorted(p.name for p in plain.iterdir() if p.suffix == ".json") == []
