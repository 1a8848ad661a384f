"""BuildKit's build checks (`docker build --check`): the rules, their configuration, and the
linter that runs them. Pure.

The rules are BuildKit's (`frontend/dockerfile/linter/ruleset.go`): same names, descriptions,
messages and documentation URLs, so a warning reads as Docker's tools print it. Where each rule
is checked follows BuildKit too: the syntax rules here (over every instruction of the file),
the rest where the converter meets what they are about.

Configuration, as BuildKit takes it: the `# check=skip=A,B;error=true;experimental=C` directive,
replaced whole by the `BUILDKIT_DOCKERFILE_CHECK` build argument; a `# check=...` comment right
before an instruction adds to it for that instruction (its skips and experiments; never
`error`). Experimental rules run only when named (or `experimental=all`), and `skip` does not
apply to them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from polyarch.errors import DockerfileError
from polyarch.frontend.dockerfile.syntax import Node, ParseWarning
from polyarch.frontend.gofmt import quote
from polyarch.graph.model import Location, PlanWarning

CHECK_ARG: Final = "BUILDKIT_DOCKERFILE_CHECK"
_DOCS: Final = "https://docs.docker.com/go/dockerfile/rule/"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    description: str
    url: str = ""
    experimental: bool = False


def _rule(name: str, slug: str, description: str, *, experimental: bool = False) -> Rule:
    return Rule(name, description, f"{_DOCS}{slug}/" if slug else "", experimental)


STAGE_NAME_CASING: Final = _rule(
    "StageNameCasing", "stage-name-casing", "Stage names should be lowercase"
)
FROM_AS_CASING: Final = _rule(
    "FromAsCasing", "from-as-casing",
    "The 'as' keyword should match the case of the 'from' keyword",
)  # fmt: skip
NO_EMPTY_CONTINUATION: Final = _rule(
    "NoEmptyContinuation", "no-empty-continuation",
    "Empty continuation lines will become errors in a future release",
)  # fmt: skip
CONSISTENT_INSTRUCTION_CASING: Final = _rule(
    "ConsistentInstructionCasing", "consistent-instruction-casing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
)  # fmt: skip
DUPLICATE_STAGE_NAME: Final = _rule(
    "DuplicateStageName", "duplicate-stage-name", "Stage names should be unique"
)
RESERVED_STAGE_NAME: Final = _rule(
    "ReservedStageName", "reserved-stage-name",
    "Reserved words should not be used as stage names",
)  # fmt: skip
JSON_ARGS_RECOMMENDED: Final = _rule(
    "JSONArgsRecommended", "json-args-recommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to "
    "OS signals",
)  # fmt: skip
MAINTAINER_DEPRECATED: Final = _rule(
    "MaintainerDeprecated", "maintainer-deprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
)  # fmt: skip
UNDEFINED_ARG_IN_FROM: Final = _rule(
    "UndefinedArgInFrom", "undefined-arg-in-from", "FROM command must use declared ARGs"
)
WORKDIR_RELATIVE_PATH: Final = _rule(
    "WorkdirRelativePath", "workdir-relative-path",
    "Relative workdir without an absolute workdir declared within the build can have "
    "unexpected results if the base image changes",
)  # fmt: skip
UNDEFINED_VAR: Final = _rule(
    "UndefinedVar", "undefined-var", "Variables should be defined before their use"
)
MULTIPLE_INSTRUCTIONS_DISALLOWED: Final = _rule(
    "MultipleInstructionsDisallowed", "multiple-instructions-disallowed",
    "Multiple instructions of the same type should not be used in the same stage",
)  # fmt: skip
LEGACY_KEY_VALUE_FORMAT: Final = _rule(
    "LegacyKeyValueFormat", "legacy-key-value-format",
    "Legacy key/value format with whitespace separator should not be used",
)  # fmt: skip
INVALID_BASE_IMAGE_PLATFORM: Final = _rule(
    "InvalidBaseImagePlatform", "",  # BuildKit gives this one no documentation page
    "Base image platform does not match expected target platform",
)  # fmt: skip
REDUNDANT_TARGET_PLATFORM: Final = _rule(
    "RedundantTargetPlatform", "redundant-target-platform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default "
    "behavior",
)  # fmt: skip
SECRETS_USED_IN_ARG_OR_ENV: Final = _rule(
    "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env",
    "Sensitive data should not be used in the ARG or ENV commands",
)  # fmt: skip
INVALID_DEFAULT_ARG_IN_FROM: Final = _rule(
    "InvalidDefaultArgInFrom", "invalid-default-arg-in-from",
    "Default value for global ARG results in an empty or invalid base image name",
)  # fmt: skip
FROM_PLATFORM_FLAG_CONST_DISALLOWED: Final = _rule(
    "FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed",
    "FROM --platform flag should not use a constant value",
)  # fmt: skip
COPY_IGNORED_FILE: Final = _rule(
    "CopyIgnoredFile", "copy-ignored-file",
    "Attempting to Copy file that is excluded by .dockerignore",
)  # fmt: skip
INVALID_DEFINITION_DESCRIPTION: Final = _rule(
    "InvalidDefinitionDescription", "invalid-definition-description",
    "Comment for build stage or argument should follow the format: `# <arg/stage name> "
    "<description>`. If this is not intended to be a description comment, add an empty line or "
    "comment between the instruction and the comment.",
    experimental=True,
)  # fmt: skip
EXPOSE_PROTO_CASING: Final = _rule(
    "ExposeProtoCasing", "expose-proto-casing",
    "Protocol in EXPOSE instruction should be lowercase",
)  # fmt: skip
EXPOSE_INVALID_FORMAT: Final = _rule(
    "ExposeInvalidFormat", "expose-invalid-format",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will "
    "become an error in a future release",
)  # fmt: skip

RULES: Final = {
    rule.name: rule
    for rule in (
        STAGE_NAME_CASING, FROM_AS_CASING, NO_EMPTY_CONTINUATION, CONSISTENT_INSTRUCTION_CASING,
        DUPLICATE_STAGE_NAME, RESERVED_STAGE_NAME, JSON_ARGS_RECOMMENDED, MAINTAINER_DEPRECATED,
        UNDEFINED_ARG_IN_FROM, WORKDIR_RELATIVE_PATH, UNDEFINED_VAR,
        MULTIPLE_INSTRUCTIONS_DISALLOWED, LEGACY_KEY_VALUE_FORMAT, INVALID_BASE_IMAGE_PLATFORM,
        REDUNDANT_TARGET_PLATFORM, SECRETS_USED_IN_ARG_OR_ENV, INVALID_DEFAULT_ARG_IN_FROM,
        FROM_PLATFORM_FLAG_CONST_DISALLOWED, COPY_IGNORED_FILE, INVALID_DEFINITION_DESCRIPTION,
        EXPOSE_PROTO_CASING, EXPOSE_INVALID_FORMAT,
    )
}  # fmt: skip
RESERVED_STAGE_NAMES: Final = frozenset({"context", "scratch"})


# configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckConfig:
    skip_all: bool = False
    skip: frozenset[str] = frozenset()
    experimental_all: bool = False
    experimental: frozenset[str] = frozenset()
    error: bool = False  # a warning fails the build ("lint violation found for rules: ...")

    def merged(self, other: CheckConfig) -> CheckConfig:
        """BuildKit's WithMergedConfig: skips and experiments add up; `error` stays."""
        return replace(
            self,
            skip_all=self.skip_all or other.skip_all,
            skip=self.skip | other.skip,
            experimental_all=self.experimental_all or other.experimental_all,
            experimental=self.experimental | other.experimental,
        )

    def runs(self, rule: Rule) -> bool:
        if rule.experimental:
            return self.experimental_all or rule.name in self.experimental
        return not (self.skip_all or rule.name in self.skip)


