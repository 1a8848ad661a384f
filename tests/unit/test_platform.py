import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyarch.errors import InvalidPlatformError
from polyarch.platform import Platform, best_match, from_uname


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("amd64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("arm64/v8", "linux/arm64"),
        ("aarch64", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("arm/v6", "linux/arm/v6"),
        ("armhf", "linux/arm/v7"),
        ("armel", "linux/arm/v6"),
        ("386", "linux/386"),
        ("i386", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
        ("riscv64", "linux/riscv64"),
        ("Linux/AMD64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_parse_and_normalise(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize(
    "text", ["", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/sparc", "plan8/amd64/v1"]
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(InvalidPlatformError):
        Platform.parse(text)


def test_parse_list_splits_commas_and_dedups() -> None:
    got = Platform.parse_list(["linux/amd64,linux/arm64", "arm64/v8", "linux/arm/v7"])
    assert [str(p) for p in got] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]


@pytest.mark.parametrize(
    ("text", "uname", "qemu", "debian"),
    [
        ("linux/amd64", "x86_64", "x86_64", "amd64"),
        ("linux/arm64", "aarch64", "aarch64", "arm64"),
        ("linux/arm/v7", "armv7l", "arm", "armhf"),
        ("linux/arm/v6", "armv6l", "arm", "armel"),
        ("linux/386", "i686", "i386", "i386"),
        ("linux/ppc64le", "ppc64le", "ppc64le", "ppc64el"),
        ("linux/s390x", "s390x", "s390x", "s390x"),
        ("linux/riscv64", "riscv64", "riscv64", "riscv64"),
    ],
)
def test_names_in_other_worlds(text: str, uname: str, qemu: str, debian: str) -> None:
    p = Platform.parse(text)
    assert (p.uname_machine, p.qemu_name, p.debian_arch) == (uname, qemu, debian)


def test_from_uname() -> None:
    assert str(from_uname("Linux", "x86_64")) == "linux/amd64"
    assert str(from_uname("Linux", "aarch64")) == "linux/arm64"
    assert str(from_uname("Linux", "armv7l")) == "linux/arm/v7"


def test_matching_like_containerd() -> None:
    arm64 = Platform.parse("linux/arm64")
    assert arm64.matches(Platform.of("linux", "arm64", "v8"))  # arm64 == arm64/v8
    assert arm64.matches(Platform.of("linux", "arm64"))
    assert not arm64.matches(Platform.parse("linux/arm/v7"))  # never 32-bit silently
    arm7 = Platform.parse("linux/arm/v7")
    assert arm7.matches(Platform.of("linux", "arm"))  # bare arm is v7
    assert arm7.matches(Platform.parse("linux/arm/v6"))
    assert not arm7.matches(Platform.parse("linux/arm/v8"))
    assert not Platform.parse("linux/arm/v6").matches(arm7)
    amd64 = Platform.parse("linux/amd64")
    assert amd64.matches(Platform.of("linux", "amd64", "v1"))
    assert not amd64.matches(Platform.parse("linux/amd64/v3"))
    assert Platform.parse("linux/amd64/v3").matches(amd64)
    assert not amd64.matches(Platform.parse("windows/amd64"))


def test_best_match_prefers_exact_variant() -> None:
    candidates = [
        Platform.parse("linux/arm/v6"),
        None,
        Platform.parse("linux/arm/v7"),
        Platform.parse("linux/arm64"),
    ]
    assert best_match(Platform.parse("linux/arm/v7"), candidates) == 2
    assert best_match(Platform.parse("linux/arm/v6"), candidates) == 0
    assert best_match(Platform.parse("linux/arm64"), candidates) == 3
    assert best_match(Platform.parse("linux/s390x"), candidates) is None


def test_oci_fields() -> None:
    assert Platform.parse("linux/arm/v7").oci_fields() == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
    }


_specs = st.sampled_from(
    ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/386", "linux/s390x",
     "linux/ppc64le", "linux/riscv64", "linux/amd64/v2", "windows/amd64"]
)  # fmt: skip


@given(_specs)
def test_str_round_trips(spec: str) -> None:
    p = Platform.parse(spec)
    assert Platform.parse(str(p)) == p
    assert p.matches(p)
