"""`polyarch verify`: prove that every platform of a pushed image is whole, and that it runs.

For an image (an index, or a single manifest) it checks, per platform entry:
- the entry exists for every expected platform, once; attestation entries (BuildKit's
  provenance and SBOMs, `unknown/unknown`) are recognised and not counted as platforms;
- the manifest and config are what their descriptors say (digest, size);
- the config's os/architecture/variant is the one the index claims, and its rootfs lists one
  diff_id per layer;
- every blob exists in the registry with the size the manifest gives, and its content has the
  manifest's digest (each blob is read once, hashed, and kept in the local store);
then starts the image (under emulation where needed) with its entrypoint, or `--run CMD`, in a
network namespace of its own, and probes HTTP endpoints inside that namespace. No port is
published on the host, so the platforms run side by side without clashing.

A process passes when it exits 0, or when it is still running once every probe has answered
as expected (or, with no probe, after a short settle time: a server that stays up). A probe
fails when its answer is wrong and stays so (`SETTLED` wrong answers with the same status in
a row, about 2 s: a server up and serving the wrong thing; a 5xx is taken for one still
starting and is waited out), or when the time is out; either way it says what it received
(status and the body's first lines).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from polyarch.concurrency import INTERRUPTED, task_pool, wait_all
from polyarch.errors import PolyarchError, StepError, UsageError
from polyarch.oci.models import MAX_DOCUMENT_SIZE, Descriptor, ImageConfig, Index, Manifest
from polyarch.platform import Platform
from polyarch.registry.client import RegistryClient
from polyarch.runtime import binfmt
from polyarch.runtime.netns import in_network_of
from polyarch.transfer.endpoints import ImageSource, RegistryRepository
from polyarch.worker.base import LayerRef
from polyarch.worker.local.native import ELF_MACHINES, foreign_binaries
from polyarch.worker.local.run import ImageRun, started
from polyarch.worker.local.worker import LocalWorker

_TAIL_LINES = 15
_BODY_LIMIT = 1024 * 1024  # what a probe reads of a body
SETTLED = 8  # wrong answers with one status in a row (asked 0.25 s apart): final


class Running(Protocol):
    """A started process as `watch` follows it (a runtime's Container)."""

    def poll(self) -> int | None: ...

    def pid(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """What a probe received: an HTTP answer (status, the body's start), or why none came."""

    status: int | None
    body: bytes = b""
    error: str = ""

    @property
    def final(self) -> bool:
        """A server that answers, and not with "not ready yet" (a 5xx: a proxy whose upstream
        is still starting, a 503 while warming up): asking again will give the same."""
        return self.status is not None and self.status < 500

    def shown(self) -> str:
        if self.status is None:
            return self.error
        lines = [line.strip() for line in self.body.decode("utf-8", "replace").splitlines()]
        start = " | ".join([line[:120] for line in lines if line][:3])
        return f"status {self.status}" + (f", body: {start}" if start else ", empty body")


@dataclass(frozen=True, slots=True)
class Probe:
    """`PORT/PATH[=STATUS][~TEXT]`: GET the path on the port; want the status (default 200)
    and, if given, the text in the body."""

    port: int
    path: str
    status: int = 200
    text: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Probe:
        rest, tilde, text = spec.partition("~")
        status = 200
        head, eq, code = rest.rpartition("=")
        if eq and code.isdigit() and len(code) == 3:
            rest, status = head, int(code)
        port_text, slash, path = rest.partition("/")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"--http wants PORT/PATH[=STATUS][~TEXT], got {spec!r}")
        return cls(int(port_text), "/" + path if slash else "/", status, text if tilde else None)

    def __str__(self) -> str:
        return f"{self.port}{self.path}"

    @property
    def wanted(self) -> str:
        return f"status {self.status}" + (f" with {self.text!r}" if self.text is not None else "")

    def accepts(self, answer: Answer) -> bool:
        if answer.status != self.status:
            return False
        return self.text is None or self.text.encode() in answer.body

    @property
    def label(self) -> str:
        """As written: `PORT/PATH`, then `=STATUS` unless 200, then `~TEXT`."""
        status = f"={self.status}" if self.status != 200 else ""
        text = f"~{self.text}" if self.text is not None else ""
        return f"{self}{status}{text}"


@dataclass
class PlatformResult:
    platform: str
    digest: str = ""
    size: int = 0
    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    probes: dict[str, str] = field(default_factory=dict)  # probe label -> outcome
    run: str = ""
    seconds: float = 0.0
    output: str = ""  # the last lines the process printed

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class VerifyReport:
    reference: str
    digest: str
    results: list[PlatformResult]
    attestations: int = 0
    problems: list[str] = field(default_factory=list)  # about the index itself

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.results)


