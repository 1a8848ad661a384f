"""SLSA provenance of one platform's image, as BuildKit writes it (its
`solver/llbsolver/provenance`): v1 by default (`https://slsa.dev/provenance/v1`, BuildKit's
build type), v0.2 on request. Pure: the facts come from the build.

`mode=min` keeps the frontend, the materials (base images and git sources by digest) and the
timestamps; `mode=max` adds the build arguments, labels and target, the secrets' and SSH
agents' ids (never values), the Dockerfile itself and the build's steps.

Where polyarch differs from BuildKit (README, "Attestations"):
- Reproducible: with SOURCE_DATE_EPOCH the timestamps are that time and the invocation id is
  derived from the request, so the same build gives the same bytes; `buildkit_reproducible`
  is then true.
- A build argument whose name looks like a secret (the SecretsUsedInArgOrEnv rule: TOKEN,
  PASSWORD, ...) never has its value recorded, even in `mode=max`; the request is then marked
  incomplete.
- The Dockerfile's digest is the config source's digest for a local context (BuildKit records
  a digest only for a git or HTTP context).
- `runDetails.builder.version` names polyarch's version."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from polyarch.attest.intoto import PREDICATE_SLSA02, PREDICATE_SLSA1, image_purl
from polyarch.attest.spec import ProvenanceSpec
from polyarch.frontend.dockerfile.checks import looks_secret
from polyarch.graph.model import BuildGraph
from polyarch.graph.ops import ExecOp, GitSource, ImageSource, SecretMount, SshMount
from polyarch.platform import Platform

BUILD_TYPE_V1: Final = (
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
)
BUILD_TYPE_V02: Final = "https://mobyproject.org/buildkit@v1"
FRONTEND: Final = "dockerfile.v0"
_USERINFO: Final = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


@dataclass(frozen=True, slots=True)
class Material:
    """A base image the platform's image was built from, by the digest it was pinned to
    (`local`: from an OCI layout), or a git source by commit (`git=True`, `ref` the URL)."""

    ref: str
    digest: str
    platform: Platform | None = None
    local: bool = False
    git: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ref": self.ref, "digest": self.digest}
        if self.platform is not None:
            out["platform"] = str(self.platform)
        if self.local:
            out["local"] = True
        if self.git:
            out["git"] = True
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Material:
        platform = obj.get("platform")
        return cls(str(obj["ref"]), str(obj["digest"]),
                   Platform.parse(platform) if isinstance(platform, str) else None,
                   bool(obj.get("local", False)), bool(obj.get("git", False)))  # fmt: skip

    def descriptor(self) -> dict[str, Any]:
        """As a resolved dependency (v1) or material (v0.2)."""
        if self.git:
            if len(self.digest) not in (40, 64):  # not pinned to a whole commit
                return {"uri": redact(self.ref)}
            algorithm = "sha256" if len(self.digest) == 64 else "sha1"
            return {"uri": redact(self.ref), "digest": {algorithm: self.digest}}
        uri = image_purl(self.ref, self.platform, local=self.local)
        algorithm, _, hex_ = self.digest.partition(":")
        return {"uri": uri, "digest": {algorithm: hex_}} if hex_ else {"uri": uri}


@dataclass(frozen=True, slots=True)
class Vcs:
    """The git checkout a local context is in (buildx's `vcs:source`/`vcs:revision`)."""

    source: str  # the remote's URL ("" when there is none)
    revision: str  # the commit, with `-dirty` when the work tree has changes
    context_dir: str = "."  # the context's path in the work tree
    dockerfile_dir: str = "."


@dataclass(frozen=True, slots=True)
class BuildFacts:
    """What the provenance of every platform of a build shares: the request and its times."""

    dockerfile_name: str  # as given to the build (`-f`), relative to the context when inside
    dockerfile: bytes
    started: str  # RFC 3339, UTC
    finished: str
    invocation_id: str
    builder_platform: Platform
    polyarch_version: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    locals: Sequence[str] = ("context", "dockerfile")
    context_url: str = ""  # a git context's URL (the config source), "" for a directory
    context_commit: str = ""
    vcs: Vcs | None = None
    reproducible: bool = False  # SOURCE_DATE_EPOCH was set


@dataclass(frozen=True, slots=True)
class Facts:
    """What the provenance of a platform's image says: the build's facts and the
    platform's."""

    build: BuildFacts
    platform: PlatformFacts


def redact(url: str) -> str:
    """A URL without the credentials it may carry."""
    return _USERINFO.sub(r"\1", url)


def _request(facts: Facts, mode: str) -> tuple[dict[str, Any], bool]:
    """The request's parameters as BuildKit records them, and whether they are complete."""
    complete = True
    args: dict[str, str] = {}
    if facts.build.target:
        args["target"] = facts.build.target
    if mode == "max":
        for key, value in sorted(facts.build.build_args.items()):
            if looks_secret(key):
                complete = False  # never a secret-like argument's value
                continue
            args[f"build-arg:{key}"] = value
        for key, value in sorted(facts.build.labels.items()):
            args[f"label:{key}"] = value
    elif facts.build.build_args or facts.build.labels:
        complete = False
    request: dict[str, Any] = {"frontend": FRONTEND}
    if args:
        request["args"] = dict(sorted(args.items()))
    if mode == "max" and facts.platform.secrets:
        request["secrets"] = [{"id": i, **({"optional": True} if o else {})}
                              for i, o in facts.platform.secrets]  # fmt: skip
    if mode == "max" and facts.platform.ssh:
        request["ssh"] = [
            {"id": i, **({"optional": True} if o else {})} for i, o in facts.platform.ssh
        ]
    if facts.build.locals:
        request["locals"] = [{"name": name} for name in facts.build.locals]
    return request, complete


def _config_source(facts: Facts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if facts.build.context_url:
        out["uri"] = redact(facts.build.context_url)
        if facts.build.context_commit:
            algorithm = "sha256" if len(facts.build.context_commit) == 64 else "sha1"
            out["digest"] = {algorithm: facts.build.context_commit}
    else:
        out["digest"] = {"sha256": hashlib.sha256(facts.build.dockerfile).hexdigest()}
    out["path"] = facts.build.dockerfile_name
    return out


def _buildkit_metadata(facts: Facts, mode: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if facts.build.vcs is not None:
        vcs = {"revision": facts.build.vcs.revision}
        if facts.build.vcs.source:
            vcs["source"] = redact(facts.build.vcs.source)
        vcs["localdir:context"] = facts.build.vcs.context_dir
        vcs["localdir:dockerfile"] = facts.build.vcs.dockerfile_dir
        meta["vcs"] = dict(sorted(vcs.items()))
    if mode == "max":
        meta["source"] = {"infos": [{
            "filename": facts.build.dockerfile_name, "language": "Dockerfile",
            "data": base64.b64encode(facts.build.dockerfile).decode("ascii"),
        }]}  # fmt: skip
    return meta


def predicate(facts: Facts, spec: ProvenanceSpec) -> tuple[str, dict[str, Any]]:
    """The predicate type and the predicate."""
    request, complete = _request(facts, spec.mode)
    deps = [m.descriptor() for m in facts.platform.materials]
    # A local directory (the context, the Dockerfile's, a named one) is not a material.
    materials_complete = not facts.build.locals
    internal: dict[str, Any] = {}
    if spec.mode == "max" and facts.platform.steps:
        internal["buildConfig"] = {"llbDefinition": [
            {"id": step, **({"inputs": list(inputs)} if inputs else {})}
            for step, inputs in facts.platform.steps
        ]}  # fmt: skip
    internal["builderPlatform"] = str(facts.build.builder_platform)
    build_meta = _buildkit_metadata(facts, spec.mode)
    reproducible = spec.reproducible or facts.build.reproducible
    hermetic = materials_complete and not facts.platform.networked
    if spec.version == "v0.2":
        return PREDICATE_SLSA02, _v02(
            facts,
            spec,
            request,
            deps,
            internal,
            build_meta,
            (complete, materials_complete, reproducible, hermetic),
        )
    build = facts.build
    metadata: dict[str, Any] = {"invocationId": build.invocation_id,
                                "startedOn": build.started, "finishedOn": build.finished,
                                "buildkit_metadata": build_meta}  # fmt: skip
    if hermetic:
        metadata["buildkit_hermetic"] = True
    metadata["buildkit_completeness"] = {
        "request": complete,
        "resolvedDependencies": materials_complete,
    }
    if reproducible:
        metadata["buildkit_reproducible"] = True
    definition: dict[str, Any] = {
        "buildType": BUILD_TYPE_V1,
        "externalParameters": {"configSource": _config_source(facts), "request": request},
        "internalParameters": internal,
    }
    if deps:
        definition["resolvedDependencies"] = deps
    builder = {"id": spec.builder_id, "version": {"polyarch": facts.build.polyarch_version}}
    return PREDICATE_SLSA1, {
        "buildDefinition": definition,
        "runDetails": {"builder": builder, "metadata": metadata},
    }


def _v02(facts: Facts, spec: ProvenanceSpec, request: dict[str, Any],
         deps: list[dict[str, Any]], internal: dict[str, Any], build_meta: dict[str, Any],
         flags: tuple[bool, bool, bool, bool]) -> dict[str, Any]:  # fmt: skip
    complete, materials_complete, reproducible, hermetic = flags
    source = _config_source(facts)
    config_source: dict[str, Any] = {k: v for k, v in source.items() if k != "path"}
    config_source["entryPoint"] = source["path"]
    out: dict[str, Any] = {
        "builder": {"id": spec.builder_id},
        "buildType": BUILD_TYPE_V02,
        "materials": deps,
        "invocation": {
            "configSource": config_source,
            "parameters": request,
            "environment": {"platform": internal["builderPlatform"]},
        },
    }
    if "buildConfig" in internal:
        out["buildConfig"] = internal["buildConfig"]
    metadata: dict[str, Any] = {
        "buildInvocationID": facts.build.invocation_id,
        "buildStartedOn": facts.build.started, "buildFinishedOn": facts.build.finished,
        "completeness": {"parameters": complete, "environment": True,
                         "materials": materials_complete},
        "reproducible": reproducible,
        "https://mobyproject.org/buildkit@v1#metadata": build_meta,
    }  # fmt: skip
    if hermetic:
        metadata["https://mobyproject.org/buildkit@v1#hermetic"] = True
    out["metadata"] = metadata
    return out


def invocation_id(parts: Sequence[str]) -> str:
    """A reproducible build's invocation id: derived from what was asked (BuildKit's is a
    random job id)."""
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).digest()
    return base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:25]


@dataclass(frozen=True, slots=True)
class PlatformFacts:
    """What the provenance takes from one platform's part of the build (wherever it ran):
    its materials, the secrets and agents its steps mount, whether a step could reach the
    network, and its steps (for `mode=max`)."""

    materials: tuple[Material, ...] = ()
    secrets: tuple[tuple[str, bool], ...] = ()
    ssh: tuple[tuple[str, bool], ...] = ()
    networked: bool = False
    steps: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"materials": [m.to_json() for m in self.materials],
                "secrets": [[i, o] for i, o in self.secrets],
                "ssh": [[i, o] for i, o in self.ssh], "networked": self.networked,
                "steps": [[s, list(i)] for s, i in self.steps]}  # fmt: skip

    @classmethod
    def from_json(cls, obj: Any) -> PlatformFacts:
        """Strict: a peer's malformed facts raise ValueError (the wire names the field)."""
        if not isinstance(obj, dict):
            raise ValueError("facts: not an object")
        try:
            return cls(
                tuple(Material.from_json(m) for m in obj["materials"]),
                tuple((str(i), bool(o)) for i, o in obj["secrets"]),
                tuple((str(i), bool(o)) for i, o in obj["ssh"]),
                bool(obj["networked"]),
                tuple((str(s), tuple(str(x) for x in i)) for s, i in obj["steps"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"facts: {exc}") from None


def platform_facts(
    graph: BuildGraph, platform: Platform | None = None, *, results: Sequence[str] = ()
) -> PlatformFacts:
    """The facts of `platform`'s image in a build's graph (or of the vertices `results`)."""
    keys = graph.upstream([graph.images[platform].result] if platform else results)
    order = [k for k in graph.vertices if k in keys]  # the graph's order: inputs first
    materials: dict[Material, None] = {}
    secrets: dict[tuple[str, bool], None] = {}
    ssh: dict[tuple[str, bool], None] = {}
    networked = False
    ids = {key: f"step{i}" for i, key in enumerate(order)}
    steps = []
    for key in order:
        vertex = graph.vertices[key]
        op = vertex.op
        steps.append((ids[key], tuple(f"{ids[i]}:0" for i in vertex.inputs if i in ids)))
        if isinstance(op, ImageSource):
            local = op.ref.startswith("oci-layout://")
            materials.setdefault(Material(op.ref.removeprefix("oci-layout://"), op.digest,
                                          op.platform, local=local))  # fmt: skip
        elif isinstance(op, GitSource):
            materials.setdefault(Material(op.remote, op.checksum, git=True))
        elif isinstance(op, ExecOp):
            networked = networked or op.network != "none"
            for mount in op.mounts:
                if isinstance(mount, SecretMount):
                    secrets.setdefault((mount.id, not mount.required))
                elif isinstance(mount, SshMount):
                    ssh.setdefault((mount.id, not mount.required))
    return PlatformFacts(_sorted(materials), tuple(sorted(secrets)), tuple(sorted(ssh)),
                         networked, tuple(steps))  # fmt: skip


def _sorted(materials: Iterable[Material]) -> tuple[Material, ...]:
    """Materials in one order wherever they were gathered (this machine, a node)."""
    return tuple(
        sorted(set(materials), key=lambda m: (m.git, m.ref, str(m.platform), m.digest, m.local))
    )


def merged(first: PlatformFacts, second: PlatformFacts) -> PlatformFacts:
    """The facts of a platform built in two parts (a node's, and the build-once stages it
    was sent); the steps are the first's."""
    return PlatformFacts(_sorted((*first.materials, *second.materials)),
                         tuple(sorted({*first.secrets, *second.secrets})),
                         tuple(sorted({*first.ssh, *second.ssh})),
                         first.networked or second.networked, first.steps)  # fmt: skip
