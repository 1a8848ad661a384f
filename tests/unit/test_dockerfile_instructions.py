import pytest

from polyarch.errors import DockerfileError
from polyarch.frontend.dockerfile import load


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("FROM a\nRUNN x\n", 2, "unknown instruction: RUNN (did you mean RUN?)"),
        ("FROM a\nfoo bar\n", 2, "unknown instruction: foo"),
        ("FROM a\nCOPY --form=x a b\n", 2, "unknown flag: --form"),
        ("FROM a\nCOPY --from a b\n", 2, "missing a value on flag: --from"),
        ("FROM a\nCOPY --link=maybe a b\n", 2, "expecting boolean value for flag --link"),
        ("FROM a\nCOPY --chown=a --chown=b x y\n", 2, "duplicate flag specified: --chown"),
        ("FROM a\nRUN --platform=x echo\n", 2, "unknown flag: --platform"),
        ("FROM a\nCOPY onlyone\n", 2, "COPY requires at least two arguments"),
        ("FROM a\nCOPY a <<EOF\nx\nEOF\n", 2, "cannot accept a heredoc as a destination"),
        ("FROM a\nRUN\n", 2, "RUN requires at least one argument"),
        ("FROM a\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
        ("FROM a\nENV\n", 2, "ENV requires at least one argument"),
        ("FROM a\nSHELL /bin/bash -c\n", 2, "SHELL requires the arguments to be in JSON form"),
        ("FROM a\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK NONE takes no arguments"),
        ("FROM a\nHEALTHCHECK CURL x\n", 2, "Unknown type"),
        ("FROM a\nHEALTHCHECK --interval=soon CMD x\n", 2, "invalid duration"),
        ("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, "--retries cannot be negative"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", 2, "Chaining ONBUILD"),
        ("FROM a\nONBUILD FROM b\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD COPY --bad=1 a b\n", 2, "unknown flag: --bad"),
        ("RUN echo\nFROM a\n", 1, "RUN before the first FROM"),
        ("ARG A=1\n", 1, "no FROM instruction"),
        ("FROM a b\n", 1, "FROM requires either one or three arguments"),
        ("FROM a AS 1st\n", 1, "invalid name for build stage"),
    ],
)
def test_errors_name_file_line_and_problem(text: str, line: int, fragment: str) -> None:
    with pytest.raises(DockerfileError) as info:
        load(text, "app/Dockerfile")
    assert info.value.line == line
    assert str(info.value).startswith(f"app/Dockerfile:{line}: ")
    assert fragment in str(info.value)


def test_stages_and_meta_args() -> None:
    df = load(
        "ARG BASE=alpine\nARG V\nFROM --platform=$BUILDPLATFORM ${BASE} AS Build\nRUN x\n"
        "FROM build\nCOPY --from=0 --link a b\n"
    )
    assert [a.args for a in df.meta_args] == [("BASE=alpine",), ("V",)]
    first, second = df.stages
    assert (first.name, first.base, first.platform) == ("build", "${BASE}", "$BUILDPLATFORM")
    assert [i.kind for i in first.instructions] == ["RUN"]
    assert second.name is None and second.display == "stage-1"
    copy = second.instructions[0]
    assert copy.flag("from") == "0" and copy.bool_flag("link")
    assert df.stage("BUILD") is first and df.stage("1") is second and df.stage("x") is None


def test_copy_sources_with_heredocs_and_chomp() -> None:
    df = load("FROM a\nCOPY x <<-EOF y /dst/\n\tline\nEOF\n")
    paths, inline, dest = df.stages[0].instructions[0].sources_and_dest()
    assert paths == ("x", "y")
    assert [(h.name, h.content) for h in inline] == [("EOF", "line\n")]
    assert dest == "/dst/"


def test_arg_declarations_and_pairs() -> None:
    df = load('FROM a\nARG a b=2 c="x y"\nENV K=v L="w z"\n')
    arg, env = df.stages[0].instructions
    assert arg.arg_declarations() == [("a", None), ("b", "2"), ("c", '"x y"')]
    assert env.pairs() == [("K", "v"), ("L", '"w z"')]


def test_onbuild_expression_keeps_heredocs() -> None:
    df = load("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert df.stages[0].instructions[0].args == ("RUN <<EOF\necho hi\nEOF",)
