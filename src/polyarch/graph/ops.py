"""Typed build operations: what the converter decides and a worker carries out. Pure.

BuildKit's LLB reduced to what a Dockerfile needs. Every op is a frozen value with a canonical
JSON form (`to_json`, `op_from_json`: it crosses the wire to remote workers, and it is what keys
are made of). An op never names a host path: the build context, secrets and SSH agents are
named by id and bound by the worker that runs the op.

Inputs are positional. For an `ExecOp` and a `FileOp`, input 0 is the root filesystem the op
acts on; a mount or a copy names the input it takes from by its index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from polyarch.errors import PolyarchError
from polyarch.platform import Platform

Network = Literal["default", "none", "host"]
Security = Literal["sandbox", "insecure"]
Sharing = Literal["shared", "private", "locked"]
NETWORKS: Final = ("default", "none", "host")
SECURITY_MODES: Final = ("sandbox", "insecure")
SHARING_MODES: Final = ("shared", "private", "locked")


class GraphError(PolyarchError):
    """A graph document that cannot be read (from a remote peer, or a cache export)."""


def canonical(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_key(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()


# sources ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scratch:
    """The empty filesystem (FROM scratch; the root of inline documents)."""

    def to_json(self) -> dict[str, Any]:
        return {"type": "scratch"}


@dataclass(frozen=True, slots=True)
class ImageSource:
    """An image's filesystem: its layers, pinned by the manifest digest ("" in a plan made
    without resolving base images)."""

    ref: str
    platform: Platform
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": "image", "ref": self.ref, "platform": str(self.platform),
                "digest": self.digest}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContextSource:
    """Files of a build context, by name ("context" is the main one). `includes` are the
    paths the consuming copy or mount selects, `excludes` the context's ignore patterns, in
    order. Its cache key is the digest of what it selects, computed by the worker."""

    name: str
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"type": "context", "name": self.name, "includes": list(self.includes),
                "excludes": list(self.excludes)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class HttpSource:
    """A file downloaded from a URL (ADD <url>), named `filename`, mode 0600. With a checksum
    the download must match it."""

    url: str
    filename: str
    checksum: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": "http", "url": self.url, "filename": self.filename,
                "checksum": self.checksum}  # fmt: skip


@dataclass(frozen=True, slots=True)
class GitSource:
    """A git repository's tree at a ref (ADD <git-url>, a git build context)."""

    remote: str
    ref: str = ""
    subdir: str = ""
    keep_git_dir: bool = False
    checksum: str = ""  # the commit (or a prefix) the ref must be at
    submodules: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"type": "git", "remote": self.remote, "ref": self.ref, "subdir": self.subdir,
                "keep_git_dir": self.keep_git_dir, "checksum": self.checksum,
                "submodules": self.submodules}  # fmt: skip


# mounts of an exec op -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindMount:
    """An input's filesystem (or a path in it) at `target`; writes are discarded after the
    step unless read-only, which is the default."""

    target: str
    input: int
    source: str = "/"
    readwrite: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"type": "bind", "target": self.target, "input": self.input,
                "source": self.source, "readwrite": self.readwrite}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CacheMount:
    """A directory that persists across builds in the workspace, never part of a layer.
    `input` (with `source`) seeds it the first time it is made."""

    target: str
    id: str
    sharing: Sharing = "shared"
    input: int | None = None
    source: str = "/"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    readonly: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"type": "cache", "target": self.target, "id": self.id, "sharing": self.sharing,
                "input": self.input, "source": self.source, "mode": self.mode, "uid": self.uid,
                "gid": self.gid, "readonly": self.readonly}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TmpfsMount:
    target: str
    size: int = 0  # bytes; 0: the kernel's default

    def to_json(self) -> dict[str, Any]:
        return {"type": "tmpfs", "target": self.target, "size": self.size}


@dataclass(frozen=True, slots=True)
class SecretMount:
    """A secret by id, as a file at `target` and/or in the variable `env`. Its value is never
    part of the op: the worker reads it from the build's secret store."""

    id: str
    target: str = ""
    env: str = ""
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"type": "secret", "id": self.id, "target": self.target, "env": self.env,
                "required": self.required, "mode": self.mode, "uid": self.uid,
                "gid": self.gid}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SshMount:
    """An SSH agent socket by id (`default`: the caller's SSH_AUTH_SOCK) at `target`."""

    id: str = "default"
    target: str = "/run/buildkit/ssh_agent.0"
    required: bool = False
    mode: int = 0o600
    uid: int = 0
    gid: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"type": "ssh", "id": self.id, "target": self.target, "required": self.required,
                "mode": self.mode, "uid": self.uid, "gid": self.gid}  # fmt: skip


