"""An image as a build step sees it: its layers, its config, its history. Mostly pure."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from polyarch.digest import Digest
from polyarch.errors import PolyarchError
from polyarch.platform import Platform

BUILDKIT_COMMENT = "buildkit.dockerfile.v0"


@dataclass(frozen=True, slots=True)
class LayerRef:
    digest: Digest
    size: int
    diff_id: Digest
    media_type: str


@dataclass
class ImageState:
    platform: Platform
    layers: list[LayerRef] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # the image config's "config" object
    history: list[dict[str, Any]] = field(default_factory=list)
    author: str | None = None
    cmd_from_base: bool = True  # ENTRYPOINT resets a CMD inherited from the base image
    latest: str = ""  # creation time of the newest step so far (the image's "created")

    def clone(self) -> ImageState:
        return ImageState(
            self.platform,
            list(self.layers),
            copy.deepcopy(self.config),
            copy.deepcopy(self.history),
            self.author,
            self.cmd_from_base,
            self.latest,
        )

    @property
    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            name, _, value = item.partition("=")
            out[name] = value
        return out

    def set_env(self, name: str, value: str) -> None:
        items = list(self.config.get("Env") or [])
        for i, item in enumerate(items):
            if item.partition("=")[0] == name:
                items[i] = f"{name}={value}"
                break
        else:
            items.append(f"{name}={value}")
        self.config["Env"] = items


def from_base_config(raw: bytes, platform: Platform) -> ImageState:
    doc = json.loads(raw)
    state = ImageState(platform)
    state.config = dict(doc.get("config") or {})
    state.history = list(doc.get("history") or [])
    state.author = doc.get("author")
    state.latest = doc.get("created") or ""
    return state


def apply_meta(state: ImageState, definition: dict[str, Any], created: str) -> None:
    """Apply a metadata step (ENV, LABEL, USER, CMD ...) to the config, with its history."""
    kind = definition["instruction"]
    cfg = state.config
    shown = ""
    if kind == "ENV":
        changed = []
        current = state.env
        for name, value in definition.get("pairs") or definition["env"]:
            if current.get(name) != value:
                state.set_env(name, value)
                changed.append(f"{name}={value}")
        shown = "ENV " + " ".join(changed)
    elif kind == "LABEL":
        labels = dict(cfg.get("Labels") or {})
        for item in definition["args"]:
            key, _, value = item.partition("=")
            labels[key] = value
        cfg["Labels"] = labels
        shown = "LABEL " + " ".join(definition["args"])
    elif kind == "USER":
        cfg["User"] = definition["user"]
        shown = f"USER {definition['user']}"
    elif kind == "EXPOSE":
        ports = dict(cfg.get("ExposedPorts") or {})
        for port in definition["args"]:
            ports[port if "/" in port else f"{port}/tcp"] = {}
        cfg["ExposedPorts"] = ports
        shown = "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(ports)) + "]"
    elif kind == "VOLUME":
        volumes = dict(cfg.get("Volumes") or {})
        for path in definition["args"]:
            volumes[path] = {}
        cfg["Volumes"] = volumes
        shown = "VOLUME " + json.dumps(definition["args"])
    elif kind == "STOPSIGNAL":
        cfg["StopSignal"] = definition["args"][0]
        shown = f"STOPSIGNAL {definition['args'][0]}"
    elif kind in ("CMD", "ENTRYPOINT"):
        argv = _command(definition)
        cfg["Cmd" if kind == "CMD" else "Entrypoint"] = argv
        if kind == "CMD":
            state.cmd_from_base = False
        elif state.cmd_from_base:
            cfg.pop("Cmd", None)  # ENTRYPOINT resets an inherited CMD, as Docker does
        shown = f"{kind} {json.dumps(argv)}"
    elif kind == "SHELL":
        cfg["Shell"] = list(definition["shell"])
        shown = "SHELL " + json.dumps(definition["shell"])
    elif kind == "HEALTHCHECK":
        cfg["Healthcheck"] = _healthcheck(definition)
        shown = "HEALTHCHECK " + json.dumps(cfg["Healthcheck"]["Test"])
    elif kind == "ONBUILD":
        cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), definition["args"][0]]
        shown = f"ONBUILD {definition['args'][0]}"
    elif kind == "MAINTAINER":
        state.author = definition["args"][0]
        shown = f"MAINTAINER {definition['args'][0]}"
    else:
        raise PolyarchError(f"unknown metadata step {kind}")
    entry = {"created": created, "created_by": shown, "comment": BUILDKIT_COMMENT}
    state.history.append({**entry, "empty_layer": True})


def _command(definition: dict[str, Any]) -> list[str]:
    args = list(definition["args"])
    if definition.get("json"):
        return args
    if not args:
        return []
    return [*definition.get("shell", ["/bin/sh", "-c"]), " ".join(args)]


_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def _duration_ns(text: str) -> int:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", text):
        total += float(number) * _UNITS[unit]
    return int(total)


def _healthcheck(definition: dict[str, Any]) -> dict[str, Any]:
    args = list(definition["args"])
    if args[0].upper() == "NONE":
        return {"Test": ["NONE"]}
    command = args[1:]
    if definition.get("json"):
        test = ["CMD", *command]
    else:
        test = ["CMD-SHELL", " ".join(command)]
    out: dict[str, Any] = {"Test": test}
    flags = definition.get("flags") or {}
    for flag, key in (
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ):
        if flags.get(flag):
            out[key] = _duration_ns(flags[flag])
    if flags.get("retries"):
        out["Retries"] = int(flags["retries"])
    return out


def image_config_json(state: ImageState, created: str) -> bytes:
    """The OCI image config document, fields in a stable order."""
    doc: dict[str, Any] = {"architecture": state.platform.architecture, "os": state.platform.os}
    if state.platform.variant:
        doc["variant"] = state.platform.variant
    if state.author:
        doc["author"] = state.author
    doc["created"] = created
    doc["config"] = state.config
    doc["rootfs"] = {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in state.layers]}
    doc["history"] = state.history
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
