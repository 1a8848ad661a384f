"""The step cache: which layer each step produced. `CacheBackend` is what the solver asks;
`SqliteCache` keeps it in the workspace, in sqlite (WAL).

A row is written only after the layer blob is committed and its snapshot is in place, in one
transaction: if polyarch is killed at any moment, a later build either finds a complete entry
or none, never one that points at missing or half-written content. A row whose blob has gone
missing (a pruned store) is treated as a miss.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from polyarch.digest import Digest
from polyarch.errors import PolyarchError


@dataclass(frozen=True, slots=True)
class CachedLayer:
    """What a filesystem step produced; `digest` None for a step that changed nothing."""

    digest: Digest | None
    size: int
    diff_id: Digest | None
    media_type: str
    created: str = ""  # when the step first ran: a cached step keeps its time
    origin: str = ""  # "": the local cache; else the imported cache it came from
    # Where the layer can be fetched when it is not in the store: a step taken from an
    # imported cache is recorded locally at once, its layer fetched only when a build needs it
    # ("registry:REF" or "local:DIR", the cache's location); "" for a layer made here.
    source: str = ""


class UnusableCacheEntry(PolyarchError):
    """A cache hit whose content turned out unusable when it was needed (an imported layer
    that does not match its digest). The solver lets it through; the build drops the entry
    and solves again (every step that finished is in the local cache by then)."""


class CacheBackend(Protocol):
    def get(self, key: str) -> CachedLayer | None: ...

    def put(self, key: str, layer: CachedLayer, description: str) -> None: ...


class SqliteCache:
    def __init__(self, path: Path, *, warn: Callable[[str], None] = lambda _text: None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._open(path)
        except sqlite3.DatabaseError as exc:
            # Only a cache: a damaged one is set aside and started afresh (steps run again).
            aside = path.with_name(path.name + ".damaged")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(path) + suffix).replace(Path(str(aside) + suffix))
            warn(f"the step cache {path} was damaged ({exc}); moved it to {aside} and started "
                 "a new one: steps run again")  # fmt: skip
            self._open(path)

    def _open(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA quick_check")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS steps (key TEXT PRIMARY KEY, result TEXT NOT NULL, "
                "description TEXT, created REAL NOT NULL)"
            )
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(steps)")]
            if "used" not in columns:  # when a build last used the step (`prune` by age)
                self._db.execute("ALTER TABLE steps ADD COLUMN used REAL")
            # Which images (repository names) a step served: `polyarch clean` forgets the
            # steps only its project used. Steps with no owner row are never removed by it.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS owners (key TEXT NOT NULL, owner TEXT NOT NULL, "
                "PRIMARY KEY (key, owner))"
            )

    def get(self, key: str) -> CachedLayer | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM steps WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        return CachedLayer(
            Digest.parse(data["digest"]) if data["digest"] else None,
            int(data["size"]),
            Digest.parse(data["diff_id"]) if data["diff_id"] else None,
            data["media_type"],
            data.get("created", ""),
            source=str(data.get("source", "")),
        )

    def put(self, key: str, layer: CachedLayer, description: str) -> None:
        result = json.dumps(
            {
                "digest": str(layer.digest) if layer.digest else None,
                "size": layer.size,
                "diff_id": str(layer.diff_id) if layer.diff_id else None,
                "media_type": layer.media_type,
                "created": layer.created,
                **({"source": layer.source} if layer.source else {}),
            }
        )
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO steps (key, result, description, created) "
                "VALUES (?, ?, ?, ?)",
                (key, result, description, time.time()),
            )

    def touch(self, keys: Iterable[str], when: float | None = None) -> None:
        """Record that a build used these steps now (one transaction for all of them)."""
        stamp = time.time() if when is None else when
        with self._lock:
            self._db.executemany("UPDATE steps SET used = ? WHERE key = ?",
                                 [(stamp, k) for k in keys])  # fmt: skip

    def entries(self) -> list[tuple[str, CachedLayer, float, str]]:
        """Every step: (key, its layer, when last used, description)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, COALESCE(used, created), description FROM steps"
            ).fetchall()
        out = []
        for key, used, description in rows:
            layer = self.get(key)
            if layer is not None:
                out.append((key, layer, float(used), description or ""))
        return out

    def forget(self, keys: list[str]) -> int:
        with self._lock:
            before = self._db.total_changes
            self._db.executemany("DELETE FROM steps WHERE key = ?", [(k,) for k in keys])
            return self._db.total_changes - before

    def claim(self, keys: Iterable[str], owner: str) -> None:
        """Record that the image `owner` (a repository name) used these steps."""
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO owners (key, owner) VALUES (?, ?)",
                [(k, owner) for k in keys],
            )

    def release(self, owner: str) -> int:
        """Drop `owner`'s claims; forget the steps no other image claims. Returns how many
        steps were forgotten."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                keys = [
                    row[0]
                    for row in self._db.execute(
                        "SELECT key FROM owners WHERE owner = ?", (owner,)
                    ).fetchall()
                ]
                self._db.execute("DELETE FROM owners WHERE owner = ?", (owner,))
                before = self._db.total_changes
                self._db.executemany(
                    "DELETE FROM steps WHERE key = ? AND NOT EXISTS "
                    "(SELECT 1 FROM owners WHERE owners.key = steps.key)",
                    [(k,) for k in keys],
                )
                forgotten = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return forgotten

    def layers(self) -> list[CachedLayer]:
        """Every layer the cache points at (what a prune of the store must keep)."""
        with self._lock:
            rows = self._db.execute("SELECT key FROM steps").fetchall()
        out = []
        for (key,) in rows:
            layer = self.get(key)
            if layer is not None and layer.digest is not None:
                out.append(layer)
        return out

    def close(self) -> None:
        self._db.close()
