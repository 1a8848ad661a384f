import base64
import contextlib
import json
import os
from pathlib import Path

import httpx
import pytest

from polyarch.digest import Digest
from polyarch.errors import (
    AuthenticationError,
    InsecureTransportError,
    NotFoundError,
    RegistryError,
    RegistryUnavailableError,
    VerificationError,
)
from polyarch.oci import mediatypes as mt
from polyarch.oci.models import Descriptor, Index, Manifest
from polyarch.reference import Reference
from polyarch.registry import Credential, RegistryClient, RetryPolicy, Timing
from polyarch.store import ContentStore
from tests.fakes import CutStream, FakeRegistry, nth_request


class StaticCredentials:
    def __init__(self, by_host: dict[str, Credential]) -> None:
        self.by_host = by_host
        self.asked: list[str] = []

    def get(self, host: str) -> Credential:
        self.asked.append(host)
        return self.by_host.get(host, Credential())


def make_client(
    registry: FakeRegistry, creds: dict[str, Credential] | None = None, **kwargs: object
) -> tuple[RegistryClient, list[float]]:
    sleeps: list[float] = []
    client = RegistryClient(
        transport=registry.transport(),
        credentials=StaticCredentials(creds or {}),
        timing=Timing(sleep=sleeps.append),
        retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=30),
        **kwargs,  # type: ignore[arg-type]
    )
    return client, sleeps


def seed_image(registry: FakeRegistry, repo: str = "team/app", tag: str = "v1") -> Manifest:
    config = json.dumps({"os": "linux", "architecture": "amd64"}).encode()
    layer = os.urandom(300_000)
    cd = registry.add_blob(repo, config)
    ld = registry.add_blob(repo, layer)
    manifest = Manifest.create(
        Descriptor(mt.OCI_CONFIG, Digest.parse(cd), len(config)),
        [Descriptor(mt.OCI_LAYER_GZIP, Digest.parse(ld), len(layer))],
    )
    registry.add_manifest(repo, manifest.raw, mt.OCI_MANIFEST, tag)
    return manifest


def ref(text: str = "reg.test/team/app:v1") -> Reference:
    return Reference.parse(text)


# manifests ------------------------------------------------------------------------------------


def test_get_manifest_keeps_bytes_and_checks_digest() -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    client, _ = make_client(registry)
    fetched = client.get_manifest(ref())
    assert fetched.document.raw == manifest.raw
    assert fetched.digest == manifest.digest
    accept = registry.log[-1].headers["Accept"]
    assert mt.OCI_INDEX in accept and mt.DOCKER_MANIFEST in accept
    by_digest = client.get_manifest(ref().with_digest(manifest.digest))
    assert by_digest.digest == manifest.digest


def test_manifest_whose_bytes_do_not_match_the_asked_digest_is_refused() -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    other = seed_image(registry, tag="v2")
    # The registry answers a digest request with the wrong document.
    registry.manifests[("team/app", str(manifest.digest))] = (other.raw, mt.OCI_MANIFEST)
    client, _ = make_client(registry)
    with pytest.raises(VerificationError) as info:
        client.get_manifest(ref().with_digest(manifest.digest))
    assert info.value.expected_digest == str(manifest.digest)
    assert info.value.actual_digest == str(other.digest)


def test_lying_docker_content_digest_is_refused() -> None:
    registry = FakeRegistry()
    seed_image(registry)
    registry.faults.append(
        nth_request(
            lambda r: r.method == "GET" and "/manifests/v1" in r.url.path,
            [
                httpx.Response(
                    200,
                    headers={
                        "Content-Type": mt.OCI_INDEX,
                        "Docker-Content-Digest": "sha256:" + "0" * 64,
                    },
                    content=Index.create([]).raw,
                )
            ],
        )
    )
    client, _ = make_client(registry)
    with pytest.raises(VerificationError, match="Docker-Content-Digest"):
        client.get_manifest(ref())


