"""Start and stop Debian's docker-registry (CNCF Distribution) on 127.0.0.1, for tests and bench.

`start_plain` serves plain HTTP; `start_secure` serves TLS with a certificate from a throwaway CA
it makes with openssl, and requires htpasswd basic auth. The caller stops what it started.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry")


class RegistryUnavailable(Exception):
    """The registry binary (or openssl/htpasswd) is not installed here."""


@dataclass
class RunningRegistry:
    host: str
    root: Path
    process: subprocess.Popen[bytes]
    certs_dir: Path | None = None
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    authfile: Path | None = None

    def ref(self, repo_and_tag: str) -> str:
        return f"{self.host}/{repo_and_tag}"

    def polyarch_args(self) -> list[str]:
        args: list[str] = []
        if self.certs_dir:
            args += ["--certs-dir", str(self.certs_dir)]
        if self.authfile:
            args += ["--authfile", str(self.authfile)]
        return args

    def skopeo_args(self, direction: str) -> list[str]:
        """Flags for skopeo's --src-*/--dest-* side ("src", "dest"), or plain ("")."""
        prefix = f"{direction}-" if direction else ""
        if self.ca_file is None:
            return [f"--{prefix}tls-verify=false"]
        args = [f"--{prefix}cert-dir", str(self.ca_file.parent)]
        if self.username:
            args += [f"--{prefix}creds", f"{self.username}:{self.password}"]
        return args

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(
    root: Path, extra_config: str, scheme: str, verify: ssl.SSLContext | bool
) -> RunningRegistry:
    if REGISTRY_BIN is None:
        raise RegistryUnavailable("docker-registry is not installed (tools/dev setup installs it)")
    port = _free_port()
    host = f"127.0.0.1:{port}"
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n" + extra_config
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            status = httpx.get(f"{scheme}://{host}/v2/", verify=verify, timeout=1).status_code
            if status in (200, 401):
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"registry did not start: {(root / 'registry.log').read_text()}")
        time.sleep(0.05)
    return RunningRegistry(host, root, process)


def start_plain(root: Path) -> RunningRegistry:
    return _start(root, "", "http", False)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def start_secure(root: Path) -> RunningRegistry:
    if shutil.which("htpasswd") is None or shutil.which("openssl") is None:
        raise RegistryUnavailable("htpasswd (apache2-utils) and openssl are needed")
    pki = root / "pki"
    pki.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=polyarch test CA", cwd=pki)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
             cwd=pki)  # fmt: skip
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
             cwd=pki)  # fmt: skip
    username, password = "builder", "correct horse battery staple"
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True
    ).stdout
    (root / "htpasswd").write_text(htpasswd)
    extra = (
        f"  tls:\n    certificate: {pki / 'server.crt'}\n    key: {pki / 'server.key'}\n"
        f"auth:\n  htpasswd:\n    realm: polyarch-test\n    path: {root / 'htpasswd'}\n"
    )
    running = _start(root, extra, "https", ssl.create_default_context(cafile=str(pki / "ca.crt")))
    certs_dir = root / "certs.d"
    (certs_dir / running.host).mkdir(parents=True)
    shutil.copy(pki / "ca.crt", certs_dir / running.host / "ca.crt")
    authfile = root / "auth.json"
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {running.host: {"auth": token}}}))
    running.certs_dir = certs_dir
    running.ca_file = certs_dir / running.host / "ca.crt"
    running.username, running.password, running.authfile = username, password, authfile
    return running


class TokenProxy:
    """Bearer-token auth (the Docker token protocol) in front of a plain registry, on
    127.0.0.1: `/token` issues a token for the scopes asked to `username`/`password` only (no
    anonymous tokens), and every `/v2/` request needs a token that covers its repository's
    pull (else 401 with the challenge). Reads only (GET and HEAD) are passed on. `issued`
    holds the scopes of each token given."""

    def __init__(self, upstream: str, username: str, password: str) -> None:
        import secrets as tokens
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        self.issued: list[tuple[str, ...]] = []
        self.served: list[str] = []
        valid: dict[str, frozenset[str]] = {}
        basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _token(self) -> None:
                if self.headers.get("Authorization") != basic:
                    self._reply(401, {"Content-Type": "application/json"}, b'{"details":"no"}')
                    return
                scopes = tuple(parse_qs(urlsplit(self.path).query).get("scope", []))
                token = tokens.token_hex(16)
                valid[token] = frozenset(scopes)
                proxy.issued.append(scopes)
                body = json.dumps({"token": token, "expires_in": 300}).encode()
                self._reply(200, {"Content-Type": "application/json"}, body)

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    self._token()
                    return
                path = urlsplit(self.path).path
                parts = path.split("/")
                marker = next((i for i, p in enumerate(parts) if p in ("manifests", "blobs",
                                                                      "tags")), None)  # fmt: skip
                repository = "/".join(parts[2:marker]) if marker else ""
                needed = f"repository:{repository}:pull" if repository else ""
                header = self.headers.get("Authorization", "")
                granted = valid.get(header.removeprefix("Bearer "))
                if granted is None or (needed and needed not in granted):
                    scope = f',scope="{needed}"' if needed else ""
                    realm = f'Bearer realm="http://{proxy.host}/token",service="proxy"{scope}'
                    denied = b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}'
                    self._reply(401, {"WWW-Authenticate": realm,
                                      "Content-Type": "application/json"}, denied)  # fmt: skip
                    return
                proxy.served.append(path)
                accept = {"Accept": self.headers.get("Accept", "")}
                upstream_reply = httpx.request(self.command, f"http://{upstream}{self.path}",
                                               headers=accept)  # fmt: skip
                keep = ("Content-Type", "Docker-Content-Digest")
                self._reply(upstream_reply.status_code,
                            {k: upstream_reply.headers[k] for k in keep
                             if k in upstream_reply.headers},
                            upstream_reply.content)  # fmt: skip

            def do_HEAD(self) -> None:
                self.do_GET()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
