"""polyarch's parser against BuildKit's own (the `dockerfile` package wraps its Go parser).

The oracle is a test-only dependency with x86_64 wheels only: skipped where it cannot install.
Every corpus file must agree field for field (`cmd` compared in upper case: polyarch prints it
so, the wrapper keeps the case as written).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from polyarch.errors import DockerfileError
from polyarch.frontend.dockerfile import load, parse

oracle = pytest.importorskip("dockerfile", reason="BuildKit's parser wrapper is not installed")

CORPUS = sorted((Path(__file__).parent.parent / "data" / "dockerfiles").glob("*.Dockerfile"))
# Parsed alike by both, then refused by BuildKit's instruction layer, and by polyarch's.
REFUSED = {
    "24-flag-quotes": "unknown flag: --not-a-flag",
    "49-comments-everywhere": "FROM requires either one or three arguments",
    "60-empty-args": "EXPOSE requires at least one argument",
}


# Where the oracle (the archived `dockerfile` 3.4 wheel) predates BuildKit: what BuildKit now
# does differently, field by field. Since BuildKit v0.15 (moby/buildkit 80518e257, "fix invalid
# usage of json.NewDecoder") a JSON array followed by more text is the shell form.
NEWER = {
    "16-json-trailing-text": {
        1: {"json": False, "value": ['["echo", "a"] trailing words']},
    },
}


def theirs(path: Path) -> list[dict[str, object]]:
    commands = _oracle(path)
    for index, fields in NEWER.get(path.stem, {}).items():
        commands[index].update(fields)
    return commands


def _oracle(path: Path) -> list[dict[str, object]]:
    return [
        {
            "cmd": c.cmd.upper(),
            "sub_cmd": c.sub_cmd.upper() if c.sub_cmd else None,
            "json": c.json,
            "original": c.original,
            "start_line": c.start_line,
            "end_line": c.end_line,
            "flags": list(c.flags),
            "value": list(c.value),
            "heredocs": [
                {"name": h.name, "file_descriptor": h.file_descriptor, "content": h.content}
                for h in c.heredocs
            ],
        }
        for c in oracle.parse_file(str(path))
    ]


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 50


def agree(ours: list[dict[str, object]], path: Path) -> None:
    """Field for field, but for an ONBUILD trigger's flags: the oracle drops them, polyarch
    shows them (and they are what the trigger's own text says)."""
    expected = theirs(path)
    for mine, other in zip(ours, expected, strict=False):
        if mine["cmd"] == "ONBUILD" and mine["flags"] != other["flags"]:
            assert other["flags"] == []
            trigger = str(mine["original"]).split(None, 1)[1]
            assert all(flag in trigger for flag in mine["flags"])  # type: ignore[attr-defined]
            other["flags"] = mine["flags"]
    assert ours == expected


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_syntax_agrees_with_buildkit(path: Path) -> None:
    text = path.read_bytes().decode("utf-8")
    agree([n.to_json() for n in parse(text, path.name).nodes], path)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_polyarch_parse_json_agrees(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polyarch", "parse", "-f", str(path), "--format", "json"],
        capture_output=True,
        text=True,
    )
    if path.stem in REFUSED:
        assert result.returncode == 1
        assert f"{path}:" in result.stderr and REFUSED[path.stem] in result.stderr
        with pytest.raises(DockerfileError):
            load(path.read_bytes().decode("utf-8"))
        return
    assert result.returncode == 0, result.stderr
    agree(json.loads(result.stdout), path)


@pytest.mark.parametrize(
    "text",
    [
        "FROM a\nRUN x \\\n",
        "# escape=`\nFROM a\nRUN b `\n c\n",
        "FROM a\nRUN <<EOF <<-EOT\na\nEOF\n\tb\n\tEOT\n",
        "FROM a\nRUN a \\\\\\\n b\n",
        "\n\n# escape=`\nFROM a\n",
        "FROM a\nCOPY --chown=a --chmod 755 a b\n",
    ],
)
def test_edge_cases_agree(text: str, tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_bytes(text.encode())
    assert [n.to_json() for n in parse(text).nodes] == theirs(path)