def test_oversized_manifest_is_refused() -> None:
    registry = FakeRegistry()
    registry.faults.append(
        lambda r: (
            httpx.Response(200, headers={"Content-Type": mt.OCI_INDEX}, content=b" " * (5 << 20))
            if "/manifests/" in r.url.path
            else None
        )
    )
    client, _ = make_client(registry)
    with pytest.raises(RegistryError, match="larger than"):
        client.get_manifest(ref())


def test_head_and_put_manifest() -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    client, _ = make_client(registry)
    head = client.head_manifest(ref())
    assert head is not None
    assert (head.digest, head.size, head.media_type) == (
        manifest.digest,
        len(manifest.raw),
        mt.OCI_MANIFEST,
    )
    assert client.head_manifest(ref("reg.test/team/app:nope")) is None
    index = Index.create([manifest.descriptor()])
    digest = client.put_manifest(ref("reg.test/team/app:multi"), index.raw, index.media_type)
    assert digest == index.digest
    put = [r for r in registry.log if r.method == "PUT"][-1]
    assert put.headers["Content-Type"] == mt.OCI_INDEX
    assert registry.tagged("team/app", "multi") == index.raw


def test_not_found_error_carries_status_code_and_reference() -> None:
    registry = FakeRegistry()
    client, _ = make_client(registry)
    with pytest.raises(NotFoundError) as info:
        client.get_manifest(ref("reg.test/team/app:missing"))
    err = info.value
    assert err.status == 404
    assert err.code == "MANIFEST_UNKNOWN"
    assert err.reference == "reg.test/team/app:missing"
    assert "manifest unknown" in str(err) and "HTTP 404" in str(err)


# retries --------------------------------------------------------------------------------------


def test_503_then_success_is_retried_with_backoff() -> None:
    registry = FakeRegistry()
    seed_image(registry)
    registry.faults.append(
        nth_request(
            lambda r: "/manifests/" in r.url.path, [httpx.Response(503), httpx.Response(502)]
        )
    )
    client, sleeps = make_client(registry)
    assert client.get_manifest(ref()).document
    assert len(sleeps) == 2
    assert 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02  # exponential, jittered


def test_each_retry_is_told_before_the_wait() -> None:
    registry = FakeRegistry()
    seed_image(registry)
    registry.faults.append(nth_request(lambda r: "/manifests/" in r.url.path,
                                       [httpx.Response(503)]))  # fmt: skip
    client, _ = make_client(registry)
    told: list[str] = []
    client.on_retry = told.append
    assert client.get_manifest(ref()).document
    assert len(told) == 1 and told[0].startswith("retrying (1/3) in ")
    assert "HTTP 503" in told[0]


def test_429_honours_retry_after() -> None:
    registry = FakeRegistry()
    seed_image(registry)
    registry.faults.append(
        nth_request(
            lambda r: "/manifests/" in r.url.path,
            [httpx.Response(429, headers={"Retry-After": "7"})],
        )
    )
    client, sleeps = make_client(registry)
    client.get_manifest(ref())
    assert sleeps == [7.0]


def test_retries_are_bounded() -> None:
    registry = FakeRegistry()
    seed_image(registry)
    registry.faults.append(
        lambda r: (
            httpx.Response(
                503, json={"errors": [{"code": "UNAVAILABLE", "message": "down for maintenance"}]}
            )
            if "/manifests/" in r.url.path
            else None
        )
    )
    client, sleeps = make_client(registry)
    with pytest.raises(RegistryUnavailableError) as info:
        client.get_manifest(ref())
    assert len(sleeps) == 3  # four tries in all
    assert info.value.status == 503
    assert info.value.code == "UNAVAILABLE"
    assert "down for maintenance" in str(info.value)