def parse_check_options(text: str) -> CheckConfig:
    """`skip=A,B|all;error=true|false;experimental=C|all` (BuildKit's ParseLintOptions);
    raises ValueError with BuildKit's message."""
    text = text.strip()
    if not text:
        return CheckConfig()
    config = CheckConfig()
    for part in text.split(";", 2):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"invalid check option {quote(part)}")
        key = key.strip()
        value = value.strip()
        if key == "skip":
            if value == "all":
                config = replace(config, skip_all=True)
            else:
                config = replace(config, skip=frozenset(v.strip() for v in value.split(",")))
        elif key == "experimental":
            if value == "all":
                config = replace(config, experimental_all=True)
            else:
                names = frozenset(v.strip() for v in value.split(","))
                config = replace(config, experimental=names)
        elif key == "error":
            config = replace(config, error=_go_bool(value, part))
        else:
            raise ValueError(f"invalid check option {quote(key)}")
    return config


def _go_bool(value: str, part: str) -> bool:
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(
        f"failed to parse check option {quote(part)}: strconv.ParseBool: parsing "
        f"{quote(value)}: invalid syntax"
    )


def check_config(directive: str | None, build_args: dict[str, str], path: str) -> CheckConfig:
    """The build's configuration: the `BUILDKIT_DOCKERFILE_CHECK` build argument if given,
    else the file's `# check=` directive."""
    if CHECK_ARG in build_args:
        try:
            return parse_check_options(build_args[CHECK_ARG])
        except ValueError as exc:
            raise DockerfileError(f"failed to parse {CHECK_ARG}: {exc}", path=path) from None
    try:
        return parse_check_options(directive or "")
    except ValueError as exc:
        raise DockerfileError(f"failed to parse check options: {exc}", path=path,
                              line=1) from None  # fmt: skip


