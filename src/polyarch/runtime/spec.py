"""The OCI runtime spec of a RUN step, as BuildKit's executor writes it. Pure.

Namespaces: pid, ipc, uts and mount (the network is the host's, as BuildKit's default network
mode; `private_network` gives the process a network namespace of its own, loopback only, as
`polyarch verify` runs images). /proc, a tmpfs /dev with devpts, shm (64 MiB unless asked)
and mqueue, a read-only /sys and cgroup, Docker's default capabilities, the masked and
read-only paths runc's default spec uses, the hostname BuildKit gives its sandboxes, and the
resource limits asked for (`--ulimit`). The files bound in (resolv.conf, hosts) come from the
caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

HOSTNAME: Final = "buildkitsandbox"
CAPABILITIES: Final = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
# Linux capability numbers, in order (CAP_CHOWN is 0).
CAPABILITY_NUMBERS: Final = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON",
    "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip


def capabilities_of(mask: int) -> tuple[str, ...]:
    """The names of the capabilities set in a mask (as /proc/<pid>/status shows them)."""
    return tuple(name for bit, name in enumerate(CAPABILITY_NUMBERS) if mask >> bit & 1)


MASKED: Final = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY: Final = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BindMount:
    source: str
    destination: str
    readonly: bool = True


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    binds: tuple[BindMount, ...] = field(default_factory=tuple)
    tmpfs: tuple[tuple[str, int], ...] = ()  # (target, size in bytes; 0: the default)
    hostname: str = HOSTNAME
    private_network: bool = False
    privileged: bool = False  # RUN --security=insecure: nothing masked, /sys writable
    # None: Docker's default set; a privileged step gets every capability the host grants
    capabilities: tuple[str, ...] | None = None
    seccomp: Mapping[str, Any] | None = None  # the runtime spec's linux.seccomp
    # A static init for the host's machine (tini-static), run as PID 1 with the process as its
    # child: under QEMU, a guest process that is PID 1 and dies of a signal hangs instead (the
    # emulator re-raises the signal at itself, and the kernel ignores it for PID 1).
    init: str | None = None
    shm_size: int = 0  # bytes of /dev/shm (0: 64 MiB, Docker's default)
    rlimits: tuple[tuple[str, int, int], ...] = ()  # (RLIMIT_NAME, soft, hard)


INIT_PATH: Final = "/dev/.polyarch-init"  # in the container's own /dev tmpfs: never in a layer


def runtime_spec(process: ProcessSpec, rootfs: str, *, rootless: bool = False) -> dict[str, Any]:
    """The OCI runtime config of one process. `rootless`: polyarch runs in its user
    namespace, where sysfs can only be mounted in a network namespace of the container's own:
    with the host's network, /sys is the host's, bound read-only (as runc's rootless spec)."""
    mounts: list[Mapping[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",  # noqa: S108 (in the container)
         "options": ["nosuid", "noexec", "nodev", "mode=1777",
                     f"size={process.shm_size}" if process.shm_size else "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]  # fmt: skip
    for bind in process.binds:
        options = ["rbind", "nosuid", "nodev"] + (["ro"] if bind.readonly else ["rw"])
        mounts.append(
            {"destination": bind.destination, "type": "bind", "source": bind.source,
             "options": options}
        )  # fmt: skip
    for target, size in process.tmpfs:
        options = ["nosuid", "nodev", "mode=1777"] + ([f"size={size}"] if size else [])
        mounts.append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                       "options": options})  # fmt: skip
    args = list(process.args)
    if process.init is not None:
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": process.init,
                       "options": ["rbind", "nosuid", "nodev", "ro"]})  # fmt: skip
        args = [INIT_PATH, "--", *args]
    if rootless and not process.private_network:
        mounts = [
            {"destination": "/sys", "type": "bind", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
            if m["destination"] == "/sys" else m
            for m in mounts
        ]  # fmt: skip
    caps = list(process.capabilities if process.capabilities is not None else CAPABILITIES)
    if process.privileged:
        mounts = [
            {**m, "options": ["nosuid", "noexec", "nodev", "rw"]} if m["destination"] == "/sys"
            else m
            for m in mounts
        ]  # fmt: skip
    namespaces = ["pid", "ipc", "uts", "mount"] + (["network"] if process.private_network else [])
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": process.uid,
                "gid": process.gid,
                **(
                    {"additionalGids": list(process.additional_gids)}
                    if process.additional_gids
                    else {}
                ),
            },
            "args": args,
            "env": list(process.env),
            "cwd": process.cwd or "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": False,
            **(
                {
                    "rlimits": [
                        {"type": name, "soft": soft, "hard": hard}
                        for name, soft, hard in process.rlimits
                    ]
                }
                if process.rlimits
                else {}
            ),
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": process.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in namespaces],
            "maskedPaths": [] if process.privileged else list(MASKED),
            "readonlyPaths": [] if process.privileged else list(READONLY),
            **({"seccomp": dict(process.seccomp)} if process.seccomp is not None else {}),
        },
    }


def shell_env(env: Mapping[str, str], defaults: Sequence[str]) -> tuple[str, ...]:
    """The process environment: the config's, with a default PATH when it has none."""
    items = [f"{k}={v}" for k, v in env.items()]
    if "PATH" not in env:
        items = [d for d in defaults if d.startswith("PATH=")] + items
    return tuple(items)


DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
