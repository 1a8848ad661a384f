"""The seccomp filter of RUN steps: Docker's default profile, as the OCI runtime takes it.

The profile is the one Debian ships for podman and buildah (`golang-github-containers-common`:
/usr/share/containers/seccomp.json), which is Docker's default profile in Docker's format. It
is translated the way moby's `seccomp.setupSeccomp` does: the rules for this machine's
architecture (QEMU-user makes host system calls for emulated steps, so the host's filter is the
one that applies), rules that need a capability only when the step has it, rules excluded by a
capability only when it has not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

from polyarch.errors import PolyarchError

PROFILE: Final = Path("/usr/share/containers/seccomp.json")
_ARCHES: Final = {  # uname -m -> (Go arch, libseccomp arch)
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "i686": ("386", "SCMP_ARCH_X86"),
}


class SeccompError(PolyarchError):
    """No seccomp filter can be given to RUN steps here."""


def kernel_supports_seccomp() -> bool:
    return Path("/proc/sys/kernel/seccomp/actions_avail").exists()


def load_profile(path: Path = PROFILE) -> dict[str, Any]:
    if not kernel_supports_seccomp():
        raise SeccompError(
            "this kernel has no seccomp filters: RUN steps cannot be confined as Docker confines "
            "them; polyarch refuses to run them unconfined"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise SeccompError(
            f"no seccomp profile at {path}: install it (apt-get install "
            "golang-github-containers-common; tools/dev setup does)"
        ) from None
    except ValueError as exc:
        raise SeccompError(f"the seccomp profile {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "syscalls" not in data:
        raise SeccompError(f"{path} is not a seccomp profile")
    return data


def oci_seccomp(
    profile: Mapping[str, Any], machine: str, capabilities: Collection[str]
) -> dict[str, Any]:
    """The `linux.seccomp` object of a runtime spec for a step with these capabilities."""
    go_arch, native = _ARCHES.get(machine, (machine, ""))
    architectures: list[str] = []
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            architectures = [native, *entry.get("subArchitectures", [])]
    kernel = _kernel_version()
    syscalls: list[dict[str, Any]] = []
    for rule in profile.get("syscalls") or []:
        includes = rule.get("includes") or {}
        excludes = rule.get("excludes") or {}
        if any(cap in capabilities for cap in excludes.get("caps") or []):
            continue
        if go_arch in (excludes.get("arches") or []):
            continue
        if not all(cap in capabilities for cap in includes.get("caps") or []):
            continue
        arches = includes.get("arches") or []
        if arches and go_arch not in arches:
            continue
        minimum = includes.get("minKernel")
        if minimum and kernel < _version(minimum):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        out: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            out["args"] = rule["args"]
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    spec: dict[str, Any] = {"defaultAction": profile.get("defaultAction", "SCMP_ACT_ERRNO")}
    if profile.get("defaultErrnoRet") is not None:
        spec["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if architectures:
        spec["architectures"] = architectures
    spec["syscalls"] = syscalls
    return spec


def _version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _kernel_version() -> tuple[int, ...]:
    return _version(os.uname().release.split("-", 1)[0])
