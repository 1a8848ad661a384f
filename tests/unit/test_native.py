"""ELF machine types: what verify's architecture check reads."""

from __future__ import annotations

import struct
from pathlib import Path

from polyarch.worker.local.native import elf_machine, foreign_binaries


def elf(machine: int, word: int = 2, kind: int = 3, little: bool = True) -> bytes:
    order = "<" if little else ">"
    ident = b"\x7fELF" + bytes([word, 1 if little else 2, 1]) + b"\0" * 9
    return ident + struct.pack(order + "HH", kind, machine) + b"\0" * 60


def test_headers() -> None:
    assert elf_machine(elf(62)) == (62, 2, 3)
    assert elf_machine(elf(22, little=False)) == (22, 2, 3)
    assert elf_machine(b"#!/bin/sh\n" + b"\0" * 20) is None


def test_foreign_binaries(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/native").write_bytes(elf(183))
    (tmp_path / "usr/bin/leak").write_bytes(elf(62))
    (tmp_path / "usr/bin/object.o").write_bytes(elf(62, kind=1))  # relocatable: not looked at
    (tmp_path / "usr/bin/armhf").write_bytes(elf(40, word=1))
    (tmp_path / "usr/bin/link").symlink_to("/usr/bin/leak")
    (tmp_path / "usr/x86_64-linux-gnu/lib").mkdir(parents=True)  # a cross toolchain's target
    (tmp_path / "usr/x86_64-linux-gnu/lib/libc.so.6").write_bytes(elf(62))
    (tmp_path / "usr/lib/gcc-cross").mkdir(parents=True)
    (tmp_path / "usr/lib/gcc-cross/crt.so").write_bytes(elf(62))
    found = sorted(foreign_binaries(str(tmp_path), "arm64"))
    assert found == [("usr/bin/armhf", "ARM (32-bit)"), ("usr/bin/leak", "x86-64 (64-bit)")]
    assert foreign_binaries(str(tmp_path), "mips") == []  # a machine it does not know: no check