_COMMENT_DIRECTIVE: Final = re.compile(
    r"\A[\t\n\v\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z"
)


def with_comments(config: CheckConfig, comments: Sequence[str]) -> CheckConfig:
    """BuildKit's WithMergedConfigFromComments: the first `check=...` among an instruction's
    comments adds to the configuration (its value ends at the first space, so a note may
    follow); one that does not parse leaves the configuration as it was."""
    for comment in comments:
        match = _COMMENT_DIRECTIVE.match(comment)
        if match is None or match.group(1).lower() != "check":
            continue
        try:
            return config.merged(parse_check_options(match.group(2).split(" ", 1)[0]))
        except ValueError:
            return config
    return config


# running rules --------------------------------------------------------------------------------


@dataclass
class Linter:
    """Runs rules and keeps what they found, in order; `on_warning` sees each as it comes."""

    config: CheckConfig = field(default_factory=CheckConfig)
    on_warning: Callable[[PlanWarning], None] | None = None
    warnings: list[PlanWarning] = field(default_factory=list)
    called: list[str] = field(default_factory=list)

    def run(
        self,
        rule: Rule,
        location: Location | None,
        detail: str,
        comments: Sequence[str] = (),
    ) -> None:
        config = with_comments(self.config, comments) if comments else self.config
        if not config.runs(rule):
            return
        self.called.append(rule.name)
        warning = PlanWarning(detail, location, rule.name, rule.description, rule.url)
        self.warnings.append(warning)
        if self.on_warning is not None:
            self.on_warning(warning)

    def error(self, path: str) -> DockerfileError | None:
        """With `error=true`: the build fails once a rule warned (BuildKit's lint.Error)."""
        if not self.config.error or not self.called:
            return None
        first = self.warnings[0].location
        names = ", ".join(dict.fromkeys(self.called))
        return DockerfileError(f"lint violation found for rules: {names}", path=path,
                               line=first.start_line if first else None)  # fmt: skip


# suggestions ---------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ca != cb)))  # fmt: skip
        previous = current
    return previous[-1]


def suggest(value: str, options: Iterable[str], *, case_sensitive: bool = True) -> str:
    """BuildKit's suggest.Search: the closest option within distance 2, "" when there is none
    or `value` is one of them."""
    wanted = value if case_sensitive else value.lower()
    match = ""
    best = 3
    for option in options:
        candidate = option if case_sensitive else option.lower()
        if candidate == wanted:
            return ""
        distance = levenshtein(wanted, candidate)
        if distance < best:
            match, best = option if case_sensitive else _match_case(candidate, value), distance
    return match


def _match_case(value: str, like: str) -> str:
    if like == like.lower():
        return value.lower()
    if like == like.upper():
        return value.upper()
    return value


# rules over the syntax tree -------------------------------------------------------------------


def node_checks(
    nodes: Sequence[Node], warnings: Sequence[ParseWarning], linter: Linter, path: str
) -> None:
    """The rules BuildKit checks while it parses, over every instruction of the file (also
    those before an instruction that fails): empty continuation lines, stage name casing,
    FROM/AS casing, MAINTAINER, descriptions, each with the instruction's own `# check=`
    comments."""
    for warning in warnings:
        linter.run(NO_EMPTY_CONTINUATION, Location(path, warning.line, warning.line),
                   "Empty continuation line")  # fmt: skip
    for node in nodes:
        at = Location(path, node.start_line, node.end_line)
        if node.cmd == "MAINTAINER":
            linter.run(MAINTAINER_DEPRECATED, at,
                       "Maintainer instruction is deprecated in favor of using label",
                       node.comments)  # fmt: skip
        elif node.cmd == "FROM":
            _from_casing(node, at, linter)
        elif node.cmd == "ARG":
            keys = [word.partition("=")[0] for word in node.value]
            _description(linter, "ARG", keys, node, at)


