"""Finding and reading bake files (`docker-bake.hcl`, `docker-bake.json`, Compose files) and
turning them into a resolved definition, as `docker buildx bake` does."""

from __future__ import annotations

import datetime
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyarch.bake.compose import compose_config, is_compose
from polyarch.bake.definition import BakeError, Config
from polyarch.bake.functions import Environment
from polyarch.bake.hcl import HclError, parse
from polyarch.bake.parser import Parsed, ParseOptions, Parser, SourceFile, json_body

# Looked for in this order, in the working directory; every one found is read and they are
# merged in this order (buildx's defaultFilenames).
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml",
                 "docker-bake.json", "docker-bake.hcl", "docker-bake.override.json",
                 "docker-bake.override.hcl")  # fmt: skip
MAX_FILE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BakeFile:
    name: str  # as given or found
    text: str
    directory: Path  # absolute: where the file is (the working directory for stdin)


def read_files(names: Sequence[str], cwd: Path) -> list[BakeFile]:
    """The files named (`-` is stdin), else the default ones found in `cwd`."""
    out: list[BakeFile] = []
    wanted = list(names) or [n for n in DEFAULT_FILES if (cwd / n).is_file()]
    for name in wanted:
        if name == "-":
            text = sys.stdin.read(MAX_FILE + 1)
            directory = cwd
        else:
            path = cwd / name.removeprefix("cwd://")
            try:
                with path.open("rb") as f:
                    raw = f.read(MAX_FILE + 1)
            except FileNotFoundError:
                raise BakeError(f"{name}: no such file") from None
            except OSError as exc:
                raise BakeError(f"{name}: cannot read it: {exc.strerror or exc}") from None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BakeError(f"{name}: not UTF-8") from None
            directory = path.resolve().parent
        if len(text) > MAX_FILE:
            raise BakeError(f"{name}: over {MAX_FILE} bytes")
        out.append(BakeFile(name, text, directory))
    if not out:
        raise BakeError("couldn't find a bake definition: no " + ", ".join(DEFAULT_FILES) +
                        " here (or name one with -f)")  # fmt: skip
    return out


def dotenv(cwd: Path, env: Mapping[str, str]) -> dict[str, str]:
    """`env` and, under it, the `.env` file of `cwd` (Compose's rule: the environment wins)."""
    out = dict(env)
    path = cwd / ".env"
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$", line)
        if match is None or line.lstrip().startswith("#"):
            continue
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        out.setdefault(key, value)
    return out


def load(
    files: Sequence[BakeFile],
    cwd: Path,
    env: Mapping[str, str],
    builtins: Mapping[str, str],
    variables: Mapping[str, str] | None = None,
) -> Parsed:
    """The definition the files make: Compose files first, then HCL and JSON files, merged in
    order; variables from `variables` (`--var`), then the environment."""
    import yaml  # noqa: PLC0415 (PyYAML only for Compose files)

    compose: list[tuple[str, Any]] = []
    sources: list[SourceFile] = []
    for file in files:
        lowered = file.name.lower()
        data: Any = None
        if not lowered.endswith((".json", ".hcl")):
            try:
                data = yaml.safe_load(file.text)
            except yaml.YAMLError as exc:
                if lowered.endswith((".yml", ".yaml")):
                    raise BakeError(f"{file.name}: not valid YAML: {exc}") from None
                data = None
        if (data is not None and is_compose(file.name, data)) or lowered.endswith(
            (".yml", ".yaml")
        ):
            compose.append((file.name, data))
            continue
        if lowered.endswith(".json"):
            try:
                parsed = json.loads(file.text)
            except ValueError as exc:
                raise BakeError(f"{file.name}: not valid JSON: {exc}") from None
            body = json_body(parsed, file.name)
        else:
            try:
                body = parse(file.text, file.name)
            except HclError as exc:
                raise BakeError(str(exc)) from None
        sources.append(SourceFile(file.name, body, str(file.directory)))
    config = Config()
    if compose:
        config.add(compose_config(compose, dotenv(cwd, env)))
    overrides = dict(variables or {})

    def lookup(name: str) -> str | None:
        return overrides.get(name, env.get(name))

    home = env.get("HOME") or str(Path("~").expanduser())
    options = ParseOptions(lookup, builtins, Environment(datetime.datetime.now(datetime.UTC), home))
    parsed = Parser(sources, options).parse() if sources else Parsed(Config(), {}, {})
    config.add(parsed.config)
    return Parsed(config, parsed.variables, parsed.descriptions)
