"""The Dockerfile frontend: syntax as BuildKit parses it, typed instructions, ignore rules (pure).

`load(text, path)` is the usual entry: text to a checked `Dockerfile` of stages.
"""

from polyarch.frontend.dockerfile.instructions import (
    Dockerfile,
    Instruction,
    Stage,
    build,
)
from polyarch.frontend.dockerfile.shell import ExpansionError, ShellLexer
from polyarch.frontend.dockerfile.syntax import Heredoc, Node, ParseResult, parse
from polyarch.graph.model import Location
from polyarch.patterns import IgnoreMatcher, read_patterns


def load(text: str, path: str = "Dockerfile") -> Dockerfile:
    """Parse and check a Dockerfile (raises `DockerfileError` with file:line)."""
    return build(parse(text, path), path)


__all__ = [
    "Dockerfile",
    "ExpansionError",
    "Heredoc",
    "IgnoreMatcher",
    "Instruction",
    "Location",
    "Node",
    "ParseResult",
    "ShellLexer",
    "Stage",
    "build",
    "load",
    "parse",
    "read_patterns",
]