Mount: TypeAlias = BindMount | CacheMount | TmpfsMount | SecretMount | SshMount


# exec and file ops --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecOp:
    """Run a process on input 0's filesystem; its changes are the result.

    `env` is the process environment in order (`K=V`); `user` a user spec resolved in the
    root filesystem when the step runs; `proxy_env` reaches the process but not the key (as
    BuildKit's ProxyEnv).
    """

    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    platform: Platform
    user: str = ""
    mounts: tuple[Mount, ...] = ()
    network: Network = "default"
    security: Security = "sandbox"
    proxy_env: tuple[str, ...] = ()
    # `--add-host`: `HOST=IP` lines of the step's /etc/hosts (BuildKit's ExtraHosts; keyed)
    extra_hosts: tuple[str, ...] = ()
    ulimits: tuple[str, ...] = ()  # `--ulimit`: `name=soft:hard` (BuildKit's Ulimit; keyed)
    shm_size: int = 0  # `--shm-size` in bytes (0: the default 64 MiB; keyed when set)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "exec", "argv": list(self.argv), "env": list(self.env), "cwd": self.cwd,
            "platform": str(self.platform), "user": self.user,
            "mounts": [m.to_json() for m in self.mounts], "network": self.network,
            "security": self.security, "proxy_env": list(self.proxy_env),
        }  # fmt: skip
        # Absent when not set: the keys of steps without them stay as they were.
        if self.extra_hosts:
            out["extra_hosts"] = list(self.extra_hosts)
        if self.ulimits:
            out["ulimits"] = list(self.ulimits)
        if self.shm_size:
            out["shm_size"] = self.shm_size
        return out

    def key_json(self) -> dict[str, Any]:
        out = self.to_json()
        del out["proxy_env"]
        return out


@dataclass(frozen=True, slots=True)
class Mkdir:
    """Make a directory (and its parents), owned by `owner` (a user spec, resolved in the
    filesystem the op acts on; "" is root)."""

    path: str
    mode: int = 0o755
    owner: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"action": "mkdir", "path": self.path, "mode": self.mode, "owner": self.owner}


