import pytest

from polyarch.config import ConfigError, effective, parse_config

GOOD = """
[image]
registry = "127.0.0.1:5000"
name = "dx-arch-ui"
base_version = "1.1.0"
[build]
platforms = ["linux/amd64", "linux/arm64"]
ca_certs = "host"
[build.args]
NPM_REGISTRY = "https://registry.npmjs.org/"
[registries]
insecure = ["registry.lan:5000"]
"""


def test_a_seed_like_file() -> None:
    config = parse_config(GOOD)
    assert config.image == "127.0.0.1:5000/dx-arch-ui"
    assert [str(p) for p in config.platforms] == ["linux/amd64", "linux/arm64"]
    assert config.get("build.args") == {"NPM_REGISTRY": "https://registry.npmjs.org/"}
    assert config.get("build.dockerfile") == "Dockerfile"  # default


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "[image]\nnmae = 'x'\n",
            "polyarch.toml: unknown key image.nmae (known: base_version, name, registry)",
        ),
        ("[imgae]\n", "unknown section [imgae]"),
        ("[build]\nplatforms = 'linux/amd64'\n", "build.platforms must be an array, not a string"),
        ("[build]\nplatforms = ['linux/sparc']\n", "build.platforms: unknown architecture"),
        ("[build.args]\nX = 1\n", "build.args.X must be a string"),
        ("[image\n", "not valid TOML"),
        ("[registries]\ninsecure = [1]\n", "registries.insecure must be an array of strings"),
    ],
)
def test_errors_name_file_and_key(text: str, fragment: str) -> None:
    with pytest.raises(
        ConfigError,
        match=fragment.replace("[", r"\[")
        .replace("]", r"\]")
        .replace("(", r"\(")
        .replace(")", r"\)"),
    ):
        parse_config(text)


def test_flags_override_and_sources_are_named() -> None:
    config = parse_config(GOOD, "app/polyarch.toml")
    rows = {key: (value, source) for key, value, source in effective(
        config, {"build.platforms": ["linux/s390x"], "image.base_version": None})}  # fmt: skip
    assert rows["build.platforms"] == (["linux/s390x"], "command line")
    assert rows["image.base_version"] == ("1.1.0", "app/polyarch.toml")
    assert rows["build.context"] == (".", "default")
