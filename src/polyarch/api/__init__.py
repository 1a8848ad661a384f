"""The library's face, for the CLI and for library users: typed requests and results for
building, releasing, verifying, planning and registry work. The work itself is in the
modules beside it: `building` (a build start to end, wherever each platform runs),
`release`, `session` (registry work) and `local` (this machine and its workspace).
"""

from __future__ import annotations

from polyarch.api.building import (
    BuildOptions,
    BuildReport,
    build_image,
    check_build,
    open_builder,
    parse_contexts,
    parse_secret,
    parse_ssh,
    plan_build,
    warm_image,
)
from polyarch.api.local import (
    LocalImage,
    clean_images,
    default_root,
    diff_images,
    git_version,
    local_images,
    machine_platform,
    prune_workspace,
    workspace_usage,
)
from polyarch.api.release import (
    ReleaseResult,
    move_tag,
    push_pinned,
    release,
    verify_image,
)
from polyarch.api.session import (
    ImageSummary,
    IndexSummary,
    RegistryOptions,
    Session,
    index_sources,
)
from polyarch.export.write import Output
from polyarch.frontend.files import read_dockerfile
from polyarch.oci.models import Descriptor

__all__ = [
    "BuildOptions",
    "BuildReport",
    "Descriptor",
    "ImageSummary",
    "IndexSummary",
    "LocalImage",
    "Output",
    "RegistryOptions",
    "ReleaseResult",
    "Session",
    "build_image",
    "check_build",
    "clean_images",
    "default_root",
    "diff_images",
    "git_version",
    "index_sources",
    "local_images",
    "machine_platform",
    "move_tag",
    "open_builder",
    "parse_contexts",
    "parse_secret",
    "parse_ssh",
    "plan_build",
    "prune_workspace",
    "push_pinned",
    "read_dockerfile",
    "release",
    "verify_image",
    "warm_image",
    "workspace_usage",
]
