"""RUN: the command as BuildKit's dispatchRun makes it (heredocs, shell form), its mounts
(`--mount=type=bind|cache|tmpfs|secret|ssh`), network and security modes, and its history."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from polyarch.frontend.convert.request import INLINE_DIR, PROXY_ARGS, ConvertRequest
from polyarch.frontend.convert.sources import Sources
from polyarch.frontend.convert.state import StageContext, State
from polyarch.frontend.convert.vertices import Vertices
from polyarch.frontend.convert.words import Words, error_at
from polyarch.frontend.dockerfile.instructions import Instruction
from polyarch.frontend.dockerfile.syntax import Heredoc, chomp, heredoc_word
from polyarch.frontend.runmount import MountSpec, MountSyntaxError, parse_mount
from polyarch.graph.model import OnceCheck
from polyarch.graph.ops import (
    BindMount,
    CacheMount,
    ExecOp,
    FileOp,
    Mkfile,
    Mount,
    SecretMount,
    SshMount,
    TmpfsMount,
)
from polyarch.platform import runs_natively


class RunStep:
    def __init__(
        self, request: ConvertRequest, words: Words, vertices: Vertices, sources: Sources
    ) -> None:
        self.req = request
        self.words = words
        self.vertices = vertices
        self.sources = sources

    def __call__(self, ins: Instruction, st: State, ctx: StageContext) -> None:
        network, security = self._modes(ins)
        inputs: list[str] = [st.head]
        mounts: list[Mount] = []
        checks: list[OnceCheck] = []
        argv, description, inline = self._command(ins, st)
        if inline is not None:
            doc = self.vertices.add(FileOp((Mkfile(inline.name, inline.content, 0o755),)),
                                    (self.vertices.scratch(ctx.platform),),
                                    "preparing inline document", ctx.platform, ins,
                                    internal=True)  # fmt: skip
            inputs.append(doc)
            mounts.append(BindMount(INLINE_DIR, len(inputs) - 1, "/", False))
        for text in ins.list_flag("mount"):
            mounts.append(self._mount(text, ins, st, ctx, inputs, checks))
        env = tuple(f"{k}={v}" for k, v in st.env.items())
        proxy = tuple(
            f"{name}={self.req.build_args[name]}"
            for name in sorted(self.req.build_args)
            if name in PROXY_ARGS and name not in st.declared
        )  # fmt: skip
        op = ExecOp(tuple(argv), env, st.workdir, ctx.platform, st.user, tuple(mounts),
                    network, security, proxy, self.req.extra_hosts, self.req.ulimits,  # type: ignore[arg-type]
                    self.req.shm_size)  # fmt: skip
        emulated = not runs_natively(self.req.build_platform, ctx.platform)
        head = self.vertices.add(
            op, tuple(inputs), description, ctx.platform, ins, emulated=emulated, checks=checks
        )
        st.stepped(head, f"RUN {_history(argv, st)} # buildkit", description, ins)

    def _modes(self, ins: Instruction) -> tuple[str, str]:
        """The step's network and security modes, checked."""
        for flag in ins.flags:
            if flag not in ("mount", "network", "security"):
                raise error_at(ins, f"RUN --{flag} is not supported by polyarch")
        network = ins.flag("network") or self.req.network
        security = ins.flag("security") or "sandbox"
        if network not in ("default", "none", "host"):
            raise error_at(ins, f'invalid network mode "{network}" (use default, none or host)')
        if security not in ("sandbox", "insecure"):
            raise error_at(ins, f'security "{security}" is not valid (use sandbox or insecure)')
        if security == "insecure" and "security.insecure" not in self.req.allow:
            raise error_at(
                ins, "RUN --security=insecure needs the security.insecure entitlement: start "
                "the build with --allow security.insecure",
            )  # fmt: skip
        return network, security

    def _command(self, ins: Instruction, st: State) -> tuple[tuple[str, ...], str, Heredoc | None]:
        """(argv, description, inline document to mount) as BuildKit's dispatchRun makes them."""
        if ins.json:
            return tuple(ins.args), "RUN " + str(list(ins.args)), None
        line = " ".join(ins.args)
        description = "RUN " + line
        if not ins.heredocs:
            return (*st.shell, line), description, None
        spec = heredoc_word(line.strip())
        single = spec.name if spec is not None else None
        if single is not None and single == ins.heredocs[0].name:
            doc = ins.heredocs[0]
            data = chomp(doc.content) if doc.chomp else doc.content
            description += f" ({_summary(doc.content)})"
            if data.startswith("#!"):
                path = posixpath.join(INLINE_DIR, doc.name)
                inline = Heredoc(doc.name, doc.file_descriptor, data, doc.expand, False)
                return (*st.shell, path), description, inline
            return (*st.shell, data), description, None
        # a command with heredocs: the shell gets it whole, bodies and terminators included
        full = line + "".join("\n" + doc.content + doc.name for doc in ins.heredocs)
        return (*st.shell, full), description, None

    def _mount(
        self,
        text: str,
        ins: Instruction,
        st: State,
        ctx: StageContext,
        inputs: list[str],
        checks: list[OnceCheck],
    ) -> Mount:
        raw_from = _raw_field(text, "from")
        if raw_from is not None and "$" in raw_from[:-1]:
            raise error_at(ins, "'from' doesn't support variable expansion, define alias stage "
                                "instead")  # fmt: skip
        try:
            spec = parse_mount(text, lambda word: self.words.expand(word, st.env, ins))
        except MountSyntaxError as exc:
            raise error_at(ins, str(exc)) from None
        if spec.type == "secret":
            return _secret_mount(spec, ins)
        if spec.type == "ssh":
            if spec.source:
                raise error_at(ins, "ssh does not support source")
            return SshMount(spec.id or "default", spec.target or "/run/buildkit/ssh_agent.0",
                            spec.required, spec.mode if spec.mode is not None else 0o600,
                            spec.uid or 0, spec.gid or 0)  # fmt: skip
        target = spec.target
        if not target:
            raise error_at(ins, "mount target must be set (target=PATH)")
        target = posixpath.normpath(posixpath.join(st.workdir, target))
        if target == "/":
            raise error_at(ins, f'invalid mount target "{target}"')
        if spec.type == "tmpfs":
            return TmpfsMount(target, spec.size)
        source = posixpath.normpath(posixpath.join("/", spec.source))
        index: int | None = None
        if spec.from_:
            key, _shown, check = self.sources.from_input(spec.from_, ctx, ins, (source,),
                                                         len(inputs))  # fmt: skip
            checks.extend([check] if check else [])
            inputs.append(key)
            index = len(inputs) - 1
        elif spec.type == "bind":
            inputs.append(self.vertices.context_selection((source,), ctx.platform, ins))
            index = len(inputs) - 1
        if spec.type == "cache":
            return CacheMount(
                target, spec.id or target, spec.sharing or "shared",  # type: ignore[arg-type]
                index, source, spec.mode if spec.mode is not None else 0o755, spec.uid or 0,
                spec.gid or 0, spec.readonly,
            )  # fmt: skip
        assert index is not None
        return BindMount(target, index, source, not spec.readonly)


