"""QEMU user emulation through the kernel's binfmt_misc, without a privileged container.

What a platform needs is read from the machine: handlers registered in
/proc/sys/fs/binfmt_misc, and the formats Debian's qemu-user-static describes in
/usr/share/binfmts (its exact ELF magic and mask for each architecture). Registering writes
the same definitions to the kernel with the F (fix binary) flag, so the interpreter is opened
once, at registration, and works inside any container or chroot afterwards. Idempotent: a
handler already registered with F is left alone; one without F is replaced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from polyarch.errors import PolyarchError
from polyarch.platform import Platform, runs_natively

BINFMT = Path("/proc/sys/fs/binfmt_misc")
FORMATS = Path("/usr/share/binfmts")


class EmulatorError(PolyarchError):
    """binfmt_misc cannot be mounted or written, or qemu-user-static is missing."""


@dataclass(frozen=True, slots=True)
class Handler:
    """A handler the kernel has registered."""

    name: str
    enabled: bool
    interpreter: str
    flags: str


@dataclass(frozen=True, slots=True)
class Format:
    """A binfmt definition shipped by a package (Debian's binfmt-support format)."""

    name: str
    interpreter: str
    magic: str  # as written in the file: \\x escapes
    mask: str
    offset: str
    preserve: bool

    def register_line(self) -> str:
        flags = "F" + ("P" if self.preserve else "")
        return f":{self.name}:M:{self.offset}:{self.magic}:{self.mask}:{self.interpreter}:{flags}"


@dataclass(frozen=True, slots=True)
class Status:
    platform: Platform
    kind: Literal["native", "emulated", "missing"]
    handler: Handler | None = None
    available: Format | None = None  # installed by qemu-user-static, maybe not registered

    @property
    def fix_binary(self) -> bool:
        return self.handler is not None and "F" in self.handler.flags


def mounted(root: Path = BINFMT) -> bool:
    return (root / "register").exists()


def mount(root: Path = BINFMT) -> None:
    if mounted(root):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mount(b"binfmt_misc", os.fsencode(root), b"binfmt_misc", 0, None) != 0:
        err = ctypes.get_errno()
        raise EmulatorError(
            f"cannot mount binfmt_misc on {root}: {os.strerror(err)} "
            "(run as root: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc)"
        )


def handlers(root: Path = BINFMT) -> dict[str, Handler]:
    out: dict[str, Handler] = {}
    if not mounted(root):
        return out
    for entry in sorted(root.iterdir()):
        if entry.name in ("register", "status"):
            continue
        try:
            lines = entry.read_text().splitlines()
        except OSError:
            continue
        interpreter = next((ln[12:] for ln in lines if ln.startswith("interpreter ")), "")
        flags = next((ln[6:].strip() for ln in lines if ln.startswith("flags:")), "")
        out[entry.name] = Handler(entry.name, "enabled" in lines, interpreter, flags)
    return out


def formats(root: Path = FORMATS) -> dict[str, Format]:
    out: dict[str, Format] = {}
    if not root.is_dir():
        return out
    for entry in sorted(root.glob("qemu-*")):
        fields: dict[str, str] = {}
        for line in entry.read_text().splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
        if "magic" not in fields or "interpreter" not in fields:
            continue
        out[entry.name] = Format(
            entry.name, fields["interpreter"], fields["magic"], fields.get("mask", ""),
            fields.get("offset", "0"), fields.get("preserve") == "yes",
        )  # fmt: skip
    return out


def handler_name(platform: Platform) -> str:
    return f"qemu-{platform.qemu_name}"


def status(platform: Platform, machine: Platform) -> Status:
    if runs_natively(machine, platform):
        return Status(platform, "native")
    name = handler_name(platform)
    handler = handlers().get(name)
    available = formats().get(name)
    if handler is not None and handler.enabled:
        return Status(platform, "emulated", handler, available)
    return Status(platform, "missing", handler, available)


KNOWN: Final = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/386",
                "linux/ppc64le", "linux/s390x", "linux/riscv64")  # fmt: skip


def registered(machine: Platform) -> tuple[Platform, ...]:
    """The common platforms this machine runs through a registered emulator."""
    return tuple(
        p for p in (Platform.parse(t) for t in KNOWN) if status(p, machine).kind == "emulated"
    )


def install(platforms: list[Platform], machine: Platform) -> list[str]:
    """Register F-flag handlers for `platforms`; returns what was done, one line each."""
    mount()
    known = formats()
    done: list[str] = []
    for platform in platforms:
        current = status(platform, machine)
        if current.kind == "native":
            done.append(f"{platform}: native, nothing to do")
            continue
        if current.kind == "emulated" and current.fix_binary:
            shown = current.handler.interpreter if current.handler else ""
            done.append(f"{platform}: already registered ({shown}, F)")
            continue
        fmt = known.get(handler_name(platform))
        if fmt is None or not Path(fmt.interpreter).exists():
            raise EmulatorError(
                f"no emulator for {platform}: install qemu-user-static "
                "(apt-get install qemu-user-static), then run this again"
            )
        existing = BINFMT / fmt.name
        if existing.exists():
            existing.write_text("-1")  # registered without F: replace it
        try:
            (BINFMT / "register").write_text(fmt.register_line())
        except OSError as exc:
            raise EmulatorError(f"cannot register {fmt.name}: {exc}") from None
        done.append(f"{platform}: registered {fmt.interpreter} with the F flag")
    return done