def test_connection_reset_is_retried() -> None:
    registry = FakeRegistry()
    seed_image(registry)
    calls = {"n": 0}

    def reset(request: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in request.url.path and calls["n"] == 0:
            calls["n"] += 1
            raise httpx.ConnectError("connection refused", request=request)
        return None

    registry.faults.append(reset)
    client, sleeps = make_client(registry)
    assert client.get_manifest(ref()).document
    assert len(sleeps) == 1


def test_unreachable_registry() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to host", request=request)

    client = RegistryClient(
        transport=httpx.MockTransport(handler),
        timing=Timing(sleep=lambda s: None),
        retry=RetryPolicy(attempts=2),
    )
    with pytest.raises(RegistryUnavailableError, match=r"cannot reach registry reg\.test"):
        client.get_manifest(ref())


# blobs ----------------------------------------------------------------------------------------


def test_blob_download_is_verified(tmp_path: Path) -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    client, _ = make_client(registry)
    layer = manifest.layers[0]
    store = ContentStore(tmp_path)
    store.ingest(client.get_blob(ref(), layer), layer.digest, layer.size)
    assert store.read_bytes(layer.digest) == registry.blobs[str(layer.digest)]
    assert registry.log[-1].headers["Accept-Encoding"] == "identity"


def test_cut_download_resumes_with_range(tmp_path: Path) -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    layer = manifest.layers[0]
    data = registry.blobs[str(layer.digest)]
    registry.faults.append(
        nth_request(
            lambda r: "/blobs/sha256" in r.url.path and r.method == "GET",
            [httpx.Response(200, stream=CutStream(data, 100_000))],
        )
    )
    client, sleeps = make_client(registry)
    store = ContentStore(tmp_path)
    store.ingest(client.get_blob(ref(), layer), layer.digest, layer.size)
    assert store.read_bytes(layer.digest) == data
    gets = [r for r in registry.log if r.method == "GET" and "/blobs/" in r.url.path]
    assert "Range" not in gets[0].headers
    assert gets[1].headers["Range"] == "bytes=100000-"
    assert len(sleeps) == 1


def test_resume_when_server_ignores_range(tmp_path: Path) -> None:
    registry = FakeRegistry(honour_range=False)
    manifest = seed_image(registry)
    layer = manifest.layers[0]
    data = registry.blobs[str(layer.digest)]
    registry.faults.append(
        nth_request(
            lambda r: "/blobs/sha256" in r.url.path and r.method == "GET",
            [httpx.Response(200, stream=CutStream(data, 123_457))],
        )
    )
    client, _ = make_client(registry)
    store = ContentStore(tmp_path)
    store.ingest(client.get_blob(ref(), layer), layer.digest, layer.size)
    assert store.read_bytes(layer.digest) == data


def test_wrong_blob_bytes_never_enter_the_store(tmp_path: Path) -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    layer = manifest.layers[0]
    registry.blobs[str(layer.digest)] = os.urandom(layer.size)  # same size, other bytes
    client, _ = make_client(registry)
    store = ContentStore(tmp_path)
    with pytest.raises(VerificationError) as info:
        store.ingest(client.get_blob(ref(), layer), layer.digest, layer.size)
    assert info.value.expected_digest == str(layer.digest)
    assert not store.has(layer.digest)
    assert list(store.blobs()) == []
    assert not any(store.ingest_dir.iterdir())


def test_endless_blob_is_cut_off(tmp_path: Path) -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    layer = manifest.layers[0]
    registry.blobs[str(layer.digest)] = os.urandom(layer.size * 3)
    client, _ = make_client(registry)
    with pytest.raises(VerificationError, match=f"expected {layer.size} bytes"):
        ContentStore(tmp_path).ingest(client.get_blob(ref(), layer), layer.digest, layer.size)


def test_redirect_to_storage_goes_without_credentials(tmp_path: Path) -> None:
    registry = FakeRegistry(auth="bearer", storage_redirect=True)
    manifest = seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    layer = manifest.layers[0]
    ContentStore(tmp_path).ingest(client.get_blob(ref(), layer), layer.digest, layer.size)
    to_registry = [r for r in registry.log if r.url.host == "reg.test" and "/blobs/" in r.url.path]
    to_storage = [r for r in registry.log if r.url.host == "storage.test"]
    assert to_registry and to_registry[-1].headers["Authorization"].startswith("Bearer ")
    assert to_storage and "Authorization" not in to_storage[0].headers


def test_redirect_downgrade_to_http_is_refused() -> None:
    registry = FakeRegistry()
    manifest = seed_image(registry)
    registry.faults.append(
        lambda r: (
            httpx.Response(307, headers={"Location": "http://storage.test/blob"})
            if "/blobs/sha256" in r.url.path and r.method == "GET"
            else None
        )
    )
    client, _ = make_client(registry)
    with pytest.raises(InsecureTransportError, match="plain http"):
        list(client.get_blob(ref(), manifest.layers[0]))


def test_monolithic_upload() -> None:
    registry = FakeRegistry()
    client, _ = make_client(registry)
    data = os.urandom(50_000)
    d = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(data), len(data))
    assert client.upload_blob(ref(), d, lambda: [data[:20_000], data[20_000:]]) == "uploaded"
    assert registry.blobs[str(d.digest)] == data
    put = [r for r in registry.log if r.method == "PUT"][-1]
    assert put.headers["Content-Length"] == str(len(data))
    assert put.url.params["digest"] == str(d.digest)
    assert put.url.params["_state"] == "s"  # the Location's own query is kept
    assert client.upload_blob(ref(), d, lambda: [data]) == "exists"


