import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyarch.errors import DockerfileError, PolyarchError
from polyarch.frontend.dockerfile import parse


def nodes(text: str) -> list[dict[str, object]]:
    return [n.to_json() for n in parse(text).nodes]


def test_fields_for_a_simple_file() -> None:
    [frm, run] = nodes("FROM alpine AS b\nrun --mount=type=cache,target=/c echo hi\n")
    assert frm["cmd"] == "FROM" and frm["value"] == ["alpine", "AS", "b"]
    assert run == {
        "cmd": "RUN",
        "sub_cmd": None,
        "json": False,
        "original": "run --mount=type=cache,target=/c echo hi",
        "start_line": 2,
        "end_line": 2,
        "flags": ["--mount=type=cache,target=/c"],
        "value": ["echo hi"],
        "heredocs": [],
    }


def test_directives() -> None:
    result = parse("# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=all\nFROM a\n")
    assert result.directives == {
        "syntax": "docker/dockerfile:1",
        "escape": "`",
        "check": "skip=all",
    }
    assert result.escape == "`"
    # A blank line or any other comment ends the directives.
    assert parse("\n# escape=`\nFROM a\n").escape == "\\"
    assert parse("# hello\n# escape=`\nFROM a\n").escape == "\\"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("# escape=`\n# escape=\\\nFROM a\n", 2, "only one escape parser directive"),
        ("# escape=x\nFROM a\n", 1, "invalid escape token"),
        ("FROM a\nRUN <<EOF\nnever ends\n", 2, "unterminated heredoc 'EOF'"),
        ('FROM a\nCMD ["a", 1]\n', 2, "arrays must be comprised of strings only"),
        ("FROM a\nENV A=1 B\n", 2, "can't find = in"),
        ("FROM a\nLABEL lonely\n", 2, "LABEL must have two arguments"),
        ("\n\n# just comments\n", 3, "file with no instructions"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text, "ctx/Dockerfile")
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"ctx/Dockerfile:{line}: ")
    assert isinstance(info.value, PolyarchError)


def test_heredocs() -> None:
    [_, run, copy] = parse(
        "FROM a\nRUN <<-'EOT' 3<<END sh\n\tx $Y\n\tEOT\nthree\nEND\n"
        'COPY <<"A" <<B /dst/\n$a\nA\nb\nB\n'
    ).nodes
    assert [(h.name, h.file_descriptor, h.content, h.expand, h.chomp) for h in run.heredocs] == [
        ("EOT", 0, "\tx $Y\n", False, True),
        ("END", 3, "three\n", True, False),
    ]
    assert run.end_line == 6
    assert [(h.name, h.expand) for h in copy.heredocs] == [("A", False), ("B", True)]
    assert copy.original.endswith("\n$a\nA\nb\nB\n")


def test_no_heredoc_in_exec_form_or_other_instructions() -> None:
    result = parse('FROM a\nRUN ["cat", "<<EOF"]\nCMD <<EOF\n')
    assert all(not n.heredocs for n in result.nodes)


def test_onbuild_keeps_trigger_and_its_heredocs() -> None:
    [_, onbuild] = parse("FROM a\nONBUILD COPY --from=x <<EOF /y\nhi\nEOF\n").nodes
    assert onbuild.sub_cmd == "COPY"
    assert onbuild.sub is not None and onbuild.sub.flags == ("--from=x",)
    assert [h.content for h in onbuild.sub.heredocs] == ["hi\n"]
    assert onbuild.to_json()["heredocs"] == []  # as BuildKit shows it


def test_empty_continuation_warns_as_buildkit_does() -> None:
    result = parse("FROM a\nRUN a \\\n\n b \\\n c\nRUN d\n")
    assert result.nodes[1].value == ("a  b  c",)
    # BuildKit's text, at the instruction's last line (not its first).
    assert [(w.line, w.message) for w in result.warnings] == [
        (5, "Empty continuation line found in: RUN a  b  c")
    ]
    assert str(result.warnings[0]) == "Dockerfile:5: Empty continuation line found in: RUN a  b  c"


# property tests -----------------------------------------------------------------------------

_word = st.text(alphabet=st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=8)


@given(st.lists(_word, min_size=1, max_size=6), st.sampled_from(["\\", "`"]))
def test_continuations_join_lines(words: list[str], escape: str) -> None:
    lines = [f"RUN {words[0]} {escape}"] + [f"  {w} {escape}" for w in words[1:-1]]
    if len(words) > 1:
        lines.append(f"  {words[-1]}")
    else:
        lines[0] = f"RUN {words[0]}"
    text = f"# escape={escape}\nFROM a\n" + "\n".join(lines) + "\n"
    run = parse(text).nodes[1]
    assert run.start_line == 3
    assert run.end_line == 2 + len(lines)
    assert run.value[0].split() == words


