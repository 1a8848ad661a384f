"""BuildKit's build checks: each rule as BuildKit's own lint tests exercise it
(frontend/dockerfile/dockerfile_check_test.go), written as polyarch's cases.

`checked` runs the check of `build --check` (every stage looked at unless a target is named);
`built` runs a build's conversion (only the target's stages, for two platforms: warned once).
"""

import pytest

from polyarch.errors import DockerfileError
from polyarch.frontend.convert import (
    BaseImage,
    ConvertRequest,
    check_dockerfile,
    convert,
)
from polyarch.frontend.dockerfile import load, parse, read_patterns
from polyarch.frontend.dockerfile.checks import (
    RULES,
    CheckConfig,
    parse_check_options,
    suggest,
    with_comments,
)
from polyarch.oci.config import ImageConfig
from polyarch.platform import Platform

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")

Found = list[tuple[int | None, str, str]]


def _request(
    text: str, args: dict[str, str] | None, ignore: str, images: dict[str, ImageConfig] | None
) -> ConvertRequest:
    resolved = {
        (ref, str(p)): BaseImage("sha256:" + "0" * 64, config)
        for ref, config in (images or {}).items()
        for p in (AMD64, ARM64)
    }
    return ConvertRequest(
        load(text), (AMD64, ARM64), AMD64, args or {}, None, resolved,
        ignore=read_patterns(ignore) if ignore else (),
    )  # fmt: skip


def _found(warnings: object) -> Found:
    out = [(w.location.start_line if w.location else None, w.rule, w.message)
           for w in warnings if w.rule]  # type: ignore[attr-defined]  # fmt: skip
    return sorted(out, key=lambda f: (f[0] or 0, f[2]))


def checked(
    text: str,
    *,
    args: dict[str, str] | None = None,
    ignore: str = "",
    images: dict[str, ImageConfig] | None = None,
) -> Found:
    result = check_dockerfile(
        parse(text), "Dockerfile", args or {},
        lambda df: ConvertRequest(df, (AMD64, ARM64), AMD64, args or {}, None,
                                  _request(text, args, ignore, images).images,
                                  ignore=read_patterns(ignore) if ignore else ()),
    )  # fmt: skip
    assert result.error is None, result.error
    return _found(result.warnings)


def built(text: str, **kw: object) -> Found:
    request = _request(text, kw.get("args"), kw.get("ignore", ""), kw.get("images"))  # type: ignore[arg-type]
    return _found(convert(request).warnings)


def image(**fields: object) -> ImageConfig:
    return ImageConfig.empty(AMD64).replace(**fields)  # type: ignore[arg-type]


ALPINE = {"docker.io/library/alpine:latest": image()}


def test_every_rule_is_buildkits() -> None:
    assert sorted(RULES) == sorted([
        "StageNameCasing", "FromAsCasing", "NoEmptyContinuation", "ConsistentInstructionCasing",
        "DuplicateStageName", "ReservedStageName", "JSONArgsRecommended", "MaintainerDeprecated",
        "UndefinedArgInFrom", "WorkdirRelativePath", "UndefinedVar",
        "MultipleInstructionsDisallowed", "LegacyKeyValueFormat", "InvalidBaseImagePlatform",
        "RedundantTargetPlatform", "SecretsUsedInArgOrEnv", "InvalidDefaultArgInFrom",
        "FromPlatformFlagConstDisallowed", "CopyIgnoredFile", "InvalidDefinitionDescription",
        "ExposeProtoCasing", "ExposeInvalidFormat",
    ])  # fmt: skip
    for rule in RULES.values():
        if rule.name != "InvalidBaseImagePlatform":
            assert rule.url.startswith("https://docs.docker.com/go/dockerfile/rule/")
            assert rule.url.endswith("/")
    assert RULES["UndefinedVar"].url == "https://docs.docker.com/go/dockerfile/rule/undefined-var/"


# configuration -------------------------------------------------------------------------------