def test_chunked_upload() -> None:
    registry = FakeRegistry()
    client, _ = make_client(registry)
    data = os.urandom(25_000)
    d = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(data), len(data))
    assert client.upload_blob(ref(), d, lambda: [data], chunk_size=10_000) == "uploaded"
    patches = [r for r in registry.log if r.method == "PATCH"]
    assert [p.headers["Content-Range"] for p in patches] == ["0-9999", "10000-19999", "20000-24999"]
    assert registry.blobs[str(d.digest)] == data


def test_cross_repository_mount() -> None:
    registry = FakeRegistry(auth="bearer")
    data = b"shared layer"
    registry.add_blob("team/base", data)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    d = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(data), len(data))
    result = client.upload_blob(
        ref(), d, lambda: pytest.fail("must not read"), mount_from="team/base"
    )
    assert result == "mounted"
    assert "team/app" in registry.repos_with_blob[str(d.digest)]
    # The token asked for both repositories: push on the target, pull on the source.
    user, scopes = registry.tokens_issued[-1]
    assert user == "alice"
    assert set(scopes) == {"repository:team/app:pull,push", "repository:team/base:pull"}


def test_upload_source_with_wrong_bytes_is_not_completed() -> None:
    registry = FakeRegistry()
    client, _ = make_client(registry)
    d = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(b"right"), 5)
    with pytest.raises(VerificationError):
        client.upload_blob(ref(), d, lambda: [b"wrong"])
    assert str(d.digest) not in registry.blobs
    assert not [r for r in registry.log if r.method == "PUT" and r.content]


def test_failed_upload_restarts_a_fresh_session() -> None:
    registry = FakeRegistry()
    registry.faults.append(
        nth_request(
            lambda r: r.method == "PUT" and "/uploads/" in r.url.path, [httpx.Response(503)]
        )
    )
    client, sleeps = make_client(registry)
    data = os.urandom(1000)
    d = Descriptor(mt.OCI_LAYER_GZIP, Digest.of(data), len(data))
    opened: list[int] = []

    def body() -> list[bytes]:
        opened.append(1)
        return [data]

    assert client.upload_blob(ref(), d, body) == "uploaded"
    assert len([r for r in registry.log if r.method == "POST"]) == 2
    assert len(opened) == 2 and len(sleeps) == 1


# tags -----------------------------------------------------------------------------------------


def test_tag_list_follows_link_pagination() -> None:
    registry = FakeRegistry()
    for i in range(7):
        seed_image(registry, tag=f"t{i}")
    client, _ = make_client(registry)
    assert client.list_tags(ref(), page_size=3) == [f"t{i}" for i in range(7)]
    assert len([r for r in registry.log if "/tags/list" in r.url.path]) == 3


# authentication -------------------------------------------------------------------------------


