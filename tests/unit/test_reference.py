import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyarch.digest import Digest
from polyarch.errors import InvalidReferenceError
from polyarch.reference import Reference, is_loopback_host

D = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.20.1-alpine", "docker.io", "library/nginx", "1.20.1-alpine", None),
        ("nginx/nginx-prometheus-exporter:0.9.0", "docker.io", "nginx/nginx-prometheus-exporter",
         "0.9.0", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx", "docker.io", "library/nginx", "latest", None),
        ("localhost:5000/a/b:t", "localhost:5000", "a/b", "t", None),
        ("localhost/a", "localhost", "a", "latest", None),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None),
        ("daocloud.io/daocloud/dx-arch-ui:1.1.0-abcdef0", "daocloud.io", "daocloud/dx-arch-ui",
         "1.1.0-abcdef0", None),
        (f"x@{D}", "docker.io", "library/x", None, D),
        (f"x:t@{D}", "docker.io", "library/x", "t", D),
        (f"h.io:443/a/b/c:v1@{D}", "h.io:443", "a/b/c", "v1", D),
        ("[::1]:5000/a", "[::1]:5000", "a", "latest", None),
        ("a__b/c.d-e", "docker.io", "a__b/c.d-e", "latest", None),
    ],
)  # fmt: skip
def test_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert ref.registry == registry
    assert ref.repository == repository
    assert ref.tag == tag
    assert ref.digest == (Digest.parse(digest) if digest else None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        (" nginx", "padded"),
        ("Nginx", "lowercase"),
        ("nginx:", "tag"),
        ("nginx:-x", "tag"),
        ("nginx:" + "t" * 129, "tag"),
        ("nginx@sha256:abc", "digest"),
        ("nginx@", "digest"),
        ("a//b", "component"),
        ("a/-b", "component"),
        ("a/b_", "component"),
        ("a/b..c", "component"),
        ("host:5000/", "repository"),
        ("exa_mple.com/a", "registry"),
        ("a/" + "b" * 260, "255"),
    ],
)
def test_errors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.parse(text)
    assert fragment in str(info.value)


def test_target_prefers_digest() -> None:
    ref = Reference.parse(f"x:t@{D}")
    assert ref.target == D
    assert Reference.parse("x:t").target == "t"


def test_str_and_familiar() -> None:
    assert str(Reference.parse("nginx")) == "docker.io/library/nginx:latest"
    assert Reference.parse("nginx").familiar == "nginx:latest"
    assert Reference.parse("localhost:5000/a:t").familiar == "localhost:5000/a:t"
    assert Reference.parse("nginx").api_host == "registry-1.docker.io"
    assert Reference.parse("q.io/a").api_host == "q.io"


def test_loopback_hosts() -> None:
    for host in ("localhost", "localhost:5000", "127.0.0.1", "127.1.2.3:80", "[::1]:5000"):
        assert is_loopback_host(host), host
    for host in ("example.com", "10.0.0.1:5000", "127.0.0.1.nip.io", "[::2]"):
        assert not is_loopback_host(host), host


_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(
    st.sampled_from(["docker.io", "localhost:5000", "ghcr.io", "reg.example.com:8443"]),
    st.lists(_component, min_size=1, max_size=3),
    st.one_of(st.none(), _tag),
)
def test_round_trip(registry: str, parts: list[str], tag: str | None) -> None:
    if registry == "docker.io" and len(parts) == 1:
        parts = ["library", *parts]
    ref = Reference(registry, "/".join(parts), tag)
    again = Reference.parse(str(ref), default_tag=None)
    assert again == ref