@dataclass(frozen=True, slots=True)
class RunSpec:
    command: str | None = None  # `--run CMD` (through /bin/sh -c), else the image's own
    probes: tuple[Probe, ...] = ()
    timeout: float = 60.0
    settle: float = 3.0


class Verifier:
    def __init__(
        self,
        source: ImageSource,
        worker: LocalWorker,
        machine: Platform,
        *,
        note: Callable[[str], None] = lambda _line: None,
        arch_check: bool = True,
    ) -> None:
        self.source = source
        self.arch_check = arch_check
        self.client: RegistryClient | None = (
            source.client if isinstance(source, RegistryRepository) else None
        )
        self.worker = worker
        self.blobs = worker.blobs
        self.machine = machine
        self.note = note

    def verify(
        self, platforms: Sequence[Platform], run: RunSpec | None, *, jobs: int = 4
    ) -> VerifyReport:
        fetched = self.source.resolve()
        document = fetched.document
        report = VerifyReport(str(self.source), str(fetched.digest), [])
        entries: list[tuple[Platform | None, Descriptor | None]] = []
        if isinstance(document, Index):
            seen: dict[Platform, int] = {}
            for entry in document.manifests:
                if entry.is_attestation:
                    report.attestations += 1
                elif entry.platform is None:
                    report.problems.append(f"entry {entry.digest} names no platform")
                else:
                    seen[entry.platform] = seen.get(entry.platform, 0) + 1
                    entries.append((entry.platform, entry))
            for platform, count in seen.items():
                if count > 1:
                    report.problems.append(f"{count} entries claim {platform}: which one runs "
                                           "depends on the client")  # fmt: skip
            for want in platforms:
                if want not in seen:
                    have = ", ".join(str(p) for p in seen) or "none"
                    report.results.append(
                        PlatformResult(str(want), failures=[f"missing from the index "
                                                            f"(it has: {have})"])
                    )  # fmt: skip
            if platforms:
                entries = [(p, d) for p, d in entries if p in platforms]
        else:
            entries.append((None, None))  # a single image: its config says which platform

        def check(platform: Platform | None, entry: Descriptor | None) -> PlatformResult:
            return self._check_entry(platform, entry, document, str(fetched.digest), run)

        with task_pool(jobs) as pool:
            futures = [pool.submit(check, p, d) for p, d in entries]
            wait_all(futures)
        report.results = [*(f.result() for f in futures), *report.results]
        if not isinstance(document, Index):
            have = report.results[0].platform
            for want in platforms:
                if str(want) != have:
                    report.results.append(PlatformResult(
                        str(want), failures=[f"missing: {report.reference} is a single image "
                                             f"for {have}, not an index"],
                    ))  # fmt: skip
        return report

    # one platform --------------------------------------------------------------------------

    def _check_entry(
        self,
        platform: Platform | None,
        entry: Descriptor | None,
        top: Manifest | Index,
        top_digest: str,
        run: RunSpec | None,
    ) -> PlatformResult:
        started = time.monotonic()
        result = PlatformResult(str(platform) if platform else "?")
        try:
            if entry is None:
                assert isinstance(top, Manifest)
                manifest, result.digest = top, top_digest
            else:
                result.digest = str(entry.digest)
                document = self.source.fetch_document(entry)
                if not isinstance(document, Manifest):
                    result.failures.append("the entry is an index, not an image manifest")
                    return result
                manifest = document
            result.size = sum(b.size for b in manifest.blobs())
            config = self._check_config(manifest, platform, result)
            if config is not None:
                result.platform = str(config.platform) if platform is None else result.platform
                self._check_blobs(manifest, result)
                if result.ok and self.arch_check:
                    self._check_machine_types(manifest, config, result)
            if result.ok and run is not None and config is not None:
                self._run(manifest, config, run, result)
        except PolyarchError as exc:
            result.failures.append(str(exc))
        finally:
            result.seconds = time.monotonic() - started
        return result

    def _check_config(
        self, manifest: Manifest, platform: Platform | None, result: PlatformResult
    ) -> ImageConfig | None:
        if manifest.config.size > MAX_DOCUMENT_SIZE:
            result.failures.append(f"the config is {manifest.config.size} bytes, over the "
                                   f"{MAX_DOCUMENT_SIZE} limit for configs")  # fmt: skip
            return None
        raw = b"".join(self.source.open_blob(manifest.config))  # verified: digest and size
        self.blobs.put_bytes(raw, manifest.config.digest)
        config = ImageConfig.parse(raw, f"config {manifest.config.digest}")
        if platform is not None and config.platform != platform:
            result.failures.append(
                f"the index says {platform}, the image's config says {config.platform}"
            )
            return None
        if len(config.diff_ids) != len(manifest.layers):
            result.failures.append(
                f"the config lists {len(config.diff_ids)} layers (rootfs.diff_ids), the "
                f"manifest {len(manifest.layers)}"
            )
            return None
        result.checks.append(f"config {config.platform}")
        return config

    def _check_blobs(self, manifest: Manifest, result: PlatformResult) -> None:
        count = 0
        for blob in manifest.blobs():
            if self.client is not None:
                assert isinstance(self.source, RegistryRepository)
                size = self.client.blob_size(self.source.ref, blob.digest)
                if size is None:
                    result.failures.append(f"blob {blob.digest} is missing from the registry")
                    continue
                if size not in (blob.size, -1):
                    result.failures.append(
                        f"blob {blob.digest} is {size} bytes in the registry, the manifest "
                        f"says {blob.size}"
                    )
                    continue
            if blob.digest == manifest.config.digest:
                count += 1  # read and hashed already, by _check_config
                continue
            try:
                chunks = self.source.open_blob(blob)  # raises if the digest or size is wrong
                if self.blobs.has(blob.digest, blob.size):
                    for _chunk in chunks:
                        pass
                else:
                    self.blobs.ingest(chunks, blob.digest, blob.size)
            except PolyarchError as exc:
                result.failures.append(f"blob {blob.digest}: {exc}")
                continue
            count += 1
        if count == len(manifest.blobs()):
            result.checks.append(f"{count} blobs")

    def _check_machine_types(
        self, manifest: Manifest, config: ImageConfig, result: PlatformResult
    ) -> None:
        """Every executable and shared library is for the image's machine: an x86-64 binary
        in an arm64 image (a build-once leak, a copied host binary) fails here, though it
        would run on an amd64 host."""
        platform = config.platform
        if platform.architecture not in ELF_MACHINES:
            return
        layers = [
            LayerRef(d.digest, d.size, diff_id, d.media_type)
            for d, diff_id in zip(manifest.layers, config.diff_ids, strict=True)
        ]
        with self.worker.view(layers) as root:
            found = foreign_binaries(root.path, platform.architecture)
        if not found:
            result.checks.append("ELF machine types")
            return
        shown = ", ".join(f"/{path} ({machine})" for path, machine in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        result.failures.append(f"binaries for another machine in the {platform} image: "
                               f"{shown}{more} (--no-arch-check to allow)")  # fmt: skip

    # running -------------------------------------------------------------------------------

    def _run(
        self, manifest: Manifest, config: ImageConfig, spec: RunSpec, result: PlatformResult
    ) -> None:
        platform = config.platform
        state = binfmt.status(platform, self.machine)
        if state.kind == "missing":
            result.failures.append(
                f"cannot run {platform} here: no emulator registered (polyarch emulators install)"
            )
            return
        how = "native" if state.kind == "native" else f"qemu-{platform.qemu_name}"
        if spec.command is not None:
            args: tuple[str, ...] = ("/bin/sh", "-c", spec.command)
        else:
            args = tuple(config.entrypoint or ()) + tuple(config.cmd or ())
        if not args:
            result.failures.append("the image has neither an entrypoint nor a command to run")
            return
        layers = [
            LayerRef(d.digest, d.size, diff_id, d.media_type)
            for d, diff_id in zip(manifest.layers, config.diff_ids, strict=True)
        ]
        run = ImageRun(args, tuple(config.env), config.working_dir or "/", config.user or "",
                       how != "native")  # fmt: skip
        tail: list[str] = []
        lock = threading.Lock()

        def output(line: str) -> None:
            with lock:
                tail.append(line)
                del tail[:-_TAIL_LINES]

        def shown() -> str:
            with lock:
                return "\n".join(f"  | {line}" for line in tail) or "  (no output)"

        try:
            with started(self.worker, layers, run, output) as container:
                watch(container, spec, how, result, shown)
        except StepError as exc:
            result.failures.append(str(exc))


def watch(
    process: Running,
    spec: RunSpec,
    how: str,
    result: PlatformResult,
    shown: Callable[[], str],
) -> None:
    """Follow a started process until it has passed or failed (into `result`): its exit, its
    probes (asked every 0.25 s inside its network namespace), the time."""
    what = "--run command" if spec.command is not None else "entrypoint"
    started = time.monotonic()
    pending = list(spec.probes)
    last: dict[Probe, Answer] = {}
    alike: dict[Probe, int] = {}  # wrong answers in a row with the same status
    while True:
        code = process.poll()
        elapsed = time.monotonic() - started
        if INTERRUPTED.is_set():  # Ctrl-C: the container is stopped as the block ends
            result.failures.append("interrupted")
            return
        if code is not None:
            if code == 0 and not pending:
                result.run = f"{what} exited 0 ({how}, {elapsed:.1f} s)"
                result.output = shown()
            else:
                result.run = f"{what} exited {code} ({how}, {elapsed:.1f} s)"
                why = f"the {what} exited with status {code} ({how})"
                if pending:
                    why += f" before {', '.join(map(str, pending))} answered"
                    _fail_probes(pending, last, result)
                if how != "native" and code in (128 + 4, 128 + 11):
                    why += (" — killed by SIGILL/SIGSEGV under emulation: likely an "
                            "instruction the emulator does not support")  # fmt: skip
                result.failures.append(f"{why}:\n{shown()}")
            return
        pid = process.pid() if pending else None
        if pid is not None:
            for probe in list(pending):
                answer = _ask(pid, probe)
                if probe.accepts(answer):
                    pending.remove(probe)
                    found = f", {probe.text!r} found" if probe.text is not None else ""
                    result.probes[probe.label] = f"{probe.status}{found}"
                    continue
                before = last.get(probe)
                same = before is not None and before.status == answer.status
                alike[probe] = alike.get(probe, 0) + 1 if same else 1
                last[probe] = answer
                if answer.final and alike[probe] >= SETTLED:
                    result.run = f"{what} serving the wrong answer ({how}, {elapsed:.1f} s)"
                    _fail_probes([probe], last, result)
                    result.failures.append(
                        f"{probe}: wanted {probe.wanted}, received {answer.shown()} "
                        f"({SETTLED} times in a row)\n{shown()}"
                    )
                    return
        if spec.probes and not pending:
            result.run = f"{what} serving ({how}, {elapsed:.1f} s)"
            result.output = shown()
            return
        if not spec.probes and spec.command is None and elapsed >= spec.settle:
            result.run = f"{what} running after {spec.settle:.0f} s ({how})"
            result.output = shown()
            return
        if elapsed >= spec.timeout:
            result.run = f"{what} timed out ({how}, {spec.timeout:.0f} s)"
            if pending:
                _fail_probes(pending, last, result)
                for probe in pending:
                    received = last[probe].shown() if probe in last else "no attempt"
                    result.failures.append(
                        f"{probe}: no good answer within {spec.timeout:.0f} s (wanted "
                        f"{probe.wanted}, last received: {received})\n{shown()}"
                    )
            else:
                result.failures.append(
                    f"the {what} did not finish within {spec.timeout:.0f} s\n{shown()}"
                )
            return
        time.sleep(0.25)


def _fail_probes(
    probes: Sequence[Probe], last: dict[Probe, Answer], result: PlatformResult
) -> None:
    for probe in probes:
        received = last[probe].shown() if probe in last else "no answer"
        result.probes[probe.label] = f"FAIL ({received})"


def _ask(pid: int, probe: Probe) -> Answer:
    """GET the probe's path inside the network namespace of `pid`."""

    def get() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", probe.port, timeout=5)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "polyarch-verify"})
            resp = conn.getresponse()
            return resp.status, resp.read(_BODY_LIMIT)
        finally:
            conn.close()

    try:
        status, body = in_network_of(pid, get)
    except (OSError, http.client.HTTPException, PolyarchError) as exc:
        return Answer(None, error=f"{exc.__class__.__name__}: {exc}".rstrip(": "))
    return Answer(status, body)