def test_anonymous_bearer_flow_and_token_reuse() -> None:
    registry = FakeRegistry(auth="bearer")
    seed_image(registry)
    client, _ = make_client(registry)
    client.get_manifest(ref())
    client.get_manifest(ref())
    assert registry.tokens_issued == [(None, ("repository:team/app:pull",))]
    token_request = next(r for r in registry.log if r.url.host == "auth.test")
    assert token_request.url.params["service"] == "reg.test"
    assert "Authorization" not in token_request.headers


def test_credentialed_bearer_flow_and_scope_escalation() -> None:
    registry = FakeRegistry(auth="bearer")
    manifest = seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    client.get_manifest(ref())
    client.put_manifest(ref("reg.test/team/app:v2"), manifest.raw, manifest.media_type)
    assert registry.tokens_issued == [
        ("alice", ("repository:team/app:pull",)),
        ("alice", ("repository:team/app:pull,push",)),
    ]


def test_a_pull_token_for_a_node_is_fetched_here_and_narrowed_to_pull() -> None:
    """What a builder's node is given for a registry it has no credentials for: a token
    fetched here, from the registry's own token service, for pulls only; nothing when this
    machine has no credentials either. A node's client uses the token it is given."""
    registry = FakeRegistry(auth="bearer")
    seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    got = client.pull_token("reg.test", ["repository:team/app:pull,push", "registry:catalog:*"])
    assert got is not None and got[1] > 0
    assert registry.tokens_issued == [("alice", ("repository:team/app:pull",))]
    anonymous, _ = make_client(registry)
    assert anonymous.pull_token("reg.test", ["repository:team/app:pull"]) is None

    node, _ = make_client(registry)
    asked: list[tuple[str, list[str]]] = []
    node.token_provider = lambda host, scopes: asked.append((host, scopes)) or got
    node.get_manifest(ref())
    assert asked == [("reg.test", ["repository:team/app:pull"])]
    assert len(registry.tokens_issued) == 1  # the node asked the token service for nothing


def test_insufficient_scope_asks_for_the_scope_the_registry_names() -> None:
    registry = FakeRegistry(auth="bearer")
    seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    client.get_manifest(ref())
    # The registry now wants something else for the same request (e.g. a token revoked).
    registry.faults.append(
        nth_request(
            lambda r: "/manifests/" in r.url.path,
            [
                httpx.Response(
                    401,
                    headers={
                        "WWW-Authenticate": 'Bearer realm="https://auth.test/token",'
                        'service="reg.test",scope="repository:team/app:pull,push"'
                    },
                )
            ],
        )
    )
    client.get_manifest(ref())
    assert registry.tokens_issued[-1] == (
        "alice",
        ("repository:team/app:pull", "repository:team/app:pull,push"),
    )


def test_wrong_password_is_an_authentication_error() -> None:
    registry = FakeRegistry(auth="bearer")
    seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "wrong")})
    with pytest.raises(AuthenticationError) as info:
        client.get_manifest(ref())
    assert info.value.status == 401
    assert "wrong" not in str(info.value)


def test_rejected_basic_credentials_are_told_from_missing_ones() -> None:
    registry = FakeRegistry(auth="basic")
    seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "wrong", source="a.json")})
    with pytest.raises(AuthenticationError, match=r"rejected the credentials for user 'alice' "
                       r"from a\.json") as info:  # fmt: skip
        client.get_manifest(ref())
    assert "wrong" not in str(info.value) and "docker login" not in str(info.value)
    anonymous, _ = make_client(registry)
    with pytest.raises(AuthenticationError, match=r"no credentials for reg\.test were found"):
        anonymous.get_manifest(ref())


def test_anonymous_push_is_refused_with_advice() -> None:
    registry = FakeRegistry(auth="bearer")
    manifest = seed_image(registry)
    client, _ = make_client(registry)
    with pytest.raises(AuthenticationError, match="docker login") as info:
        client.put_manifest(ref("reg.test/team/app:v2"), manifest.raw, manifest.media_type)
    assert info.value.status == 401
    assert info.value.code == "UNAUTHORIZED"


