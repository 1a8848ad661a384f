"""The instructions that change a stage's variables and image config (and WORKDIR, which also
makes its directory), resolved here into the config and its history as BuildKit writes them."""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable
from typing import Final

from polyarch.frontend import gofmt
from polyarch.frontend.convert.lints import Lints
from polyarch.frontend.convert.request import ConvertRequest
from polyarch.frontend.convert.state import StageContext, State
from polyarch.frontend.convert.vertices import Vertices
from polyarch.frontend.convert.words import Words, error_at
from polyarch.frontend.dockerfile import checks
from polyarch.frontend.dockerfile.instructions import Instruction
from polyarch.frontend.dockerfile.shell import ExpansionError
from polyarch.graph.model import PlanStep
from polyarch.graph.ops import FileOp, Mkdir
from polyarch.oci.config import Healthcheck

Handler = Callable[[Instruction, State, StageContext], None]

_MIN_DURATION: Final = 1_000_000  # 1 ms, BuildKit's minimum for HEALTHCHECK durations


class Metadata:
    def __init__(
        self, request: ConvertRequest, words: Words, lints: Lints, vertices: Vertices
    ) -> None:
        self.req = request
        self.words = words
        self.lints = lints
        self.vertices = vertices
        self.consumed: set[str] = set()  # build arguments some ARG took

    def handlers(self) -> dict[str, Handler]:
        return {
            "ARG": self.arg, "ENV": self.env, "LABEL": self.label,
            "MAINTAINER": self.maintainer, "USER": self.user, "SHELL": self.shell,
            "STOPSIGNAL": self.stopsignal, "VOLUME": self.volume, "EXPOSE": self.expose,
            "CMD": self.cmd, "ENTRYPOINT": self.entrypoint, "HEALTHCHECK": self.healthcheck,
            "ONBUILD": self.onbuild, "WORKDIR": self.workdir,
        }  # fmt: skip

    def _expand(self, word: str, st: State, ins: Instruction) -> str:
        return self.words.expand(word, st.env, ins)

    # variables -------------------------------------------------------------------------

    def arg(self, ins: Instruction, st: State, ctx: StageContext) -> None:
        shown: list[str] = []
        for name, default in ins.arg_declarations():
            if checks.looks_secret(name):
                self.lints.lint(checks.SECRETS_USED_IN_ARG_OR_ENV, ins,
                                f"Do not use ARG or ENV instructions for sensitive data (ARG "
                                f"{gofmt.quote(name)})")  # fmt: skip
            value: str | None
            if name in self.req.build_args:
                self.consumed.add(name)
                value = self.req.build_args[name]
            elif default is not None:
                if self.lints.linting:
                    unmatched = self.lints.unmatched((default,), (), st.env)
                    self.lints.report_unmatched(unmatched, ins, st)
                value = self._expand(default, st, ins)
            elif name in ctx.glob:
                value = ctx.glob[name]
            else:
                value = None
            st.declared[name] = value
            if value is not None:
                st.env[name] = value
            names = [k for k, _ in st.build_args]
            if name in names:
                st.build_args[names.index(name)] = (name, value)
            else:
                st.build_args.append((name, value))
            shown.append(name if value is None else f"{name}={value}")
        st.meta(ins, "ARG " + " ".join(shown))

    def env(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        # Every word is expanded with the variables as they were before the instruction, as
        # BuildKit expands them: `ENV a=1 b=$a` gives b the earlier value of a.
        pairs = [(self._expand(n, st, ins), self._expand(v, st, ins)) for n, v in ins.pairs()]
        shown: list[str] = []
        for key, text in pairs:
            if ins.legacy:
                self.lints.lint(checks.LEGACY_KEY_VALUE_FORMAT, ins, _legacy_detail(ins))
            if checks.looks_secret(key):
                self.lints.lint(checks.SECRETS_USED_IN_ARG_OR_ENV, ins,
                                "Do not use ARG or ENV instructions for sensitive data (ENV "
                                f"{gofmt.quote(key)})")  # fmt: skip
            st.env.pop(key, None)
            st.env[key] = text
            st.config = st.config.with_env(key, text)
            shown.append(f"{key}={text}")
        st.meta(ins, "ENV " + " ".join(shown))

    def label(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        labels = dict(st.config.labels)
        shown: list[str] = []
        for name, value in ins.pairs():
            key, text = self._expand(name, st, ins), self._expand(value, st, ins)
            if ins.legacy:
                self.lints.lint(checks.LEGACY_KEY_VALUE_FORMAT, ins, _legacy_detail(ins))
            labels[key] = text
            shown.append(f"{key}={text}")
        st.config = st.config.replace(labels=labels)
        st.meta(ins, "LABEL " + " ".join(shown))

    # the config ------------------------------------------------------------------------

    def maintainer(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        st.config = st.config.replace(author=ins.args[0])
        st.meta(ins, f"MAINTAINER {ins.args[0]}")

    def user(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        user = self._expand(ins.args[0], st, ins)
        st.config = st.config.replace(user=user)
        st.meta(ins, f"USER {user}")

    def shell(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        st.config = st.config.replace(shell=tuple(ins.args))
        st.meta(ins, "SHELL " + gofmt.plain_list(ins.args), ins.original.strip())

    def stopsignal(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        signal = self._expand(ins.args[0], st, ins)
        if not _valid_signal(signal):
            raise error_at(ins, f"Invalid signal: {signal}")
        st.config = st.config.replace(stop_signal=signal)
        st.meta(ins, f"STOPSIGNAL {signal}")

    def volume(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        volumes = [self._expand(w, st, ins) for w in ins.args]
        if any(not v for v in volumes):
            raise error_at(ins, "VOLUME specified can not be an empty string")
        st.config = st.config.replace(volumes=tuple(sorted({*st.config.volumes, *volumes})))
        st.meta(ins, "VOLUME " + gofmt.plain_list(volumes), "VOLUME " + " ".join(volumes))

    def expose(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        ports: list[str] = []
        words: list[str] = []
        for word in sorted(ins.args):
            try:
                expanded = self.words.lexer.process_words(word, st.env)
            except ExpansionError as exc:
                raise error_at(ins, str(exc)) from None
            words.extend(expanded)
            for port in expanded:
                ports.extend(self._port_specs(port, ins))
        st.config = st.config.replace(exposed_ports=tuple(sorted({*st.config.exposed_ports,
                                                                   *ports})))  # fmt: skip
        st.meta(ins, "EXPOSE " + gofmt.plain_list(ports), "EXPOSE " + " ".join(words))

    def _port_specs(self, raw: str, ins: Instruction) -> list[str]:
        """`[ip:][host:]port[-end][/proto]` -> `port/proto` entries, as BuildKit's parsePort
        reads them (and checks them: a protocol's case, an address or host port)."""
        parts = raw.split(":")
        if len(parts) == 1:
            ip, host, container = "", "", parts[0]
        elif len(parts) == 2:
            ip, host, container = "", parts[0], parts[1]
        else:
            ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
        number, _, proto = container.partition("/")
        if not number:
            raise error_at(ins, f"invalid port: {gofmt.quote(raw)}: no port specified")
        if proto.lower() not in ("", "tcp", "udp", "sctp"):
            raise error_at(ins, f"invalid port: {gofmt.quote(raw)}: invalid proto: {proto}")
        proto = proto or "tcp"
        if proto != proto.lower():
            self.lints.lint(checks.EXPOSE_PROTO_CASING, ins, f"Defined protocol '{raw}' in "
                            "EXPOSE instruction should be lowercase")  # fmt: skip
        if ip or host:
            self.lints.lint(
                checks.EXPOSE_INVALID_FORMAT, ins, "EXPOSE instruction should not define an IP "
                f"address or host-port mapping, found '{raw}'",
            )  # fmt: skip
        _check_ip(ip, ins)
        ports = _port_range(number)
        if ports is None:
            raise error_at(ins, f"invalid containerPort: {number}")
        if host:
            hosts = _port_range(host)
            if hosts is None:
                raise error_at(ins, f"invalid hostPort: {host}")
            if ports[1] - ports[0] != hosts[1] - hosts[0] and ports[0] != ports[1]:
                raise error_at(ins, "invalid ranges specified for container and host Ports: "
                                    f"{number} and {host}")  # fmt: skip
        return [f"{p}/{proto.lower()}" for p in range(ports[0], ports[1] + 1)]

    # commands --------------------------------------------------------------------------

    def _command(self, ins: Instruction, st: State) -> tuple[str, ...]:
        args = tuple(ins.args)
        if ins.json:
            return args
        return (*st.shell, " ".join(args)) if args else ()

    def cmd(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        self.lints.shell_form_check(ins, st)
        argv = self._command(ins, st)
        st.config = st.config.replace(cmd=argv, args_escaped=True)
        st.cmd_set = True
        st.meta(ins, f"CMD {gofmt.quoted_list(argv)}", ins.original.strip())

    def entrypoint(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        self.lints.shell_form_check(ins, st)
        argv = self._command(ins, st)
        st.config = st.config.replace(entrypoint=argv)
        if not st.cmd_set:
            st.config = st.config.replace(cmd=None)  # resets a CMD not set in this stage
        st.meta(ins, f"ENTRYPOINT {gofmt.quoted_list(argv)}", ins.original.strip())

    def healthcheck(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        self.lints.shell_form_check(ins, st)
        args = list(ins.args)
        if args[0].upper() == "NONE":
            check = Healthcheck(("NONE",))
        else:
            test = ("CMD", *args[1:]) if ins.json else ("CMD-SHELL", " ".join(args[1:]))
            durations: list[int] = []
            for flag in ("interval", "timeout", "start-period", "start-interval"):
                text = ins.flag(flag) or ""
                try:
                    value = gofmt.parse_duration(text) if text else 0
                except ValueError:
                    raise error_at(ins, f"invalid duration {text!r} for --{flag}") from None
                if value and value < _MIN_DURATION:
                    raise error_at(ins, f'Interval "{flag}" cannot be less than 1ms')
                if value < 0:
                    raise error_at(ins, f'Interval "{flag}" cannot be negative')
                durations.append(value)
            retries = int(ins.flag("retries") or 0)
            interval, timeout, start_period, start_interval = durations
            check = Healthcheck(test, interval, timeout, start_period, start_interval, retries)
        st.config = st.config.replace(healthcheck=check)
        st.meta(ins, "HEALTHCHECK " + _healthcheck_text(check), ins.original.strip())

    def onbuild(self, ins: Instruction, st: State, _ctx: StageContext) -> None:
        # BuildKit records the trigger in the config and writes no history for it.
        st.config = st.config.replace(onbuild=(*st.config.onbuild, ins.args[0]))
        st.plan.append(PlanStep(ins.original.strip(), None, ins.location))

    def workdir(self, ins: Instruction, st: State, ctx: StageContext) -> None:
        path = self._expand(ins.args[0], st, ins)
        if not st.workdir_set and not path.startswith("/"):
            self.lints.lint(checks.WORKDIR_RELATIVE_PATH, ins,
                            f"Relative workdir {gofmt.quote(path)} can have unexpected results "
                            "if the base image changes")  # fmt: skip
        st.workdir_set = True
        workdir = posixpath.normpath(posixpath.join(st.workdir, path))
        if workdir.startswith("//"):
            workdir = workdir[1:]
        st.config = st.config.replace(working_dir=workdir)
        if workdir == "/":
            st.meta(ins, f"WORKDIR {workdir}")
            return
        # made with the stage's current USER as owner, as BuildKit's dispatchWorkdir does
        op = FileOp((Mkdir(workdir, 0o755, st.user),))
        head = self.vertices.add(op, (st.head,), f"WORKDIR {workdir}", ctx.platform, ins)
        st.stepped(head, f"WORKDIR {workdir}", f"WORKDIR {workdir}", ins)


# helpers ------------------------------------------------------------------------------------

_SIGNALS: Final = frozenset(
    [
        "ABRT",
        "ALRM",
        "BUS",
        "CHLD",
        "CLD",
        "CONT",
        "FPE",
        "HUP",
        "ILL",
        "INT",
        "IO",
        "IOT",
        "KILL",
        "PIPE",
        "POLL",
        "PROF",
        "PWR",
        "QUIT",
        "SEGV",
        "STKFLT",
        "STOP",
        "SYS",
        "TERM",
        "TRAP",
        "TSTP",
        "TTIN",
        "TTOU",
        "URG",
        "USR1",
        "USR2",
        "VTALRM",
        "WINCH",
        "XCPU",
        "XFSZ",
    ]
)


def _check_ip(ip: str, ins: Instruction) -> None:
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise error_at(ins, f"invalid IP address {ip}")
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise error_at(ins, f"invalid IP address: {ip}") from None


def _port_number(text: str) -> int | None:
    """strconv.ParseInt(text, 10) within 0-65535, else None."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if 0 <= value <= 65535 else None


def _port_range(text: str) -> tuple[int, int] | None:
    """`8000` or `8000-9000` (BuildKit's parsePortRange), else None."""
    start_text, dash, end_text = text.partition("-")
    start = _port_number(start_text)
    if start is None:
        return None
    if not dash or start_text == end_text:
        return start, start
    end = _port_number(end_text)
    if end is None or end < start:
        return None
    return start, end


def _legacy_detail(ins: Instruction) -> str:
    return (f'"{ins.name} key=value" should be used instead of legacy "{ins.name} key value" '
            "format")  # fmt: skip


def _valid_signal(text: str) -> bool:
    if text.isdigit():
        return 0 < int(text) < 65
    name = text.upper().removeprefix("SIG")
    if name in _SIGNALS:
        return True
    for base in ("RTMIN", "RTMAX"):
        if name == base:
            return True
        if name.startswith(base) and name[len(base) :][:1] in "+-":
            return name[len(base) + 1 :].isdigit()
    return False


def _healthcheck_text(check: Healthcheck) -> str:
    """Go's %+v of the HealthcheckConfig, as BuildKit writes it in history."""
    return (
        f"{{Test:{gofmt.plain_list(check.test)} "
        f"Interval:{gofmt.format_duration(check.interval)} "
        f"Timeout:{gofmt.format_duration(check.timeout)} "
        f"StartPeriod:{gofmt.format_duration(check.start_period)} "
        f"StartInterval:{gofmt.format_duration(check.start_interval)} "
        f"Retries:{check.retries}}}"
    )
