"""Is a file native code? The check behind build-once: what a stage built once on the build
machine gives to per-platform images must not depend on the machine it was built on."""

from __future__ import annotations

import os
import re
import stat

from polyarch.layers import Root
from polyarch.worker.local.filecopy import Selected, walk_selected

_SUFFIX = re.compile(r"(\.node|\.so(\.\d+)*|\.a|\.o|\.dll|\.dylib|\.exe)$")
_MACHO = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")


def native_kind(head: bytes, name: str) -> str | None:
    """Why a file with these first bytes and this name is native code, or None."""
    if head.startswith(b"\x7fELF"):
        return "an ELF binary"
    if head[:4] in _MACHO:
        return "a Mach-O binary"
    if head.startswith(b"!<arch>\n"):
        return "a static library archive"
    if head.startswith(b"MZ") and name.lower().endswith((".exe", ".dll")):
        return "a Windows PE binary"
    match = _SUFFIX.search(name)
    if match:
        return f"a native module ({match.group(1)})"
    return None


def find_native(root: Root, selected: list[Selected]) -> tuple[str, str] | None:
    """The first native file among what a COPY takes from `root`: (path, why)."""
    for sel in selected:
        for path, _inner, st in walk_selected(root, sel, [], None):
            if not stat.S_ISREG(st.st_mode):
                continue
            with root.parent(path, create=False) as (fd, leaf):
                handle = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            with os.fdopen(handle, "rb") as f:
                head = f.read(8)
            why = native_kind(head, path)
            if why is not None:
                return path, why
    return None


# ELF machine types (e_machine) and word sizes of the platforms polyarch builds for.
ELF_MACHINES: dict[str, tuple[int, int]] = {
    "amd64": (62, 2), "386": (3, 1), "arm64": (183, 2), "arm": (40, 1), "s390x": (22, 2),
    "ppc64le": (21, 2), "riscv64": (243, 2), "mips64le": (8, 2), "loong64": (258, 2),
}  # fmt: skip
MACHINE_NAMES: dict[int, str] = {62: "x86-64", 3: "x86", 183: "AArch64", 40: "ARM", 22: "s390",
                                 21: "PowerPC64", 243: "RISC-V", 8: "MIPS", 258: "LoongArch",
                                 20: "PowerPC"}  # fmt: skip
# Where images legitimately keep code for other machines: cross toolchains' target files,
# firmware, debug symbols, emulators' data.
_FOREIGN_OK = re.compile(
    r"^(usr/lib/gcc-cross/|usr/[a-z0-9_]+-linux-gnu[a-z0-9_]*/|usr/lib/debug/|lib/firmware/|"
    r"usr/lib/firmware/|usr/share/)"
)


def elf_machine(head: bytes) -> tuple[int, int, int] | None:
    """(e_machine, word size class, e_type) of an ELF header, or None if it is not one."""
    if len(head) < 20 or not head.startswith(b"\x7fELF"):
        return None
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    kind = int.from_bytes(head[16:18], "little" if little else "big")
    return machine, head[4], kind


def foreign_binaries(root: str, architecture: str, limit: int = 20) -> list[tuple[str, str]]:
    """Executables and shared libraries under `root` built for another machine than
    `architecture` (GOARCH spelling): (path, the machine they are for). Object files and
    archives, and the places cross toolchains keep their targets' files, are not looked at."""
    wanted = ELF_MACHINES.get(architecture)
    if wanted is None:
        return []
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        if _FOREIGN_OK.match(rel_dir):
            dirnames[:] = []
            continue
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size < 64:
                    continue
                handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(handle, "rb") as f:
                    head = f.read(20)
            except OSError:
                continue
            header = elf_machine(head)
            if header is None:
                continue
            machine, word, kind = header
            if kind not in (2, 3):  # executables and shared objects only
                continue
            if (machine, word) != wanted:
                shown = MACHINE_NAMES.get(machine, f"machine {machine}")
                found.append((rel_dir + name, f"{shown} ({32 * word}-bit)"))
                if len(found) >= limit:
                    return found
    return found