def test_identity_token_uses_oauth2_refresh_grant() -> None:
    registry = FakeRegistry(auth="bearer")
    seed_image(registry)
    posted: list[httpx.Request] = []

    def oauth(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "auth.test" and request.method == "POST":
            posted.append(request)
            return httpx.Response(
                200,
                json={"access_token": base64.urlsafe_b64encode(
                    json.dumps(["alice", ["repository:team/app:pull"]]).encode()).decode()},
            )  # fmt: skip
        return None

    registry.faults.append(oauth)
    client, _ = make_client(registry, {"reg.test": Credential(identity_token="refresh-me")})
    client.get_manifest(ref())
    form = dict(httpx.QueryParams(posted[0].content.decode()))
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == "refresh-me"
    assert form["scope"] == "repository:team/app:pull"


def test_basic_auth_is_sent_only_to_the_registry() -> None:
    registry = FakeRegistry(auth="basic", storage_redirect=True)
    manifest = seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    list(client.get_blob(ref(), manifest.layers[0]))
    for request in registry.log:
        if request.url.host == "reg.test" and request.url.path != "/v2/":
            assert request.headers["Authorization"].startswith("Basic ")
        if request.url.host == "storage.test":
            assert "Authorization" not in request.headers


def test_token_realm_over_plain_http_is_refused() -> None:
    registry = FakeRegistry(auth="bearer", realm="http://auth.test/token")
    seed_image(registry)
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    with pytest.raises(InsecureTransportError, match="not https"):
        client.get_manifest(ref())
    assert not [r for r in registry.log if r.url.host == "auth.test"]


def test_plain_http_only_for_loopback_or_insecure() -> None:
    schemes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        if request.url.scheme == "https":
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER]", request=request)
        return httpx.Response(200, json={})

    def probe(host: str, insecure: tuple[str, ...] = ()) -> list[str]:
        schemes.clear()
        client = RegistryClient(
            transport=httpx.MockTransport(handler),
            insecure=insecure,
            timing=Timing(sleep=lambda s: None),
            retry=RetryPolicy(attempts=1),
        )
        with contextlib.suppress(RegistryError):
            client.blob_size(Reference.parse(f"{host}/a"), Digest.of(b""))
        return list(schemes)

    # Loopback: nothing crosses a network, plain http is tried first (no TLS set-up needed).
    assert probe("127.0.0.1:5000")[:1] == ["http"]
    assert probe("localhost:5000")[:1] == ["http"]
    assert set(probe("reg.example.com")) == {"https"}
    # Configured insecure: https first, as docker does, then http.
    assert probe("reg.example.com", ("reg.example.com",))[:2] == ["https", "http"]


def test_untrusted_certificate_does_not_fall_back_to_http() -> None:
    schemes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        if request.url.scheme == "http":
            # What a TLS-only server answers to plain http.
            return httpx.Response(400, text="Client sent an HTTP request to an HTTPS server.")
        raise httpx.ConnectError(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", request=request
        )

    client = RegistryClient(
        transport=httpx.MockTransport(handler), timing=Timing(sleep=lambda s: None)
    )
    with pytest.raises(RegistryError, match="not trusted"):
        client.get_manifest(Reference.parse("127.0.0.1:5000/a:b"))
    assert schemes == ["http", "https"]  # and no retry, no other fallback
    schemes.clear()
    insecure = RegistryClient(
        transport=httpx.MockTransport(handler),
        insecure=["reg.example.com"],
        timing=Timing(sleep=lambda s: None),
    )
    with pytest.raises(RegistryError, match="not trusted"):
        insecure.get_manifest(Reference.parse("reg.example.com/a:b"))
    assert schemes == ["https"]


