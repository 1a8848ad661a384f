"""Registry credentials from docker's `config.json` and credential helpers.

Lookup for one registry host, as the docker CLI does it:
1. `credHelpers[host]` names a helper: run `docker-credential-<helper> get`.
2. else `credsStore` names a helper for every host: run it; "not found" falls back to 3.
3. else `auths[host]` (`auth` = base64 "user:password", or `username`/`password`,
   `identitytoken`, `registrytoken`).
A helper that answers "credentials not found" means anonymous access. A helper that cannot be
run, or fails in any other way, is an error: polyarch never falls back to another host's
credentials or silently goes anonymous. Keys in `auths` match by host only (URL forms such as
`https://host/v1/` are reduced to the host); Docker Hub is known under several names.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from polyarch.errors import CredentialError

_HUB_KEYS: Final = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
    "https://registry-1.docker.io",
)
_NOT_FOUND: Final = "credentials not found in native keychain"


@dataclass(frozen=True, slots=True)
class Credential:
    """What to authenticate with. `repr` never shows a secret."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)  # OAuth2 refresh token
    registry_token: str | None = field(default=None, repr=False)  # a bearer token to use as is
    source: str = field(default="", compare=False)  # where it came from, for messages

    @property
    def is_anonymous(self) -> bool:
        return not (self.password or self.identity_token or self.registry_token)

    def __repr__(self) -> str:
        kind = "anonymous"
        if self.registry_token:
            kind = "registry-token"
        elif self.identity_token:
            kind = "identity-token"
        elif self.password:
            kind = "password"
        return f"Credential(username={self.username!r}, kind={kind})"


ANONYMOUS: Final = Credential()


class CredentialSource(Protocol):
    def get(self, host: str) -> Credential: ...


HelperRunner = Callable[[str, str], tuple[int, str, str]]
"""Run a credential helper: (program, stdin) -> (exit code, stdout, stderr)."""


def run_helper(program: str, stdin: str) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(
            [program, "get"], input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise CredentialError(
            f"credential helper {program!r} is configured but not installed (not on PATH)"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialError(f"credential helper {program!r} could not run: {exc}") from None
    return proc.returncode, proc.stdout, proc.stderr


def host_of_key(key: str) -> str:
    """`https://host:5000/v2/` -> `host:5000`; a bare `host:5000` stays as it is."""
    text = key.strip()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return text.split("/", 1)[0].lower()


def _is_hub(host: str) -> bool:
    return host in {host_of_key(k) for k in _HUB_KEYS}


class DockerConfigCredentials:
    """Credentials from a docker `config.json` (or a podman/skopeo `auth.json`, same format)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        source: str = "config.json",
        runner: HelperRunner = run_helper,
    ) -> None:
        self._source = source
        self._runner = runner
        auths = config.get("auths") or {}
        helpers = config.get("credHelpers") or {}
        store = config.get("credsStore")
        if not isinstance(auths, dict) or not isinstance(helpers, dict):
            raise CredentialError(f"{source}: 'auths' and 'credHelpers' must be objects")
        if store is not None and not isinstance(store, str):
            raise CredentialError(f"{source}: 'credsStore' must be a string")
        self._auths: dict[str, Any] = {}
        for key, value in auths.items():
            self._auths.setdefault(host_of_key(key), value)
        self._helpers = {host_of_key(k): v for k, v in helpers.items()}
        self._store = store or None

    @classmethod
    def load(
        cls, path: Path | None = None, *, runner: HelperRunner = run_helper
    ) -> DockerConfigCredentials:
        """Read `path`, or the default file; a missing default file means no credentials."""
        explicit = path is not None
        target = path if path is not None else default_config_path()
        try:
            text = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            if explicit:
                raise CredentialError(f"auth file {target} does not exist") from None
            return cls({}, source=str(target), runner=runner)
        except OSError as exc:
            raise CredentialError(f"cannot read {target}: {exc}") from None
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise CredentialError(f"{target} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CredentialError(f"{target} must hold a JSON object")
        return cls(data, source=str(target), runner=runner)

    def get(self, host: str) -> Credential:
        host = host.lower()
        keys = [host_of_key(k) for k in _HUB_KEYS] if _is_hub(host) else [host]
        for key in keys:
            helper = self._helpers.get(key)
            if helper:
                return self._from_helper(helper, key, host)
        if self._store:
            found = self._from_helper(self._store, keys[0], host)
            if not found.is_anonymous:
                return found
        for key in keys:
            entry = self._auths.get(key)
            if entry:
                return self._from_entry(entry, key)
        return ANONYMOUS

    def _from_helper(self, helper: str, server: str, host: str) -> Credential:
        program = f"docker-credential-{helper}"
        if "/" in helper or helper.startswith("."):
            raise CredentialError(f"{self._source}: invalid credential helper name {helper!r}")
        server_url = "https://index.docker.io/v1/" if _is_hub(host) else server
        code, out, err = self._runner(program, server_url)
        if code != 0:
            message = (out.strip() or err.strip())[:200]
            if _NOT_FOUND in message.lower() or "not found" in message.lower():
                return ANONYMOUS
            raise CredentialError(
                f"credential helper {program} failed for {host} (exit {code}): {message}"
            )
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            raise CredentialError(f"credential helper {program} printed invalid JSON") from None
        if not isinstance(data, dict):
            raise CredentialError(f"credential helper {program} printed no JSON object")
        username = data.get("Username")
        secret = data.get("Secret")
        if not isinstance(secret, str) or not secret:
            return ANONYMOUS
        where = f"credential helper {program}"
        if username == "<token>":
            return Credential(identity_token=secret, source=where)
        return Credential(username=str(username or ""), password=secret, source=where)

    def _from_entry(self, entry: Any, key: str) -> Credential:
        if not isinstance(entry, dict):
            raise CredentialError(f"{self._source}: auths[{key!r}] must be an object")
        username = entry.get("username")
        password = entry.get("password")
        encoded = entry.get("auth")
        if encoded:
            try:
                decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialError(
                    f"{self._source}: auths[{key!r}].auth is not base64 of user:password"
                ) from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise CredentialError(
                    f"{self._source}: auths[{key!r}].auth does not hold user:password"
                )
        return Credential(
            username=username or None,
            password=password or None,
            identity_token=entry.get("identitytoken") or None,
            registry_token=entry.get("registrytoken") or None,
            source=f"{self._source} (auths[{key!r}])",
        )


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    env = os.environ if environ is None else environ
    if env.get("REGISTRY_AUTH_FILE"):
        return Path(env["REGISTRY_AUTH_FILE"])
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path.home() / ".docker" / "config.json"
