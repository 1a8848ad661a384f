"""Named builders, kept in the user's configuration directory (`builders.json`), with buildx's
habits: create (one node per call, `--append` for more), ls, use, rm, inspect. The builder
`default` is this machine alone and is never stored."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from polyarch.errors import UsageError
from polyarch.platform import Platform

DEFAULT = "default"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: str  # "local" or "ssh"
    host: str = ""
    user: str = ""
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        if text == "local":
            return cls("local")
        parts = urlsplit(text)
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/"):
            raise UsageError(f"endpoint {text!r}: want local or ssh://[user@]host[:port]")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"endpoint {text!r}: bad port") from None
        return cls("ssh", parts.hostname, parts.username or "", port)

    def __str__(self) -> str:
        if self.kind == "local":
            return "local"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    endpoint: str
    platforms: tuple[str, ...] = ()  # what it builds natively (empty: ask it)
    command: str = "polyarch"  # how `polyarch` is started there (a path, VAR=value prefixes)

    def platform_list(self) -> tuple[Platform, ...]:
        return tuple(Platform.parse(p) for p in self.platforms)


@dataclass(frozen=True, slots=True)
class BuilderSpec:
    name: str
    nodes: tuple[Node, ...] = field(default_factory=tuple)


def config_dir() -> Path:
    if os.environ.get("POLYARCH_CONFIG_DIR"):
        return Path(os.environ["POLYARCH_CONFIG_DIR"])
    return Path(platformdirs.user_config_dir("polyarch"))


class BuilderStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or config_dir()) / "builders.json"

    def _read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"current": DEFAULT, "builders": {}}
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.path}: cannot read the builders ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("builders"), dict):
            raise UsageError(f"{self.path}: not a builders file")
        return data

    def _write(self, data: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".builders-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)

    def all(self) -> list[BuilderSpec]:
        data = self._read()
        out = [BuilderSpec(DEFAULT)]
        for name, value in sorted(data["builders"].items()):  # type: ignore[attr-defined]
            nodes = tuple(Node(n["name"], n["endpoint"], tuple(n.get("platforms", ())),
                               n.get("command", "polyarch")) for n in value["nodes"])  # fmt: skip
            out.append(BuilderSpec(name, nodes))
        return out

    def current(self) -> str:
        return str(self._read().get("current") or DEFAULT)

    def get(self, name: str | None) -> BuilderSpec:
        wanted = name or self.current()
        for spec in self.all():
            if spec.name == wanted:
                return spec
        names = ", ".join(s.name for s in self.all())
        raise UsageError(f"no builder {wanted!r} (there are: {names}); create it with "
                         f"`polyarch builder create {wanted} --node NAME=ENDPOINT`")  # fmt: skip

    def add(self, name: str, *added: Node, append: bool) -> BuilderSpec:
        """Add the nodes to builder `name` (created unless `append`): all of them, or none."""
        if name == DEFAULT:
            raise UsageError("the default builder is this machine; name yours otherwise")
        for node in added:
            if not _NAME.match(name) or not _NAME.match(node.name):
                raise UsageError(f"builder and node names are letters, digits, _ . - (got "
                                 f"{name!r}, {node.name!r})")  # fmt: skip
            Endpoint.parse(node.endpoint)
            for p in node.platforms:
                Platform.parse(p)
        data = self._read()
        builders: dict[str, dict[str, list[dict[str, object]]]] = data["builders"]  # type: ignore[assignment]
        if name in builders and not append:
            raise UsageError(f"builder {name!r} exists: add a node with --append, or remove it "
                             "with `polyarch builder rm`")  # fmt: skip
        if name not in builders and append:
            raise UsageError(f"no builder {name!r} to append to")
        nodes = builders.setdefault(name, {"nodes": []})["nodes"]
        for node in added:
            if any(n["name"] == node.name for n in nodes):
                raise UsageError(f"builder {name!r} has a node {node.name!r} already")
            nodes.append(asdict(node) | {"platforms": list(node.platforms)})
        self._write(data)
        return self.get(name)

    def use(self, name: str) -> None:
        self.get(name)
        data = self._read()
        data["current"] = name
        self._write(data)

    def remove(self, name: str) -> None:
        if name == DEFAULT:
            raise UsageError("the default builder cannot be removed")
        data = self._read()
        builders: dict[str, object] = data["builders"]  # type: ignore[assignment]
        if name not in builders:
            raise UsageError(f"no builder {name!r}")
        del builders[name]
        if data.get("current") == name:
            data["current"] = DEFAULT
        self._write(data)
