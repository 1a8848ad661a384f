"""BuildKit's build checks, and polyarch's own warnings, as the conversion meets them.

Checks run while the first target platform is converted (BuildKit checks that conversion
only); a warning is told once per message and line.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Mapping, Sequence
from typing import Final

from polyarch.errors import InvalidPlatformError, InvalidReferenceError
from polyarch.frontend import gofmt
from polyarch.frontend.convert.request import PLATFORM_ARGS, ConvertRequest, platform_args
from polyarch.frontend.convert.state import StageContext, State
from polyarch.frontend.convert.words import Words
from polyarch.frontend.dockerfile import checks
from polyarch.frontend.dockerfile.checks import Linter
from polyarch.frontend.dockerfile.instructions import Instruction
from polyarch.frontend.dockerfile.shell import ExpansionError
from polyarch.frontend.runmount import MountSyntaxError, parse_mount
from polyarch.graph.model import Location, PlanWarning
from polyarch.oci.config import ImageConfig
from polyarch.patterns import IgnoreMatcher
from polyarch.platform import Platform
from polyarch.reference import Reference

# BuildKit's SBOM switches: build arguments that never become variables
_NON_ENV_ARGS: Final = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


class Lints:
    def __init__(self, request: ConvertRequest, words: Words) -> None:
        self.req = request
        self.df = request.dockerfile
        self.words = words
        self.warnings: list[PlanWarning] = []
        self._warned: set[tuple[str, int | None]] = set()
        config = checks.check_config(self.df.directives.get("check"), dict(request.build_args),
                                     self.df.path)  # fmt: skip
        self.linter = Linter(config, self.warnings.append)
        # BuildKit checks what the first target platform's conversion meets, once.
        self.linting = False
        self._ignore = IgnoreMatcher(request.ignore) if request.ignore else None

    def warn(self, message: str, location: Location | None) -> None:
        key = (message, location.start_line if location else None)
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(PlanWarning(message, location))

    def lint(
        self,
        rule: checks.Rule,
        at: Instruction | Location | None,
        detail: str,
        comments: Sequence[str] | None = None,
    ) -> None:
        """A build check, while the first target platform is converted; an instruction brings
        its own `# check=` comments."""
        if not self.linting:
            return
        location: Location | None = at if not isinstance(at, Instruction) else at.location
        if isinstance(at, Instruction) and comments is None:
            comments = at.comments
        self.linter.run(rule, location, detail, comments or ())

    # FROM lines ----------------------------------------------------------------------------

    def from_checks(self, scope: Mapping[str, str]) -> None:
        """Every stage's FROM line, as BuildKit checks them before converting any: the ARGs
        it uses are declared, and its --platform is neither the default nor a constant.
        `scope` is the first target platform's global scope."""
        declared = [name for ins in self.df.meta_args for name, _ in ins.arg_declarations()]
        known = sorted({*declared, *scope, "BUILDOSVERSION", "TARGETOSVERSION"})
        lexer = self.words.lexer
        for stage in self.df.stages:
            frm = stage.from_instruction
            try:
                _, _, unmatched = lexer.process_word_matches(stage.base, scope)
            except ExpansionError:
                continue  # the conversion says what is wrong with it
            self._undeclared_from_args(unmatched, known, frm)
            if stage.platform is None:
                continue
            try:
                text, matched, unmatched = lexer.process_word_matches(stage.platform, scope)
            except ExpansionError:
                continue
            self._undeclared_from_args(unmatched, known, frm)
            if matched == {"TARGETPLATFORM"} and not unmatched:
                if text == scope.get("TARGETPLATFORM"):
                    self.lint(checks.REDUNDANT_TARGET_PLATFORM, frm,
                              f"Setting platform to predefined {stage.platform} in FROM is "
                              "redundant as this is the default behavior")  # fmt: skip
            elif not matched and not unmatched:
                try:
                    constant = Platform.parse(text)
                except InvalidPlatformError:
                    continue
                name = stage.name or ""
                if constant.os not in name and constant.architecture not in name:
                    self.lint(checks.FROM_PLATFORM_FLAG_CONST_DISALLOWED, frm,
                              "FROM --platform flag should not use constant value "
                              f"{gofmt.quote(text)}")  # fmt: skip

    def _undeclared_from_args(
        self, unmatched: set[str], known: Sequence[str], frm: Instruction
    ) -> None:
        for name in sorted(unmatched - set(known)):
            hint = checks.suggest(name, known)
            self.lint(checks.UNDEFINED_ARG_IN_FROM, frm,
                      f"FROM argument '{name}' is not declared"
                      + (f" (did you mean {hint}?)" if hint else ""))  # fmt: skip

    def default_arg_checks(self, target_name: str) -> None:
        """InvalidDefaultArgInFrom: with the ARGs' defaults only (no build arguments), every
        FROM must still name an image."""
        platform = self.req.platforms[0]
        scope = platform_args(platform, self.req.build_platform, target_name)
        scope.update((k, v) for k, v in self.req.build_args.items() if k in scope)
        lexer = self.words.lexer
        try:
            for ins in self.df.meta_args:
                for name, default in ins.arg_declarations():
                    if default is not None:
                        scope[name] = lexer.process_word(default, scope)
            names = [(s, lexer.process_word(s.base, scope)) for s in self.df.stages]
        except ExpansionError:
            return  # the conversion says what is wrong
        for stage, name in names:
            if name.startswith("oci-layout://"):
                continue
            try:
                Reference.parse(name)
            except InvalidReferenceError:
                self.lint(checks.INVALID_DEFAULT_ARG_IN_FROM, stage.from_instruction,
                          f"Default value for ARG {stage.base} results in empty or invalid base "
                          "image name")  # fmt: skip

    def base_platform_check(
        self, name: str, expected: Platform, config: ImageConfig, frm: Instruction
    ) -> None:
        if (config.os, config.architecture) == (expected.os, expected.architecture):
            return
        actual = Platform.of(config.os, config.architecture, config.variant)
        self.lint(checks.INVALID_BASE_IMAGE_PLATFORM, frm,
                  f"Base image {name} was pulled with platform {gofmt.quote(str(actual))}, "
                  f"expected {gofmt.quote(str(expected))} for current build")  # fmt: skip

    # variables -----------------------------------------------------------------------------

    def unmatched(
        self, words: Sequence[str], raw_words: Sequence[str], scope: Mapping[str, str]
    ) -> set[str]:
        """The variables these words use that `scope` does not have (as BuildKit's
        expansion records them); words that do not expand are left to the conversion."""
        out: set[str] = set()
        for lexer, texts in ((self.words.lexer, words), (self.words.raw_lexer, raw_words)):
            for text in texts:
                with contextlib.suppress(ExpansionError):
                    out |= lexer.process_word_matches(text, scope)[2]
        return out

    def undefined_vars(self, ins: Instruction, st: State) -> None:
        """UndefinedVar over the words BuildKit expands before an instruction runs."""
        kind = ins.kind
        words: list[str] = []
        raw: list[str] = []
        if kind in ("ENV", "LABEL"):
            words = [w for pair in ins.pairs() for w in pair]
        elif kind in ("COPY", "ADD"):
            paths, inline, dest = ins.sources_and_dest()
            flags = ("chown", "chmod", "checksum") if kind == "ADD" else ("chown", "chmod")
            words = [*(ins.flag(f) or "" for f in flags), *paths, dest]
            raw = [doc.content for doc in inline if doc.expand]
        elif kind in ("WORKDIR", "USER", "STOPSIGNAL", "VOLUME"):
            words = list(ins.args)
        elif kind == "RUN":
            found: set[str] = set()

            def record(word: str) -> str:
                found.update(self.unmatched((word,), (), st.env))
                return self.words.lexer.process_word(word, st.env)

            for text in ins.list_flag("mount"):
                with contextlib.suppress(MountSyntaxError, ExpansionError):
                    parse_mount(text, record)
            self.report_unmatched(found, ins, st)
            return
        else:
            return
        self.report_unmatched(self.unmatched(words, raw, st.env), ins, st)

    def report_unmatched(self, unmatched: set[str], ins: Instruction, st: State) -> None:
        if not st.base_known:
            return  # the base image's variables are not known
        declared = {name for name, _ in st.build_args}
        for name in sorted(unmatched - declared - _NON_ENV_ARGS):
            hint = checks.suggest(name, list(st.env))
            self.lint(checks.UNDEFINED_VAR, ins, checks.undefined_var_message(name, hint))

    def check_platform_args(self, ins: Instruction, st: State, ctx: StageContext) -> None:
        """A RUN command's shell text using TARGETARCH and the like without declaring them
        (the shell gets nothing; BuildKit's UndefinedVar does not look at RUN, and covers the
        other instructions and RUN's mounts)."""
        for name in sorted(self.words.lexer.names_used(" ".join(ins.args)) & set(PLATFORM_ARGS)):
            if name not in st.declared and name not in st.env:
                self.warn(
                    f"{name} is used in stage {ctx.stage.display!r} without `ARG {name}` in "
                    "that stage, so it expands to an empty string; declare it after FROM",
                    ins.location,
                )

    # instructions --------------------------------------------------------------------------

    def shell_form_check(self, ins: Instruction, st: State) -> None:
        """CMD, ENTRYPOINT, HEALTHCHECK: said once per stage (the last one wins), and CMD and
        ENTRYPOINT in shell form without a SHELL (signals would reach the shell)."""
        earlier = st.set_at.get(ins.kind)
        if earlier is not None:
            self.lint(checks.MULTIPLE_INSTRUCTIONS_DISALLOWED, earlier,
                      f"Multiple {ins.name} instructions should not be used in the same stage "
                      "because only the last one will be used", ins.comments)  # fmt: skip
        st.set_at[ins.kind] = ins.location
        if ins.kind != "HEALTHCHECK" and not ins.json and not st.config.shell and st.base_known:
            self.lint(checks.JSON_ARGS_RECOMMENDED, ins,
                      f"JSON arguments recommended for {ins.name} to prevent unintended "
                      "behavior related to OS signals")  # fmt: skip

    def ignored_source_check(self, ins: Instruction, source: str) -> None:
        """CopyIgnoredFile: a context source that .dockerignore excludes (not checked when the
        ignore file has `!` exceptions, as BuildKit does not)."""
        if self._ignore is None or self._ignore.has_exclusions:
            return
        path = posixpath.normpath(source) if source else "."
        if path in (".", "/"):
            hit = any(not p.exclusion and p.text in ("*", "**", "**/*")
                      for p in self._ignore.patterns)  # fmt: skip
        else:
            # BuildKit's matcher never matches an absolute source against the patterns.
            hit = not path.startswith("/") and self._ignore.matches(path)
        if hit:
            verb = "Add" if ins.kind == "ADD" else "Copy"
            self.lint(checks.COPY_IGNORED_FILE, ins,
                      f"Attempting to {verb} file {gofmt.quote(path)} that is excluded by "
                      ".dockerignore")  # fmt: skip
