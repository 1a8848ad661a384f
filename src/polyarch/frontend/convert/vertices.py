"""The graph's vertices as the conversion makes them: identical vertices share one key."""

from __future__ import annotations

from collections.abc import Sequence

from polyarch.frontend.dockerfile.instructions import Instruction
from polyarch.frontend.gitref import GitRef
from polyarch.graph.model import OnceCheck, Vertex
from polyarch.graph.ops import ContextSource, GitSource, Op, Scratch
from polyarch.platform import Platform


class Vertices:
    def __init__(self, ignore: tuple[str, ...]) -> None:
        self.ignore = ignore  # the main context's .dockerignore patterns
        self.table: dict[str, Vertex] = {}
        # vertex -> what it takes from build-once stages, for the check of their output
        self.checks: dict[str, list[OnceCheck]] = {}

    def add(
        self,
        op: Op,
        inputs: tuple[str, ...],
        description: str,
        platform: Platform,
        ins: Instruction | None,
        *,
        emulated: bool = False,
        internal: bool = False,
        checks: Sequence[OnceCheck] = (),
    ) -> str:
        vertex = Vertex(op, inputs, description, platform, ins.location if ins else None,
                        emulated, internal)  # fmt: skip
        if vertex.key not in self.table:
            self.table[vertex.key] = vertex
        for check in checks:
            listed = self.checks.setdefault(vertex.key, [])
            if check not in listed:
                listed.append(check)
        return vertex.key

    def scratch(self, platform: Platform) -> str:
        return self.add(Scratch(), (), "scratch", platform, None, internal=True)

    def context_selection(
        self, paths: tuple[str, ...], platform: Platform, ins: Instruction, *, name: str = ""
    ) -> str:
        """What a copy or mount takes from a build context (the main one, or a named one: the
        ignore rules are the main one's only, as in BuildKit)."""
        source = ContextSource(name or "context", paths, () if name else self.ignore)
        shown = f"context {name + ' ' if name else ''}{' '.join(paths)}"
        return self.add(source, (), shown, platform, ins, internal=True)

    def git_source(
        self, git: GitRef, shown: str, platform: Platform, ins: Instruction, *,
        keep: bool = False, checksum: str = "",
    ) -> str:  # fmt: skip
        source = GitSource(git.remote, git.ref, git.subdir, keep, checksum, git.submodules)
        return self.add(source, (), shown, platform, ins, internal=True)

    def from_context(self, key: str) -> bool:
        """The vertex is a build context's or a git repository's files (owners not kept)."""
        return isinstance(self.table[key].op, ContextSource | GitSource)
