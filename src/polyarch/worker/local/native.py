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