def test_one_ping_for_many_threads() -> None:
    import threading

    registry = FakeRegistry()
    manifest = seed_image(registry)
    client, _ = make_client(registry)
    threads = [
        threading.Thread(target=client.blob_size, args=(ref(), manifest.layers[0].digest))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([r for r in registry.log if r.url.path == "/v2/"]) == 1


def test_credentials_never_in_repr_or_errors() -> None:
    cred = Credential("alice", "hunter2", identity_token="tok-secret")
    assert "hunter2" not in repr(cred) and "tok-secret" not in repr(cred)
    registry = FakeRegistry(auth="basic")
    client, _ = make_client(registry, {"reg.test": Credential("alice", "hunter2x")})
    with pytest.raises(AuthenticationError) as info:
        client.get_manifest(ref())
    assert "hunter2" not in str(info.value)


def test_a_redirect_targets_own_challenge_never_gets_the_registrys_credentials(
    tmp_path: Path,
) -> None:
    """Issue 14: a blob redirected to another origin that answers 401 with its own bearer
    realm: the registry's basic credentials must go nowhere but the registry."""
    registry = FakeRegistry(auth="basic", storage_redirect=True)
    manifest = seed_image(registry)
    registry.faults.append(
        lambda r: (
            httpx.Response(401, headers={"WWW-Authenticate":
                                         'Bearer realm="https://evil.test/token",service="x"'})
            if r.url.host == "storage.test"
            else httpx.Response(200, json={"token": "t"}) if r.url.host == "evil.test" else None
        )
    )  # fmt: skip
    client, _ = make_client(registry, {"reg.test": Credential("alice", "s3cret")})
    layer = manifest.layers[0]
    with pytest.raises(AuthenticationError):
        ContentStore(tmp_path).ingest(client.get_blob(ref(), layer), layer.digest, layer.size)
    assert not [r for r in registry.log if r.url.host == "evil.test"]
    secret = base64.b64encode(b"alice:s3cret").decode()
    for request in registry.log:
        if request.url.host != "reg.test":
            assert secret not in request.headers.get("Authorization", "")


def test_one_retry_budget_per_copy_of_a_blob(tmp_path: Path) -> None:
    """Issue 14: a copy whose source blob keeps failing tries it `attempts` times in all (the
    upload's retries share the download's budget instead of multiplying it)."""
    from polyarch.transfer.endpoints import RegistryRepository

    source, target = FakeRegistry(host="src.test"), FakeRegistry(host="dst.test")
    manifest = seed_image(source)
    layer = manifest.layers[0]
    source.faults.append(
        lambda r: httpx.Response(503) if f"/blobs/{layer.digest}" in r.url.path else None
    )
    transport = httpx.MockTransport(
        lambda r: (source if r.url.host == "src.test" else target).handle(r)
    )
    sleeps: list[float] = []
    client = RegistryClient(transport=transport, timing=Timing(sleep=sleeps.append),
                            retry=RetryPolicy(attempts=5, base_delay=0.01))  # fmt: skip
    src = RegistryRepository(client, Reference.parse("src.test/team/app:v1"))
    dst = RegistryRepository(client, Reference.parse("dst.test/team/app:v1"))
    with pytest.raises(RegistryUnavailableError):
        dst.put_blob(layer, src)
    tries = [r for r in source.log if f"/blobs/{layer.digest}" in r.url.path]
    assert len(tries) == 5 and len(sleeps) == 4


def test_retry_after_beyond_the_window_gives_up_at_once() -> None:
    registry = FakeRegistry()
    seed_image(registry)
    registry.faults.append(
        lambda r: httpx.Response(503, headers={"Retry-After": "50"})
        if "/manifests/" in r.url.path else None
    )  # fmt: skip
    sleeps: list[float] = []
    client = RegistryClient(transport=registry.transport(), timing=Timing(sleep=sleeps.append),
                            retry=RetryPolicy(attempts=5, max_delay=60, window=60))  # fmt: skip
    with pytest.raises(RegistryUnavailableError):
        client.get_manifest(ref())
    assert sleeps == [50.0]  # a second wait of 50 s would pass the 60 s window


def test_huge_token_responses_are_refused() -> None:
    registry = FakeRegistry(auth="bearer")
    seed_image(registry)
    registry.faults.append(
        lambda r: httpx.Response(200, content=b'{"token": "' + b"x" * (2 << 20) + b'"}')
        if r.url.host == "auth.test" else None
    )  # fmt: skip
    client, _ = make_client(registry)
    with pytest.raises(RegistryError, match="larger than"):
        client.get_manifest(ref())