def test_check_options_parse_as_buildkit_parses_them() -> None:
    assert parse_check_options("") == CheckConfig()
    config = parse_check_options("skip=A, B;error=true;experimental=C")
    assert config.skip == {"A", "B"} and config.error and config.experimental == {"C"}
    assert parse_check_options("skip=all").skip_all
    assert parse_check_options("experimental=all").experimental_all
    for bad, message in (
        ("skip", 'invalid check option "skip"'),
        ("nope=1", 'invalid check option "nope"'),
        ("error=maybe", 'failed to parse check option "error=maybe"'),
    ):
        with pytest.raises(ValueError, match=message):
            parse_check_options(bad)


def test_comment_overrides_add_to_the_file_config_but_never_set_error() -> None:
    base = parse_check_options("skip=A;error=true")
    merged = with_comments(base, ["check=skip=B // why", "check=skip=C"])
    assert merged.skip == {"A", "B"} and merged.error
    assert with_comments(base, ["not a directive", "check=error=false"]).error
    assert with_comments(base, ["check=bogus"]) == base


def test_rule_options_skip_all_and_error() -> None:
    text = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n"
    assert checked(text) == []
    text = "#check=skip=ConsistentInstructionCasing,FromAsCasing\nFROM scratch as base\n"
    assert checked(text + "copy Dockerfile .\n") == []
    text = "#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n"
    assert checked(text) == [(2, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match")]


def test_error_true_fails_the_build_after_the_warnings() -> None:
    text = "#check=skip=ConsistentInstructionCasing;error=true\nFROM scratch as base\n"
    with pytest.raises(DockerfileError, match="lint violation found for rules: FromAsCasing"):
        convert(ConvertRequest(load(text), (AMD64,), AMD64))
    # skip=all silences everything, error=true included
    assert checked("#check=skip=all;error=true\nFROM scratch as base\ncopy a .\n") == []


def test_the_build_argument_replaces_the_directive() -> None:
    text = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n"
    args = {"BUILDKIT_DOCKERFILE_CHECK": "skip=ConsistentInstructionCasing;error=true"}
    with pytest.raises(DockerfileError, match="lint violation found for rules: FromAsCasing"):
        convert(ConvertRequest(load(text), (AMD64,), AMD64, args))
    quiet = {"BUILDKIT_DOCKERFILE_CHECK": "skip=all"}
    convert(ConvertRequest(load("#check=error=true\nFROM scratch as base\n"), (AMD64,), AMD64,
                           quiet))  # fmt: skip
    with pytest.raises(DockerfileError, match="failed to parse BUILDKIT_DOCKERFILE_CHECK"):
        convert(ConvertRequest(load("FROM scratch\n"), (AMD64,), AMD64,
                               {"BUILDKIT_DOCKERFILE_CHECK": "bogus"}))  # fmt: skip


def test_check_directive_after_a_shebang_and_with_a_note() -> None:
    text = "#!/usr/bin/env buildx\n# check=skip=FromAsCasing // fine here\nFROM scratch as b\n"
    assert checked(text) == []


def test_warnings_before_an_instruction_error_are_still_told() -> None:
    text = "\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n"
    result = check_dockerfile(parse(text), "Dockerfile", {}, lambda df: ConvertRequest(
        df, (AMD64,), AMD64))  # fmt: skip
    assert result.error is not None and result.error.line == 4
    assert "unknown instruction: BADCMD" in str(result.error)
    assert _found(result.warnings) == [
        (2, "StageNameCasing", "Stage name 'BadStageName' should be lowercase"),
        (3, "MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label"),
    ]


# syntax rules -----------------------------------------------------------------------------


def test_stage_name_and_as_casing() -> None:
    text = ("\n# stage name\n#\nFROM scratch AS BadStageName\n\n# as\n#\nFROM scratch as base2\n"
            "\nFROM scratch AS base3\n")  # fmt: skip
    assert checked(text) == [
        (4, "StageNameCasing", "Stage name 'BadStageName' should be lowercase"),
        (8, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match"),
    ]
    assert checked("from scratch AS base\n\nfrom scratch as base2\n") == [
        (1, "FromAsCasing", "'AS' and 'from' keywords' casing do not match")
    ]


def test_empty_continuation_is_reported_at_the_last_line() -> None:
    text = "\nFROM scratch\n# warning\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n"
    assert checked(text) == [(6, "NoEmptyContinuation", "Empty continuation line")]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("From scratch as base\nFROM scratch AS base2\n",
         [(1, "Command 'From' should match the case of the command majority (uppercase)")]),
        ("FROM scratch\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n",
         [(2, "Command 'copy' should match the case of the command majority (uppercase)")]),
        ("frOM scratch as base\nfrom scratch as base2\n",
         [(1, "Command 'frOM' should match the case of the command majority (lowercase)")]),
        ("from scratch\nCOPY Dockerfile /foo\ncopy Dockerfile /bar\n",
         [(2, "Command 'COPY' should match the case of the command majority (lowercase)")]),
        ("from scratch\nCOPY a /foo\nCOPY a /bar\nCOPY a /baz\n",
         [(1, "Command 'from' should match the case of the command majority (uppercase)")]),
        ("FROM scratch\ncopy a /foo\ncopy a /bar\ncopy a /baz\n",
         [(1, "Command 'FROM' should match the case of the command majority (lowercase)")]),
        ("from scratch\ncopy a /foo\ncopy a /bar\n", []),
        ("FROM scratch\nCOPY a /foo\nCOPY a /bar\n", []),
        ("FROM alpine\nRUN <<'EOT'\nenv\nEOT\n", []),
    ],
)  # fmt: skip
def test_consistent_instruction_casing(text: str, found: list[tuple[int, str]]) -> None:
    casing = [(line, message) for line, rule, message in checked(text, images=ALPINE)
              if rule == "ConsistentInstructionCasing"]  # fmt: skip
    assert casing == found


def test_duplicate_and_reserved_stage_names() -> None:
    assert checked("FROM scratch AS b\nFROM scratch AS b\n") == [
        (2, "DuplicateStageName", 'Duplicate stage name "b", stage names should be unique')
    ]
    assert checked("FROM scratch AS b1\nFROM scratch AS b2\n") == []
    assert checked("FROM scratch AS scratch\nFROM scratch AS context\n") == [
        (1, "ReservedStageName", 'Stage name should not use the same name as reserved stage '
         '"scratch"'),
        (2, "ReservedStageName", 'Stage name should not use the same name as reserved stage '
         '"context"'),
    ]  # fmt: skip
    assert checked("FROM scratch\nFROM scratch AS a\n") == []


def test_duplicate_stage_names_resolve_as_buildkit_resolves_them() -> None:
    text = ("FROM scratch AS b\nCOPY one /one\nFROM b AS c\nFROM scratch AS b\nCOPY two /two\n"
            "FROM scratch\nCOPY --from=b /x /x\nCOPY --from=c /y /y\n")  # fmt: skip
    graph = convert(ConvertRequest(load(text), (AMD64,), AMD64))
    # `FROM b` took the first b (the one before it); `--from=b` takes the last one.
    by_index = {s.stage_index: s for s in graph.stages}
    assert by_index[1].result == by_index[0].result
    [copy_x] = [v for v in graph.vertices.values() if v.description == "COPY --from=b /x /x"]
    assert by_index[2].result in copy_x.inputs and by_index[0].result not in copy_x.inputs


def test_maintainer_deprecated() -> None:
    assert checked("FROM scratch\nMAINTAINER me@example.org\n") == [
        (2, "MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label")
    ]
    assert checked("FROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER me\n") == []


def test_definition_descriptions_are_experimental() -> None:
    text = (
        "# check=skip=all;experimental=InvalidDefinitionDescription\n# foo this is the foo\n"
        "ARG foo=bar\n\n# base this is the base image\nFROM scratch AS base\n\n"
        "# version this is the version number\nARG version=latest\n\n# baz this is the baz\n"
        "ARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n\n# comment for COPY\nCOPY a .\n"
    )
    assert checked(text) == []
    text = ("# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\n"
            "ARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n"
            "# definitely a bad comment\nARG version=latest\n# definitely a bad comment\n"
            "ARG foo=baz bar=qux baz=quux\n")  # fmt: skip
    assert [(line, message) for line, _rule, message in checked(text)] == [
        (3, "Comment for ARG should follow the format: `# foo <description>`"),
        (5, "Comment for FROM should follow the format: `# base <description>`"),
        (7, "Comment for ARG should follow the format: `# version <description>`"),
        (9, "Comment for ARG should follow the format: `# <arg_key> <description>`"),
    ]
    assert checked("# a note\nARG foo=bar\nFROM scratch\n") == []  # off unless asked for


# rules about values ---------------------------------------------------------------------------


def test_json_args_recommended() -> None:
    assert checked("FROM scratch\nCMD mycommand\n") == [
        (2, "JSONArgsRecommended", "JSON arguments recommended for CMD to prevent unintended "
         "behavior related to OS signals")
    ]  # fmt: skip
    assert [r for _, r, _ in checked("FROM scratch\nENTRYPOINT mycommand\n")] == [
        "JSONArgsRecommended"
    ]
    for text in (
        'FROM scratch\nSHELL ["/usr/bin/customshell"]\nCMD mycommand\n',
        'FROM scratch AS base\nSHELL ["/usr/bin/customshell"]\nFROM base\nENTRYPOINT mycommand\n',
        "FROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n",
        'FROM scratch\nCMD ["mycommand"]\n',
    ):
        assert checked(text) == [], text
    # A SHELL in the base image counts too; an unknown base says nothing.
    shelled = {"docker.io/library/alpine:latest": image(shell=("/bin/bash", "-c"))}
    assert checked("FROM alpine\nCMD run\n", images=shelled) == []
    assert checked("FROM alpine\nCMD run\n") == []


def test_undefined_arg_in_from() -> None:
    for text in (
        "ARG base=scratch\nFROM $base\n",
        "ARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\n",
        "FROM --platform=$BUILDPLATFORM scratch\n",
        "ARG DEBUG\nFROM scratch${DEBUG}\n",
        "ARG DEBUG\nFROM scra${DEBUG:-tch}\n",
    ):
        assert [r for _, r, _ in checked(text)] == [], text
    text = "ARG tag=latest\nFROM busybox:${tag}${version} AS b\n"
    assert checked(text) == [(2, "UndefinedArgInFrom", "FROM argument 'version' is not declared")]
    text = "ARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MY_ARCH} busybox\n"
    assert checked(text) == []
    result = check_dockerfile(
        parse("ARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\n"), "Dockerfile", {},
        lambda df: ConvertRequest(df, (AMD64,), AMD64),
    )  # fmt: skip
    assert _found(result.warnings) == [
        (2, "UndefinedArgInFrom", "FROM argument 'MYARCH' is not declared (did you mean "
         "MY_ARCH?)")
    ]  # fmt: skip
    assert result.error is not None  # the platform "linux/" is no platform


def test_workdir_relative_path() -> None:
    assert checked("FROM scratch\nWORKDIR app/\n") == [
        (2, "WorkdirRelativePath", 'Relative workdir "app/" can have unexpected results if the '
         "base image changes")
    ]  # fmt: skip
    assert checked("FROM scratch AS a\nWORKDIR /app\nFROM a AS b\nWORKDIR subdir/\n") == []
    assert checked("FROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n") == []
    # A WORKDIR of the base image does not count: the Dockerfile set none.
    assert len(checked("FROM alpine\nWORKDIR x\n", images={
        "docker.io/library/alpine:latest": image(working_dir="/srv")})) == 1  # fmt: skip


def test_undefined_var() -> None:
    for text in (
        "FROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n",
        "FROM alpine AS base\nARG foo=Dockerfile\nFROM base\nCOPY $foo .\n",
        "FROM alpine\nRUN echo $PATH\n",
    ):
        assert checked(text, images=ALPINE) == [], text
    text = "FROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n"
    assert checked(text, images=ALPINE) == [(2, "UndefinedVar",
                                             "Usage of undefined variable '$foo'")]  # fmt: skip
    text = ("FROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\n"
            "ARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n")  # fmt: skip
    assert checked(text, images=ALPINE) == [
        (5, "UndefinedVar", "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)")
    ]
    assert checked("FROM alpine\nENV PATH=$PAHT:/tmp/bin\n", images=ALPINE) == [
        (2, "UndefinedVar", "Usage of undefined variable '$PAHT' (did you mean $PATH?)")
    ]
    # Only the stages a build reaches are converted; a check looks at all of them.
    text = "FROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n"
    assert [m for _, _, m in built(text)] == ["Usage of undefined variable '$bar'"]
    assert [m for _, _, m in checked(text)] == [
        "Usage of undefined variable '$foo'",
        "Usage of undefined variable '$bar'",
    ]
    # Mount options and heredoc bodies are expanded too; the shell text of RUN is not.
    text = (
        "FROM alpine\nRUN --mount=type=cache,target=/c,id=$CACHE echo $NOPE\n"
        "COPY <<EOF /x\n$B\nEOF\n"
    )
    assert [m for _, _, m in checked(text, images=ALPINE)] == [
        "Usage of undefined variable '$CACHE'",
        "Usage of undefined variable '$B'",
    ]


def test_undefined_var_knows_the_base_images_variables() -> None:
    node = {"docker.io/library/node:latest": image(env=("PATH=/bin", "NODE_VERSION=20"))}
    assert checked("FROM node\nCOPY app-$NODE_VERSION /app\n", images=node) == []
    # scratch has BuildKit's default PATH, in the stage's variables too
    assert checked("FROM scratch\nENV PATH=$PATH:/x\n") == []


def test_multiple_instructions_disallowed() -> None:
    def said(instruction: str, line: int) -> tuple[int, str, str]:
        return (
            line,
            "MultipleInstructionsDisallowed",
            f"Multiple {instruction} instructions "
            "should not be used in the same stage because only the last one will be used",
        )

    text = (
        'FROM scratch\nENTRYPOINT ["/myapp"]\nENTRYPOINT ["/myotherapp"]\nCMD ["/myapp"]\n'
        'CMD ["/myotherapp"]\nHEALTHCHECK CMD ["/myapp"]\nHEALTHCHECK CMD ["/myotherapp"]\n'
    )
    assert checked(text) == [said("ENTRYPOINT", 2), said("CMD", 4), said("HEALTHCHECK", 6)]
    text = ('FROM scratch\nENTRYPOINT ["/myapp"]\nCMD ["/myapp"]\nHEALTHCHECK CMD ["/myapp"]\n'
            "COPY <<EOF /a.txt\nHello, World!\nEOF\n"
            'ENTRYPOINT ["/o"]\nCMD ["/o"]\nHEALTHCHECK CMD ["/o"]\n')  # fmt: skip
    assert checked(text) == [said("ENTRYPOINT", 2), said("CMD", 3), said("HEALTHCHECK", 4)]
    text = (
        'FROM scratch AS a\nENTRYPOINT ["/a"]\nCMD ["/a"]\nHEALTHCHECK CMD ["/a"]\n'
        'FROM a AS b\nENTRYPOINT ["/b"]\nCMD ["/b"]\nHEALTHCHECK CMD ["/b"]\n'
    )
    assert checked(text) == []


def test_legacy_key_value_format() -> None:
    assert checked("FROM scratch\nENV testkey value\nLABEL key value\n") == [
        (2, "LegacyKeyValueFormat",
         '"ENV key=value" should be used instead of legacy "ENV key value" format'),
        (3, "LegacyKeyValueFormat",
         '"LABEL key=value" should be used instead of legacy "LABEL key value" format'),
    ]  # fmt: skip
    assert checked("FROM scratch\nENV testkey=value\nLABEL key=value\n") == []
    # In a stage the build does not reach: only a check says so.
    text = "FROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n"
    assert built(text) == []
    assert [line for line, _, _ in checked(text)] == [4, 5]
    text = ("FROM scratch\n# check=skip=LegacyKeyValueFormat\nENV testkey value\n"
            "# check=skip=LegacyKeyValueFormat\nLABEL key value\n")  # fmt: skip
    assert checked(text) == []


def test_redundant_target_platform() -> None:
    assert checked("FROM --platform=$TARGETPLATFORM scratch\n") == [
        (1, "RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is "
         "redundant as this is the default behavior")
    ]  # fmt: skip
    assert "${TARGETPLATFORM}" in checked("FROM --platform=${TARGETPLATFORM} scratch\n")[0][2]
    assert checked("# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM a\n",
                   images={"docker.io/library/a:latest": image()}) == []  # fmt: skip


def test_secrets_used_in_arg_or_env() -> None:
    text = ("# check=skip=InvalidDefinitionDescription\n\nFROM scratch\nARG SECRET_PASSPHRASE\n"
            "ENV SUPER_Secret=foo\nENV password=bar secret=baz\n"
            "ARG super_duper_secret_token=foo auth=bar\nENV apikey=bar sunflower=foo\n"
            "ENV git_key=\nENV PUBLIC_KEY=\nARG public_token\nARG SECRET_PASSPHRASE_FILE\n"
            "ENV password_file=bar secret_File=baz\nARG AUTH_MODULE_VERSION\n"
            "# check=skip=SecretsUsedInArgOrEnv // allow secret in environment\n"
            "ENV password=bar\n# check=skip=SecretsUsedInArgOrEnv // allow secret in arg\n"
            "ARG password\n# check=skip=all // is local to only this instruction\n"
            "ENV alternate_password=bar\n# check=skip=all // is local to only this instruction\n"
            "ARG alternate_password\n")  # fmt: skip
    assert [(line, m.split("(", 1)[1]) for line, _, m in checked(text)] == [
        (4, 'ARG "SECRET_PASSPHRASE")'),
        (5, 'ENV "SUPER_Secret")'),
        (6, 'ENV "password")'),
        (6, 'ENV "secret")'),
        (7, 'ARG "auth")'),
        (7, 'ARG "super_duper_secret_token")'),
        (8, 'ENV "apikey")'),
        (9, 'ENV "git_key")'),
    ]


def test_invalid_default_arg_in_from() -> None:
    said = "InvalidDefaultArgInFrom"
    assert checked("ARG VERSION\nFROM busybox:$VERSION\n", args={"VERSION": "latest"}) == [
        (2, said, "Default value for ARG busybox:$VERSION results in empty or invalid base image "
         "name")
    ]  # fmt: skip
    assert [r for _, r, _ in checked("ARG IMAGE\nFROM $IMAGE\n", args={"IMAGE": "busybox"})] == [
        said
    ]
    text = 'ARG SFX="box:"\nFROM busy${SFX}\n'
    assert [r for _, r, _ in checked(text, args={"SFX": "box:latest"})] == [said]
    assert checked('ARG VERSION="latest"\nFROM busybox:${VERSION}\n') == []
    text = 'ARG BUSYBOX_VARIANT=""\nFROM busybox:stable${BUSYBOX_VARIANT}\n'
    assert checked(text, args={"BUSYBOX_VARIANT": "-musl"}) == []


def test_from_platform_flag_const_disallowed() -> None:
    assert checked("FROM --platform=linux/amd64 scratch\n") == [
        (1, "FromPlatformFlagConstDisallowed",
         'FROM --platform flag should not use constant value "linux/amd64"')
    ]  # fmt: skip
    assert checked("FROM --platform=linux/amd64 scratch AS my_amd64_stage\n") == []
    assert checked("FROM --platform=linux/amd64 scratch AS linux\n") == []


def test_copy_ignored_file() -> None:
    text = "FROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n"
    assert checked(text, ignore="Dockerfile\n") == [
        (2, "CopyIgnoredFile",
         'Attempting to Copy file "Dockerfile" that is excluded by .dockerignore'),
        (3, "CopyIgnoredFile",
         'Attempting to Add file "Dockerfile" that is excluded by .dockerignore'),
    ]  # fmt: skip
    assert checked("# check=skip=CopyIgnoredFile\n" + text, ignore="Dockerfile\n") == []
    text = ("FROM scratch AS base\nCOPY Dockerfile /foobar\nADD Dockerfile /windy\n\n"
            "FROM base\nCOPY --from=base /foobar /Dockerfile\n")  # fmt: skip
    assert checked(text, ignore="foobar\n") == []
    # With an exception in the ignore file, nothing is said (as BuildKit).
    assert checked("FROM scratch\nCOPY ./Dockerfile .\n", ignore="**\n!Dockerfile\n") == []
    assert checked("FROM scratch\nCOPY . .\n", ignore="**\n!Dockerfile\n") == []
    # The context root: only when every entry is excluded.
    assert checked("FROM scratch\nCOPY . .\n", ignore=".*\n") == []
    assert checked("FROM scratch\nCOPY . .\n", ignore="*\n") == [
        (2, "CopyIgnoredFile", 'Attempting to Copy file "." that is excluded by .dockerignore')
    ]


def test_expose_proto_casing_and_format() -> None:
    assert checked("FROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n") == [
        (2, "ExposeProtoCasing", "Defined protocol '80/TcP' in EXPOSE instruction should be "
         "lowercase"),
        (2, "ExposeProtoCasing", "Defined protocol '8080/TCP' in EXPOSE instruction should be "
         "lowercase"),
    ]  # fmt: skip
    found = checked("FROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n")
    assert [m.rsplit(" ", 1)[1] for _, _, m in found] == [
        "'127.0.0.1:80:80'", "'5000:5000'", "'[::1]:8080:8080'",
    ]  # fmt: skip
    graph = convert(ConvertRequest(load("FROM scratch\nEXPOSE 80/TCP 53/udp 1-2\n"), (AMD64,),
                                   AMD64))  # fmt: skip
    assert graph.images[AMD64].config.exposed_ports == ("1/tcp", "2/tcp", "53/udp", "80/tcp")


def test_invalid_base_image_platform() -> None:
    arm_image = {"docker.io/library/app:latest": image(architecture="arm64")}
    graph = convert(
        ConvertRequest(
            load("FROM app\nENV foo=bar\n"),
            (AMD64,),
            AMD64,
            images={
                ("docker.io/library/app:latest", "linux/amd64"): BaseImage(
                    "sha256:" + "1" * 64, arm_image["docker.io/library/app:latest"]
                )
            },
        )
    )
    [warning] = [w for w in graph.warnings if w.rule]
    assert warning.rule == "InvalidBaseImagePlatform" and warning.url == ""
    assert warning.message == ('Base image app was pulled with platform "linux/arm64", expected '
                               '"linux/amd64" for current build')  # fmt: skip


def test_multi_platform_builds_warn_once() -> None:
    text = "FROM scratch\nWORKDIR app/\nFROM scratch as x\n"
    found = built(text)
    assert [r for _, r, _ in found].count("WorkdirRelativePath") == 0  # stage 0 is not built
    found = built("FROM scratch\nWORKDIR app/\n")
    assert [r for _, r, _ in found] == ["WorkdirRelativePath"]


def test_suggestions_are_buildkits() -> None:
    assert suggest("DIR_ASSET", ["DIR_BINARIES", "DIR_ASSETS", "DIR_CONFIG"]) == "DIR_ASSETS"
    assert suggest("PAHT", ["PATH", "HOME"]) == "PATH"
    assert suggest("PATH", ["PATH"]) == ""  # an exact match means something else is wrong
    assert suggest("COMPLETELY_ELSE", ["PATH"]) == ""


def test_env_words_expand_with_the_values_from_before() -> None:
    graph = convert(ConvertRequest(load("FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\n"
                                        "ENV ghi=$abc\n"), (AMD64,), AMD64))  # fmt: skip
    env = dict(e.split("=", 1) for e in graph.images[AMD64].config.env)
    assert (env["abc"], env["def"], env["ghi"]) == ("bye", "hello", "bye")
