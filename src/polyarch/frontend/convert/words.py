"""Expanding a Dockerfile's words as BuildKit does, and errors located at an instruction."""

from __future__ import annotations

from collections.abc import Mapping

from polyarch.errors import DockerfileError
from polyarch.frontend.dockerfile.instructions import Instruction
from polyarch.frontend.dockerfile.shell import ExpansionError, ShellLexer


def error_at(ins: Instruction, message: str) -> DockerfileError:
    return DockerfileError(message, path=ins.location.path, line=ins.location.start_line)


class Words:
    """The Dockerfile's lexers (its escape character): words, and heredoc bodies raw."""

    def __init__(self, escape: str) -> None:
        self.lexer = ShellLexer(escape)
        self.raw_lexer = ShellLexer(escape, skip_process_quotes=True)

    def expand(self, word: str, scope: Mapping[str, str], ins: Instruction) -> str:
        try:
            return self.lexer.process_word(word, scope)
        except ExpansionError as exc:
            raise error_at(ins, str(exc)) from None

    def expand_raw(self, text: str, scope: Mapping[str, str], ins: Instruction) -> str:
        """A heredoc body: variables and escapes, quotes kept (BuildKit's ExpandRaw)."""
        try:
            return self.raw_lexer.process_word(text, scope)
        except ExpansionError as exc:
            raise error_at(ins, str(exc)) from None
