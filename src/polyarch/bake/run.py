"""`polyarch bake`: the targets of a resolved bake definition built side by side in one build
session. One builder holds the workspace once; the targets' solves share the step cache and
run a step they share once (a build-once stage of two targets runs once); a target that
another takes as a `target:` context is built first and given to it from the local store,
never pushed. Each target is otherwise an ordinary `polyarch build` (the same options, the
same outputs).

Paths are relative to the working directory, as buildx's are; reading or writing outside it
(or the bake files' directories) needs `--allow fs.read=PATH` / `fs.write=PATH` (`fs=PATH`,
`*` for any), and `network.host` / `security.insecure` entitlements a target asks for need
`--allow` too, as buildx has required since v0.20.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from polyarch.api import (
    BuildOptions,
    BuildReport,
    Session,
    build_image,
    check_build,
    default_root,
)
from polyarch.attest.spec import parse_attests
from polyarch.bake.definition import BakeError, Entry, Resolved, Target
from polyarch.concurrency import task_pool
from polyarch.errors import PolyarchError, UsageError
from polyarch.export.outputs import parse_output
from polyarch.frontend.convert import BuildOnce, CheckResult
from polyarch.platform import Platform
from polyarch.progress import Event, Progress, silent
from polyarch.units import parse_size
from polyarch.verify import RunSpec, VerifyReport

if TYPE_CHECKING:
    from polyarch.api.signing import SigningKey


class EntitlementError(PolyarchError):
    """The definition reaches where `--allow` has not granted."""


@dataclass(frozen=True, slots=True)
class BakeSettings:
    """What the command line adds to every target."""

    cwd: Path
    allow: tuple[str, ...] = ()  # --allow: entitlements and fs.read= / fs.write= paths
    roots: tuple[Path, ...] = ()  # the bake files' directories: read and written freely
    root: Path | None = None
    jobs: int = 1
    build_once: BuildOnce = "auto"
    ca_certs: Path | None = None
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    builder: str | None = None
    platform_of: Callable[[str], tuple[Platform, ...]] = lambda text: (Platform.parse(text),)


@dataclass
class TargetResult:
    name: str
    report: BuildReport | None = None
    check: CheckResult | None = None
    linked: bool = False


# entitlements --------------------------------------------------------------------------------


def local_paths(target: Target, cwd: Path) -> tuple[set[Path], set[Path]]:
    """What a target reads and writes on this machine: (read, write) absolute paths."""
    read: set[Path] = set()
    write: set[Path] = set()

    def local(value: str) -> Path | None:
        value = value.removeprefix("cwd://")
        if not value or _remote(value) or value.startswith(("target:", "docker-image:")):
            return None
        if value.startswith("oci-layout://"):
            value = value.removeprefix("oci-layout://").split("@")[0]
        return (cwd / value).resolve()  # an absolute value stays itself

    context = local(target.context or ".")
    if context is not None:
        read.add(context)
        if not target.dockerfile_inline and target.dockerfile:
            read.add((context / target.dockerfile).resolve())
    for value in (target.contexts or {}).values():
        path = local(value)
        if path is not None:
            read.add(path)
    for entry in target.secret or []:
        if entry.get("src"):
            read.add((cwd / str(entry["src"])).resolve())
    for entry in target.ssh or []:
        for path in entry.get("paths") or []:
            read.add((cwd / Path(str(path)).expanduser()).resolve())
    for entry in target.cache_from or []:
        if entry.get("type") == "local" and entry.get("src"):
            read.add((cwd / str(entry["src"])).resolve())
    for entry in target.cache_to or []:
        if entry.get("type") == "local" and entry.get("dest"):
            write.add((cwd / str(entry["dest"])).resolve())
    for entry in target.output or []:
        dest = str(entry.get("dest", ""))
        if dest and dest != "-":
            write.add((cwd / dest).resolve())
    return read, write


def check_entitlements(resolved: Resolved, settings: BakeSettings) -> None:
    """Refuse, naming every `--allow` needed, a definition that reaches outside the working
    directory (and the bake files' directories) or asks for network.host / security.insecure
    without them."""
    granted_read: list[Path] = [settings.cwd.resolve(), *settings.roots]
    granted_write: list[Path] = [settings.cwd.resolve(), *settings.roots]
    any_read = any_write = False
    flags = set()
    for item in settings.allow:
        key, _eq, value = item.partition("=")
        if key in ("fs.read", "fs"):
            any_read |= value == "*"
            if value and value != "*":
                granted_read.append((settings.cwd / value).resolve())
        if key in ("fs.write", "fs"):
            any_write |= value == "*"
            if value and value != "*":
                granted_write.append((settings.cwd / value).resolve())
        if not _eq:
            flags.add(key)
    needed: list[str] = []
    messages: list[str] = []
    for name in sorted(resolved.targets):
        target = resolved.targets[name]
        for entitlement in target.entitlements or []:
            if entitlement in ("network.host", "security.insecure") and entitlement not in flags:
                text = {"network.host": "Running build containers that can access host "
                        "network", "security.insecure": "Running privileged containers that "
                        "can make system changes"}[entitlement]  # fmt: skip
                if entitlement not in needed:
                    needed.append(entitlement)
                    messages.append(f" - {text}")
        read, write = (_outermost(paths) for paths in local_paths(target, settings.cwd))
        for paths, anything, granted, key, word in (
            (read, any_read, granted_read, "fs.read", "Read"),
            (write, any_write, granted_write, "fs.write", "Write"),
        ):
            for path in sorted(paths):
                if not anything and not any(_inside(path, g) for g in granted):
                    flag = f"{key}={_shown(path, settings.cwd)}"
                    if flag not in needed:
                        needed.append(flag)
                        messages.append(f" - {word} access to path {_shown(path, settings.cwd)}")
    if needed:
        allow = " ".join(f"--allow={n}" for n in needed)
        asked = "\n".join(messages)
        raise EntitlementError(f"additional privileges requested: the build asks for\n{asked}"
                               f"\nPass {allow!r} to grant them.")  # fmt: skip


def _outermost(paths: set[Path]) -> set[Path]:
    """The paths not below another of them (a context covers its Dockerfile)."""
    return {p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)}


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent == Path("/") or path.is_relative_to(parent)


def _shown(path: Path, cwd: Path) -> str:
    try:
        relative = os.path.relpath(path, cwd.resolve())
    except ValueError:
        return str(path)
    return str(path) if relative.startswith(("../..",)) else relative


def _remote(value: str) -> bool:
    """A URL (git, http) rather than a path of this machine, as buildx's IsRemoteURL."""
    scheme = re.match(r"^([a-z][a-z0-9+.-]*)://", value)
    if scheme is not None:
        return scheme.group(1) not in ("cwd", "oci-layout", "docker-image")
    return value.startswith("git@")


# targets to builds ---------------------------------------------------------------------------


def _entry_text(entry: Entry, order: Sequence[str] = ("type",)) -> str:
    keys = [k for k in order if k in entry] + [k for k in entry if k not in order]
    return ",".join(f"{k}={entry[k]}" for k in keys)


def build_options(
    target: Target,
    settings: BakeSettings,
    linked: Mapping[str, str],
    stack: list[Path],
) -> BuildOptions:
    """A target as `polyarch build` takes it. `linked`: target name -> `oci-layout://...` of
    what it built; `stack`: temporary files to remove afterwards (inline Dockerfiles)."""
    cwd = settings.cwd
    context_text = (target.context or ".").removeprefix("cwd://")
    context: Path | str = context_text if _remote(context_text) else (cwd / context_text)
    dockerfile = _dockerfile(target, context, cwd, stack)
    contexts: dict[str, str] = {}
    for key, value in (target.contexts or {}).items():
        if value.startswith("target:"):
            contexts[key] = linked[value.removeprefix("target:")]
        elif _remote(value) or value.startswith(("docker-image://", "oci-layout://")):
            contexts[key] = value
        else:
            contexts[key] = str(cwd / value.removeprefix("cwd://"))
    try:
        attest = parse_attests([_entry_text(e) for e in target.attest or []])
    except UsageError as exc:
        raise BakeError(f"target {target.name}: {exc}") from None
    outputs = []
    for entry in target.output or []:
        if entry.get("type") == "cacheonly":
            continue
        spec = parse_output(_entry_text(_absolute(entry, ("dest",), cwd)))
        if spec is not None:
            outputs.append(spec)
    platforms: list[Platform] = []
    for text in target.platforms or []:
        platforms.extend(settings.platform_of(text))
    network = target.network or "default"
    if network not in ("default", "none", "host"):
        raise BakeError(f"target {target.name}: network {network!r}: default, none or host")
    allow = frozenset(a for a in settings.allow if a in ("security.insecure", "network.host"))
    return BuildOptions(
        context=context,
        dockerfile=dockerfile,
        tags=tuple(target.tags or ()),
        platforms=tuple(dict.fromkeys(platforms)),
        build_args={k: v for k, v in (target.args or {}).items() if v is not None},
        target=target.target,
        labels={k: v for k, v in (target.labels or {}).items() if v is not None},
        no_cache=bool(target.no_cache),
        outputs=tuple(outputs),
        root=settings.root,
        jobs=settings.jobs,
        build_once=settings.build_once,
        ca_certs=settings.ca_certs,
        allow=allow,
        secrets=tuple(
            _entry_text(_absolute(e, ("src",), cwd), ("id", "src", "env"))
            for e in target.secret or []
        ),
        ssh=tuple(_ssh_text(e, cwd) for e in target.ssh or []),
        contexts=contexts,
        cache_from=tuple(_entry_text(_absolute(e, ("src",), cwd)) for e in target.cache_from or []),
        cache_to=(
            _entry_text(_absolute(target.cache_to[0], ("dest",), cwd)) if target.cache_to else None
        ),
        mirrors=settings.mirrors,
        builder=settings.builder,
        annotations=tuple(target.annotations or ()),
        add_hosts=tuple(f"{k}={v}" for k, v in sorted((target.extra_hosts or {}).items()) if v),
        network=network,
        ulimits=tuple(target.ulimits or ()),
        shm_size=parse_size(target.shm_size) if target.shm_size else 0,
        no_cache_filter=tuple(target.no_cache_filter or ()),
        attest=attest,
    )


def _dockerfile(target: Target, context: Path | str, cwd: Path, stack: list[Path]) -> Path | None:
    """The target's Dockerfile: an inline one written to a temporary file (added to
    `stack`), else its path (`cwd://` from the working directory, else from the context)."""
    if target.dockerfile_inline is not None:
        handle, name = tempfile.mkstemp(prefix="polyarch-bake-", suffix=".Dockerfile")
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(target.dockerfile_inline)
        stack.append(Path(name))
        return Path(name)
    if not target.dockerfile:
        return None
    given = target.dockerfile.removeprefix("cwd://")
    if Path(given).is_absolute():
        return Path(given)
    if target.dockerfile.startswith("cwd://"):
        return cwd / given
    if isinstance(context, Path):
        return context / given
    return Path(given)  # a file of the remote repository


def _ssh_text(entry: Entry, cwd: Path) -> str:
    paths = [str(cwd / Path(str(p)).expanduser()) for p in entry.get("paths") or []]
    return str(entry["id"]) + ("=" + ",".join(paths) if paths else "")


def _absolute(entry: Entry, keys: Sequence[str], cwd: Path) -> Entry:
    """The entry with its local paths made absolute from the bake's working directory (which
    is polyarch.toml's when the project names the bake file, whatever the process's is)."""
    out = dict(entry)
    for key in keys:
        value = out.get(key)
        if isinstance(value, str) and value and value != "-" and "://" not in value:
            out[key] = str(cwd / Path(value).expanduser())
    return out


def _order(resolved: Resolved) -> list[str]:
    """Targets in an order where each comes after those it takes as `target:` contexts."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for value in (resolved.targets[name].contexts or {}).values():
            if value.startswith("target:"):
                visit(value.removeprefix("target:"))
        done.append(name)

    for name in sorted(resolved.targets):
        visit(name)
    return done


def bake(
    session: Session,
    resolved: Resolved,
    settings: BakeSettings,
    *,
    progress: Progress = silent,
) -> list[TargetResult]:
    """Build every target of `resolved` (linked ones first), side by side."""
    from polyarch.build import Builder  # noqa: PLC0415
    from polyarch.store.workspace import Workspace  # noqa: PLC0415

    for name, target in resolved.targets.items():
        if target.cache_to and len(target.cache_to) > 1:
            raise BakeError(f"target {name}: polyarch exports the build cache to one place; "
                            f"{len(target.cache_to)} cache-to entries given")  # fmt: skip
        if target.call not in (None, "build", "check"):
            raise BakeError(f"target {name}: call={target.call}: polyarch's bake takes build "
                            "and check")  # fmt: skip
    check_entitlements(resolved, settings)
    root = settings.root or default_root()
    store = Workspace(root)
    builder = Builder(store, session.client, progress=progress, mirrors=settings.mirrors,
                      mirror_client=session.fast_client())  # fmt: skip
    order = _order(resolved)
    futures: dict[str, Future[TargetResult]] = {}
    linked: dict[str, str] = {}
    lock = threading.Lock()
    temporary: list[Path] = []

    def one(name: str) -> TargetResult:
        target = resolved.targets[name]
        for value in (target.contexts or {}).values():
            if value.startswith("target:"):
                futures[value.removeprefix("target:")].result()
        with lock:
            options = build_options(target, settings, dict(linked), temporary)

        def tagged(event: Event) -> None:
            stage = f"{name}:{event.stage}" if event.stage else name
            progress(dataclasses.replace(event, stage=stage) if event.step else event)

        if target.call == "check":
            checked = check_build(session, options, progress=tagged)
            return TargetResult(name, check=checked, linked=target.linked)
        mine = copy.copy(builder)  # the same workspace, cache and flights; its own progress
        mine.progress = tagged
        report = build_image(session, options, progress=tagged, builder=mine)
        with lock:
            linked[name] = f"oci-layout://{root.resolve() / 'store'}@{report.digest}"
        return TargetResult(name, report, linked=target.linked)

    try:
        with builder.shared(), task_pool(max(1, len(order))) as pool:
            for name in order:
                futures[name] = pool.submit(one, name)
            results = [futures[name].result() for name in order]
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
    return results


@dataclass
class BakeRelease:
    """`release` of a bake project: each target built, pushed by digest and verified; the
    tags moved only when every target passed."""

    results: list[TargetResult]
    pinned: dict[str, str]  # target -> REPOSITORY@DIGEST
    verified: dict[str, VerifyReport]
    released: list[tuple[str, str]] = field(default_factory=list)  # (tag, digest)
    signed: list[str] = field(default_factory=list)  # "what digest", as release says them

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.verified.values())


def release(
    session: Session,
    resolved: Resolved,
    settings: BakeSettings,
    run: RunSpec | None,
    *,
    progress: Progress = silent,
    note: Callable[[str], None] = lambda _line: None,
    arch_check: bool = True,
    signing: SigningKey | None = None,
) -> BakeRelease:
    """Build every target (kept here, nothing pushed by the build), push each by digest,
    verify each, and only when all have passed sign each (given a key) and move every
    target's tags."""
    from polyarch.api import move_tag, push_pinned, verify_image  # noqa: PLC0415
    from polyarch.api.attesting import attach_verification, verify_policy  # noqa: PLC0415
    from polyarch.api.building import default_attestations  # noqa: PLC0415

    defaults = default_attestations()
    for target in resolved.targets.values():
        target.output = [o for o in target.output or [] if o.get("type") == "cacheonly"] or None
        if not target.linked and not target.tags:
            raise BakeError(f"target {target.name} has no tags: release pushes and tags every "
                            "target's image")  # fmt: skip
        said = any(e.get("type") == "provenance" for e in target.attest or [])
        if defaults and not target.linked and not said:  # pushed: buildx's default provenance
            target.attest = [*(target.attest or []), {"type": "provenance", "mode": "min"}]
    results = bake(session, resolved, settings, progress=progress)
    released = [r for r in results if not r.linked and r.report is not None]
    pinned = {r.name: push_pinned(session, r.report.names[0], settings.root)
              for r in released if r.report is not None}  # fmt: skip
    verified = {}
    for result in released:
        platforms = tuple(p for text in resolved.targets[result.name].platforms or []
                          for p in settings.platform_of(text))  # fmt: skip
        verified[result.name] = verify_image(session, pinned[result.name], platforms=platforms,
                                             run=run, root=settings.root, note=note,
                                             arch_check=arch_check)  # fmt: skip
        if defaults:  # what verify saw, kept on each platform's image
            attach_verification(session, pinned[result.name], verified[result.name],
                                verify_policy(run, arch_check))  # fmt: skip
    outcome = BakeRelease(results, pinned, verified)
    if outcome.ok and signing is not None:
        for result in released:
            assert result.report is not None
            names = [pinned[result.name]] + [push_pinned(session, name, settings.root)
                                             for name in result.report.names[1:]]  # fmt: skip
            outcome.signed += [f"{what} {digest}" for name in names
                               for what, digest in signing.sign(session, name)]  # fmt: skip
    if outcome.ok:
        for result in released:
            assert result.report is not None
            for name in result.report.names:
                outcome.released.append((name, move_tag(session, name, settings.root)))
    return outcome
