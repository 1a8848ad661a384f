"""Where a build's record (what its steps' keys were made of) is kept for the next build of
the same target to explain itself against: one gzip'd JSON file per target in the workspace,
with its fingerprint beside it, so that a rebuild that changed nothing writes nothing."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
from pathlib import Path

from polyarch.solver.explain import BuildRecord

MAX_RECORD = 256 * 1024 * 1024  # inflated; a larger one is not read (explanations start afresh)


class ExplainRecords:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, target: str) -> tuple[Path, Path]:
        name = hashlib.sha256(target.encode("utf-8")).hexdigest()[:32]
        return self.directory / f"{name}.json.gz", self.directory / f"{name}.fingerprint"

    def load(self, target: str) -> BuildRecord | None:
        """The last record of `target`; None when there is none or it cannot be read (a
        record is only a help: a damaged one is as good as none)."""
        path, _ = self._paths(target)
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read(MAX_RECORD + 1)
            if len(raw) > MAX_RECORD:
                return None
            data = json.loads(raw)
        except (OSError, EOFError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("target") != target:
            return None
        return BuildRecord.from_json(data)

    def save(self, target: str, record: BuildRecord) -> bool:
        """Keep `record` as the last of `target`, atomically; False when the one kept has the
        same fingerprint (nothing is written)."""
        path, stamp = self._paths(target)
        fingerprint = hashlib.sha256(record.fingerprint().encode("utf-8")).hexdigest()
        with contextlib.suppress(OSError):
            if stamp.read_text(encoding="ascii") == fingerprint and path.exists():
                return False
        data = json.dumps({"target": target, **record.to_json()}, separators=(",", ":"))
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with gzip.open(partial, "wb", compresslevel=1) as f:
                f.write(data.encode("utf-8"))
            partial.replace(path)
            stamp.write_text(fingerprint, encoding="ascii")
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            return False
        return True
