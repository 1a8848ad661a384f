"""Running RUN steps: OCI runtime specs, runc/crun, overlay mounts (effects)."""

from polyarch.runtime.executor import (
    Container,
    Executor,
    RuntimeMissingError,
    find_init,
    find_runtime,
)
from polyarch.runtime.mounts import MountError, bind_directory, mount_overlay, unmount
from polyarch.runtime.spec import (
    DEFAULT_PATH,
    HOSTNAME,
    BindMount,
    ProcessSpec,
    runtime_spec,
    shell_env,
)

__all__ = [
    "DEFAULT_PATH",
    "HOSTNAME",
    "BindMount",
    "Container",
    "Executor",
    "MountError",
    "ProcessSpec",
    "RuntimeMissingError",
    "bind_directory",
    "find_init",
    "find_runtime",
    "mount_overlay",
    "runtime_spec",
    "shell_env",
    "unmount",
]