def _secret_mount(spec: MountSpec, ins: Instruction) -> SecretMount:
    secret_id = spec.source or spec.id
    if not secret_id:
        if not spec.target:
            raise error_at(ins, "one of source, target required")
        secret_id = posixpath.basename(spec.target)
    target = spec.target
    if spec.env is None and not target:
        target = "/run/secrets/" + posixpath.basename(secret_id)
    return SecretMount(secret_id, target, spec.env or "", spec.required,
                       spec.mode if spec.mode is not None else 0o400, spec.uid or 0,
                       spec.gid or 0)  # fmt: skip


def _history(argv: Sequence[str], st: State) -> str:
    """BuildKit's runCommandString: `|N K=V ...` for the stage's ARGs, then the argv."""
    shown: list[str] = []
    for name, value in st.build_args:
        current = st.env.get(name)
        shown.append(f"{name}={current if current is not None else (value or '')}")
    prefix = [f"|{len(shown)}", *shown] if shown else []
    return " ".join([*prefix, *argv])


def _raw_field(text: str, key: str) -> str | None:
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip().lower() == key:
            return value
    return None


def _summary(doc: str) -> str:
    lines = [line for line in doc.split("\n") if line.strip()]
    if not lines:
        return ""
    first = lines[0].strip()
    return first + ("..." if len(lines) > 1 else "")
