"""QEMU user emulation through the kernel's binfmt_misc, without a privileged container.

What a platform needs is read from the machine: handlers registered in
/proc/sys/fs/binfmt_misc, and the formats Debian's qemu-user-static describes in
/usr/share/binfmts (its exact ELF magic and mask for each architecture). Registering writes
the same definitions to the kernel with the F (fix binary) flag, so the interpreter is opened
once, at registration, and works inside any container or chroot afterwards. Idempotent: a
handler already registered with F is left alone; one without F is replaced.

Registrations in the kernel are lost at reboot. With `persist`, each handler is also written to
/etc/binfmt.d, where systemd-binfmt registers it again at boot, F flag included (unless a
binfmt.d file of its name already does, as Debian's qemu-user-static ships them).

An emulator runs every variant of its architecture (QEMU's default CPU model is "max": the
latest instruction set it implements), as the kernel runs every variant of its own; QEMU's
user mode runs Linux programs only, so a platform of another OS has no emulator at all.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from polyarch.errors import PolyarchError
from polyarch.platform import Platform, runs_natively

BINFMT = Path("/proc/sys/fs/binfmt_misc")
FORMATS = Path("/usr/share/binfmts")
# Read by systemd-binfmt at boot, in this order; a file in an earlier directory hides one of
# the same name in a later one (binfmt.d(5)). Debian's qemu-user-static ships its handlers in
# the last, with the F flag; the first is where the administrator (and polyarch) writes.
BOOT_DIRS = (Path("/etc/binfmt.d"), Path("/run/binfmt.d"), Path("/usr/local/lib/binfmt.d"),
             Path("/usr/lib/binfmt.d"))  # fmt: skip


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
    kind: Literal["native", "emulated", "missing", "unsupported"]
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
    if platform.os != "linux" or machine.os != "linux":
        return Status(platform, "unsupported")
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


def unsupported(platform: Platform, machine: Platform) -> str:
    """Why no emulator can run `platform` here."""
    return (f"no emulator runs {platform} programs on this {machine} machine: QEMU's user "
            f"mode runs Linux programs only (stages without RUN steps still build)")  # fmt: skip


def install(
    platforms: list[Platform], machine: Platform, *, persist: Sequence[Path] = ()
) -> list[str]:
    """Register F-flag handlers for `platforms`; with `persist` (binfmt.d directories, as
    BOOT_DIRS), also make sure that the init system registers each at boot. Returns what was
    done, one line each."""
    mount()
    known = formats()
    done: list[str] = []
    for platform in platforms:
        current = status(platform, machine)
        if current.kind == "native":
            done.append(f"{platform}: native, nothing to do")
            continue
        if current.kind == "unsupported":
            raise EmulatorError(unsupported(platform, machine))
        fmt = known.get(handler_name(platform))
        if current.kind == "emulated" and current.fix_binary:
            shown = current.handler.interpreter if current.handler else ""
            done.append(f"{platform}: already registered ({shown}, F)")
        else:
            done.append(_register(platform, fmt))
        if persist:
            if fmt is None:
                raise EmulatorError(f"{platform}: its handler was not registered from "
                                    f"qemu-user-static's formats ({FORMATS}), so polyarch "
                                    "cannot write it for boot")  # fmt: skip
            done.append(f"{platform}: {_persist(fmt, persist)}")
    return done


def ensure(platform: Platform, machine: Platform) -> str | None:
    """Register the handler `platform` needs if it is missing and can be registered here (as
    root, qemu-user-static installed). Returns what was done, or None when it was there."""
    current = status(platform, machine)
    if current.kind == "native" or (current.kind == "emulated" and current.fix_binary):
        return None
    if current.kind == "unsupported":
        raise EmulatorError(unsupported(platform, machine))
    mount()
    return _register(platform, formats().get(handler_name(platform)))


def _register(platform: Platform, fmt: Format | None) -> str:
    if fmt is None or not Path(fmt.interpreter).exists():
        raise EmulatorError(
            f"no emulator for {platform}: install qemu-user-static "
            "(apt-get install qemu-user-static), then run this again"
        )
    existing = BINFMT / fmt.name
    try:
        if existing.exists():
            existing.write_text("-1")  # registered without F, or disabled: replace it
        (BINFMT / "register").write_text(fmt.register_line())
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise EmulatorError(f"cannot register {fmt.name}: {why} (as root: polyarch emulators "
                            f"install --platform {platform})") from None  # fmt: skip
    return f"registered {fmt.interpreter} for {platform} with the F flag"


def _persist(fmt: Format, dirs: Sequence[Path]) -> str:
    """Make sure systemd-binfmt registers `fmt` at boot with the F flag: the binfmt.d file of
    its name that boot reads (the first of `dirs` to have one) does, or one is written to
    dirs[0], atomically."""
    name = f"{fmt.name}.conf"
    found = next((d / name for d in dirs if (d / name).is_file()), None)
    flags = _boot_flags(found, fmt.name) if found is not None else None
    if flags is not None and "F" in flags:
        return f"registered at boot by {found} (F flag)"
    target = dirs[0] / name
    text = f"# {fmt.name}: written by polyarch emulators install --persist\n"
    text += fmt.register_line() + "\n"
    try:
        dirs[0].mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.partial")
        partial.write_text(text)
        partial.chmod(0o644)
        partial.replace(target)
    except OSError as exc:
        raise EmulatorError(f"cannot write {target}: {exc.strerror or exc}") from None
    hidden = f", in place of {found}, which lacks the F flag" if found not in (None, target) else ""
    return f"wrote {target}{hidden}: registered at boot by systemd-binfmt"


def _boot_flags(path: Path, name: str) -> str | None:
    """The flags with which the binfmt.d file `path` registers `name` (None: it does not)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in (raw.strip() for raw in lines):
        if line[:1] in ("", "#", ";"):
            continue
        fields = line.split(line[0])  # :name:type:offset:magic:mask:interpreter:flags
        if len(fields) >= 8 and fields[1] == name:
            return fields[7]
    return None
