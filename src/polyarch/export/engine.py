"""`--load`: the image into the local container engine, as buildx loads it. Effects.

The Docker engine (its API socket: `DOCKER_HOST`, else /var/run/docker.sock) gets a docker
archive through `POST /images/load`; an engine whose image store is containerd's takes a
multi-platform image whole (an OCI archive with its index), one with the classic store
cannot hold one, and is refused with the reason. Without a Docker engine, podman's store
(`podman load`) when podman is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence

import httpx

from polyarch.errors import PolyarchError, UsageError
from polyarch.export.docker_archive import write_docker_archive, write_oci_archive
from polyarch.oci.models import Descriptor, Index, parse_document
from polyarch.store.layout import OciLayout

_CHUNK = 1 << 20


class EngineError(PolyarchError):
    """The local container engine refused the image or cannot be reached."""


def _client() -> tuple[httpx.Client, str]:
    host = os.environ.get("DOCKER_HOST", "") or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        path = host.removeprefix("unix://")
        transport = httpx.HTTPTransport(uds=path)
        return httpx.Client(transport=transport, base_url="http://docker", timeout=600), host
    if host.startswith("tcp://"):
        return httpx.Client(base_url="http://" + host.removeprefix("tcp://"), timeout=600), host
    raise UsageError(f"DOCKER_HOST={host}: polyarch loads into unix:// or tcp:// engines")


def engine_available() -> bool:
    client, _ = _client()
    try:
        return client.get("/_ping").status_code == 200
    except httpx.HTTPError:
        return False
    finally:
        client.close()


def load_image(layout: OciLayout, top: Descriptor, names: Sequence[str]) -> str:
    """Load into the engine; returns what the engine said ("Loaded image: ...")."""
    client, host = _client()
    try:
        try:
            info = client.get("/info")
        except httpx.HTTPError as exc:
            if shutil.which("podman"):
                return _podman_load(layout, top, names)
            raise EngineError(f"--load: no container engine at {host} ({exc}); start Docker "
                              "(or set DOCKER_HOST), or write the image with "
                              "--output type=docker,dest=FILE") from None  # fmt: skip
        document = parse_document(layout.read_document(top), top.media_type)
        several = isinstance(document, Index) and len(document.images()) > 1
        if several and not _containerd_store(info):
            raise EngineError(
                f"--load: the Docker engine at {host} keeps one platform per image (its image "
                "store is not containerd's), and this build made "
                f"{len(document.images()) if isinstance(document, Index) else 1}: build one "
                "--platform to load, push the index, or enable the containerd image store"
            )
        body = _streamed(layout, top, names, oci=several)
        response = client.post("/images/load", params={"quiet": "0"}, content=body,
                               headers={"Content-Type": "application/x-tar"})  # fmt: skip
        return _loaded(response, host)
    finally:
        client.close()


def _containerd_store(info: httpx.Response) -> bool:
    try:
        status = info.json().get("DriverStatus") or []
    except ValueError:
        return False
    return any(pair[:2] == ["driver-type", "io.containerd.snapshotter.v1"] for pair in status)


def _streamed(
    layout: OciLayout, top: Descriptor, names: Sequence[str], *, oci: bool
) -> Iterator[bytes]:
    """The archive, made in a thread into a pipe and read here as the request body."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        with os.fdopen(write_fd, "wb") as out:
            try:
                if oci:
                    write_oci_archive(layout, top, names, out)
                else:
                    write_docker_archive(layout, top, names, out)
            except BaseException as exc:
                failure.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk
    thread.join()
    if failure:
        raise failure[0]


def _loaded(response: httpx.Response, host: str) -> str:
    said: list[str] = []
    for line in response.text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            said.append(line)
            continue
        if message.get("error"):
            raise EngineError(f"--load: the engine at {host} refused the image: "
                              f"{message['error']}")  # fmt: skip
        text = str(message.get("stream", "")).strip()
        if text:
            said.append(text)
    if response.status_code != 200:
        raise EngineError(f"--load: the engine at {host} answered {response.status_code}: "
                          f"{' '.join(said)[:500]}")  # fmt: skip
    return "; ".join(said)


def _podman_load(layout: OciLayout, top: Descriptor, names: Sequence[str]) -> str:
    podman = shutil.which("podman")
    assert podman is not None
    proc = subprocess.Popen([podman, "load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None
    try:
        write_oci_archive(layout, top, names, proc.stdin)
    finally:
        proc.stdin.close()
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise EngineError(f"--load: podman load failed: {err.decode(errors='replace')[-500:]}")
    return out.decode(errors="replace").strip()


__all__ = ["EngineError", "engine_available", "load_image"]