@dataclass(frozen=True, slots=True)
class Mkfile:
    path: str
    data: str
    mode: int = 0o644
    owner: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"action": "mkfile", "path": self.path, "data": self.data, "mode": self.mode,
                "owner": self.owner}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY/ADD with Docker's rules: `sources` (paths or wildcards in input `input`) to
    `dest` (absolute; a trailing slash means a directory).

    `chown` is a user[:group] spec resolved in the destination, `chmod` an octal mode;
    files keep their owners when `keep_owner` (a copy from a stage or an image), else
    belong to root. `unpack`: local tar archives are unpacked (ADD). `link`: the copy does
    not look at the destination's existing content (COPY --link).
    """

    input: int
    sources: tuple[str, ...]
    dest: str
    chown: str = ""
    chmod: str = ""
    keep_owner: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    unpack: bool = False
    link: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "action": "copy", "input": self.input, "sources": list(self.sources),
            "dest": self.dest, "chown": self.chown, "chmod": self.chmod,
            "keep_owner": self.keep_owner, "parents": self.parents,
            "excludes": list(self.excludes), "unpack": self.unpack, "link": self.link,
        }  # fmt: skip


FileAction: TypeAlias = Mkdir | Mkfile | Copy


@dataclass(frozen=True, slots=True)
class FileOp:
    """File actions on input 0's filesystem (in order); their changes are the result."""

    actions: tuple[FileAction, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": "file", "actions": [a.to_json() for a in self.actions]}


@dataclass(frozen=True, slots=True)
class MergeOp:
    """The inputs' filesystems stacked, first at the bottom: their layers, concatenated
    (COPY --link puts a copy made on nothing onto the stage this way)."""

    def to_json(self) -> dict[str, Any]:
        return {"type": "merge"}


Op: TypeAlias = (
    Scratch | ImageSource | ContextSource | HttpSource | GitSource | ExecOp | FileOp | MergeOp
)
SourceOp: TypeAlias = Scratch | ImageSource | ContextSource | HttpSource | GitSource


def key_json(op: Op) -> dict[str, Any]:
    """What an op's key is made of: its JSON, less what must not change the key."""
    return op.key_json() if isinstance(op, ExecOp) else op.to_json()


def vertex_key(op: Op, inputs: tuple[str, ...]) -> str:
    return sha256_key({"op": key_json(op), "inputs": list(inputs)})


# from JSON (what a remote peer sends) -------------------------------------------------------


def op_from_json(data: Mapping[str, Any]) -> Op:
    """An op from its JSON form; a malformed document is a `GraphError`."""
    try:
        return _op(data)
    except (KeyError, TypeError, ValueError, PolyarchError) as exc:
        raise GraphError(f"malformed operation {str(data)[:200]}: {exc}") from None


def _op(d: Mapping[str, Any]) -> Op:
    kind = d["type"]
    if kind == "scratch":
        return Scratch()
    if kind == "image":
        return ImageSource(_s(d["ref"]), Platform.parse(d["platform"]), _s(d["digest"]))
    if kind == "context":
        return ContextSource(_s(d["name"]), _strs(d["includes"]), _strs(d["excludes"]))
    if kind == "http":
        return HttpSource(_s(d["url"]), _s(d["filename"]), _s(d["checksum"]))
    if kind == "git":
        return GitSource(_s(d["remote"]), _s(d["ref"]), _s(d["subdir"]),
                         _b(d["keep_git_dir"]), _s(d["checksum"]))  # fmt: skip
    if kind == "exec":
        network, security = d["network"], d["security"]
        if network not in NETWORKS or security not in SECURITY_MODES:
            raise ValueError("unknown network or security mode")
        return ExecOp(
            _strs(d["argv"]), _strs(d["env"]), _s(d["cwd"]), Platform.parse(d["platform"]),
            _s(d["user"]), tuple(_mount(m) for m in d["mounts"]), network, security,
            _strs(d["proxy_env"]), _strs(d.get("extra_hosts", [])),
            _strs(d.get("ulimits", [])), _i(d.get("shm_size", 0)),
        )  # fmt: skip
    if kind == "file":
        return FileOp(tuple(_action(a) for a in d["actions"]))
    if kind == "merge":
        return MergeOp()
    raise ValueError(f"unknown operation type {kind!r}")


def _mount(d: Mapping[str, Any]) -> Mount:
    kind = d["type"]
    if kind == "bind":
        return BindMount(_s(d["target"]), _i(d["input"]), _s(d["source"]), _b(d["readwrite"]))
    if kind == "cache":
        sharing = d["sharing"]
        if sharing not in SHARING_MODES:
            raise ValueError(f"unknown sharing mode {sharing!r}")
        source_input = d["input"]
        return CacheMount(
            _s(d["target"]), _s(d["id"]), sharing,
            None if source_input is None else _i(source_input), _s(d["source"]),
            _i(d["mode"]), _i(d["uid"]), _i(d["gid"]), _b(d["readonly"]),
        )  # fmt: skip
    if kind == "tmpfs":
        return TmpfsMount(_s(d["target"]), _i(d["size"]))
    if kind == "secret":
        return SecretMount(_s(d["id"]), _s(d["target"]), _s(d["env"]), _b(d["required"]),
                           _i(d["mode"]), _i(d["uid"]), _i(d["gid"]))  # fmt: skip
    if kind == "ssh":
        return SshMount(_s(d["id"]), _s(d["target"]), _b(d["required"]), _i(d["mode"]),
                        _i(d["uid"]), _i(d["gid"]))  # fmt: skip
    raise ValueError(f"unknown mount type {kind!r}")


def _action(d: Mapping[str, Any]) -> FileAction:
    kind = d["action"]
    if kind == "mkdir":
        return Mkdir(_s(d["path"]), _i(d["mode"]), _s(d["owner"]))
    if kind == "mkfile":
        return Mkfile(_s(d["path"]), _s(d["data"]), _i(d["mode"]), _s(d["owner"]))
    if kind == "copy":
        return Copy(
            _i(d["input"]), _strs(d["sources"]), _s(d["dest"]), _s(d["chown"]), _s(d["chmod"]),
            _b(d["keep_owner"]), _b(d["parents"]), _strs(d["excludes"]), _b(d["unpack"]),
            _b(d["link"]),
        )  # fmt: skip
    raise ValueError(f"unknown file action {kind!r}")


def _s(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _i(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _b(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return tuple(_s(v) for v in value)