def stage_checks(nodes: Sequence[Node], linter: Linter, path: str) -> None:
    """Once the instructions are known good: stage names (reserved, repeated) and the casing
    of every instruction of the stages, with the file's configuration only."""
    _stage_names(nodes, linter, path)
    _instruction_casing(nodes, linter, path)


def _from_casing(node: Node, at: Location, linter: Linter) -> None:
    args = node.value
    if len(args) == 3 and args[2] != args[2].lower():
        linter.run(STAGE_NAME_CASING, at, f"Stage name '{args[2]}' should be lowercase",
                   node.comments)  # fmt: skip
    written = node.written_cmd or node.cmd
    if len(args) >= 3 and written in (written.lower(), written.upper()):
        keyword = args[1]
        expected = keyword.lower() if written == written.lower() else keyword.upper()
        if keyword != expected:
            linter.run(FROM_AS_CASING, at,
                       f"'{keyword}' and '{written}' keywords' casing do not match",
                       node.comments)  # fmt: skip
    if len(args) == 3 and args[1].lower() == "as":
        _description(linter, "FROM", [args[2].lower()], node, at)


def _description(
    linter: Linter, instruction: str, keys: list[str], node: Node, at: Location
) -> None:
    if not node.comments or not keys:
        return
    if node.comments[-1].split(" ")[0] in keys:
        return
    example = keys[0] if len(keys) == 1 else "<arg_key>"
    linter.run(INVALID_DEFINITION_DESCRIPTION, at,
               f"Comment for {instruction} should follow the format: `# {example} <description>`",
               node.comments)  # fmt: skip


def _stages(nodes: Sequence[Node]) -> list[tuple[Node, list[Node]]]:
    """Each FROM with the instructions of its stage (ARGs before the first FROM left out)."""
    out: list[tuple[Node, list[Node]]] = []
    for node in nodes:
        if node.cmd == "FROM":
            out.append((node, []))
        elif out:
            out[-1][1].append(node)
    return out


def _stage_names(nodes: Sequence[Node], linter: Linter, path: str) -> None:
    seen: set[str] = set()
    for frm, _ in _stages(nodes):
        if len(frm.value) != 3:
            continue
        name = frm.value[2].lower()
        at = Location(path, frm.start_line, frm.end_line)
        if name in RESERVED_STAGE_NAMES:
            linter.run(
                RESERVED_STAGE_NAME,
                at,
                f"Stage name should not use the same name as reserved stage {quote(name)}",
            )
        if name in seen:
            linter.run(
                DUPLICATE_STAGE_NAME,
                at,
                f"Duplicate stage name {quote(name)}, stage names should be unique",
            )
        seen.add(name)


def _instruction_casing(nodes: Sequence[Node], linter: Linter, path: str) -> None:
    written = [(n.written_cmd or n.cmd, n) for frm, body in _stages(nodes) for n in (frm, *body)]
    lower = sum(1 for name, _ in written if name == name.lower())
    upper = sum(1 for name, _ in written if name != name.lower() and name == name.upper())
    majority_lower = lower > upper
    for name, node in written:
        if majority_lower and name != name.lower():
            casing = "lowercase"
        elif not majority_lower and name != name.upper():
            casing = "uppercase"
        else:
            continue
        linter.run(
            CONSISTENT_INSTRUCTION_CASING,
            Location(path, node.start_line, node.end_line),
            f"Command '{name}' should match the case of the command majority ({casing})",
        )


# rules about values -----------------------------------------------------------------------

_SECRET: Final = re.compile(
    r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)"
    r"(?:_|$)"
)
_NOT_SECRET: Final = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")


def looks_secret(name: str) -> bool:
    """SecretsUsedInArgOrEnv: a name with a secret-like word and none of public/file/version."""
    return _SECRET.search(name) is not None and _NOT_SECRET.search(name) is None


def undefined_var_message(name: str, suggestion: str) -> str:
    message = f"Usage of undefined variable '${name}'"
    return message + (f" (did you mean ${suggestion}?)" if suggestion else "")