@given(st.lists(_word, min_size=2, max_size=5), st.integers(min_value=0, max_value=3))
def test_comments_and_blank_lines_inside_continuations_are_dropped(
    words: list[str], where: int
) -> None:
    body = [f"  {w} \\" for w in words[:-1]] + [f"  {words[-1]}"]
    body.insert(min(where, len(body) - 1), "# a comment")
    text = "FROM a\nRUN \\\n" + "\n".join(body) + "\n"
    run = parse(text).nodes[1]
    assert run.value[0].split() == words


@given(_word)
def test_escaped_escape_is_not_a_continuation(word: str) -> None:
    run = parse(f"FROM a\nRUN echo {word}\\\\\nRUN b\n").nodes
    assert len(run) == 3
    assert run[1].value == (f"echo {word}\\\\",)


@given(st.text(alphabet="abc \t", max_size=20))
def test_instruction_case_never_matters(padding: str) -> None:
    for name in ("run", "Run", "RUN"):
        node = parse(f"FROM a\n{name} x{padding.strip()}\n").nodes[1]
        assert node.cmd == "RUN"


def test_heredoc_with_space_after_the_marker() -> None:
    [node] = parse("RUN << EOT\necho hi\nEOT\n").nodes
    assert [(h.name, h.content) for h in node.heredocs] == [("EOT", "echo hi\n")]
    # BuildKit's lexer glues white space only right after `<<`: `<<- EOT` is no heredoc.
    nodes = parse("RUN <<- EOT\n\techo hi\n\tEOT\n").nodes
    assert [n.cmd for n in nodes] == ["RUN", "ECHO", "EOT"] and not nodes[0].heredocs


def test_onbuild_json_shows_the_trigger_flags() -> None:
    [node] = parse("ONBUILD COPY --from=base /a /b\n").nodes
    assert node.to_json()["flags"] == ["--from=base"]


def test_text_after_a_json_array_makes_it_shell_form() -> None:
    # BuildKit (since v0.15) decodes the whole rest of the line: trailing text is shell form.
    for cmd in ("CMD", "RUN", "ENTRYPOINT", "SHELL"):
        node = parse(f'FROM a\n{cmd} ["echo","a"] && echo b\n').nodes[1]
        assert (node.json, node.value) == (False, ('["echo","a"] && echo b',)), cmd
    health = parse('FROM a\nHEALTHCHECK CMD ["true"] || exit 1\n').nodes[1]
    assert (health.json, health.value) == (False, ("CMD", '["true"] || exit 1'))
    # White space after the array is still JSON.
    assert parse('FROM a\nCMD ["echo"]  \t\n').nodes[1].json
    # ADD and COPY fall back to words.
    assert parse('FROM a\nCOPY ["a", "b"] c\n').nodes[1].value == ('["a",', '"b"]', "c")


def test_a_line_longer_than_buildkits_limit_is_refused() -> None:
    fine = "FROM a\nRUN echo " + "x" * (65535 - 9) + "\n"
    assert parse(fine).nodes[1].end_line == 2
    long = "FROM a\nRUN echo " + "é" * 32764 + "\nRUN b\n"  # 65,537 bytes in 32,773 characters
    with pytest.raises(DockerfileError) as info:
        parse(long)
    assert info.value.line == 2
    assert "dockerfile line greater than max allowed size of 65535" in str(info.value)


def test_syntax_and_check_directives_as_buildkit_finds_them() -> None:
    result = parse("# syntax=docker/dockerfile:1 // a note\n# check=skip=all  x\nFROM a\n")
    assert result.directives == {"syntax": "docker/dockerfile:1", "check": "skip=all"}
    # After a #! line: syntax and check still count; escape does not (the parser stopped).
    result = parse("#!/usr/bin/env buildctl\n# syntax=docker/dockerfile:1.7\n# escape=`\nFROM a\n")
    assert result.directives == {"syntax": "docker/dockerfile:1.7"} and result.escape == "\\"


def test_comments_before_an_instruction_are_kept() -> None:
    nodes = parse(
        "# check=skip=all\n# first\n\n  # second\nFROM a\n#\nRUN b\n# only\nRUN c \\\n"
        "# inside\n d\nRUN e\n"
    ).nodes
    # The directive is not a comment; a blank line keeps them; an empty `#` clears them.
    assert [n.comments for n in nodes] == [("first", "# second"), (), ("only",), ()]


def test_legacy_key_value_form_is_marked() -> None:
    nodes = parse("FROM a\nENV k v w\nENV k=v\nLABEL a b\nLABEL a=b c=d\n").nodes
    assert [n.legacy for n in nodes] == [False, True, False, True, False]
