"""SpoolingStorage: keeps paid-for images on local disk while the real storage is down.

When the inner backend's put fails with a *retryable* StorageError, the object is written durably to
the spool directory and put returns the URL the object will have, as if it were stored. `flush()`
uploads spooled objects oldest first and removes each after its upload succeeded. Until then get,
exists and copy see spooled objects (read your writes).

On disk, per object (the id sorts by spool time):

    <id>.data   the bytes, written atomically (temp file, fsync, rename)
    <id>.json   the manifest (key, content type, metadata, size, sha256), written after the data

A manifest is the commit mark: data without a manifest is an interrupted spool and is ignored. One
spool directory belongs to one process: the index is read from disk once, at first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.clock import Clock, utcnow
from pipeline.errors import StorageError
from pipeline.storage.base import Storage
from pipeline.storage.keys import sanitize_key
from pipeline.storage.local import atomic_write

log = logging.getLogger(__name__)

#: number of per-key locks (keys hash onto them); serialises put/flush/copy of the same key
LOCK_STRIPES = 64
#: data files without a manifest older than this are removed when the spool is loaded
ORPHAN_MAX_AGE_S = 3600.0
_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class SpooledObject:
    """One spooled put, as its manifest says."""

    entry_id: str
    key: str
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    size: int = 0
    sha256: str = ""
    spooled_at: str = ""


class SpoolingStorage:
    """A `Storage` that spools puts to `spool_dir` when `inner` has a retryable outage."""

    def __init__(self, inner: Storage, spool_dir: Path, *, clock: Clock = utcnow) -> None:
        self.inner = inner
        self.spool_dir = Path(os.path.abspath(spool_dir))
        self._clock = clock
        self._lock = threading.Lock()  # guards the index below
        self._flush_lock = threading.Lock()  # one flush at a time
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._entries: dict[str, SpooledObject] | None = None  # entry_id -> object, loaded lazily
        self._seq = 0

    def __repr__(self) -> str:
        return f"SpoolingStorage(inner={self.inner!r}, spool_dir={str(self.spool_dir)!r})"

    # -- the Storage protocol ------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> str:
        key = sanitize_key(key)
        self._load()
        with self._stripe(key):
            try:
                url = self.inner.put(key, data, content_type, metadata)
            except StorageError as exc:
                if not exc.retryable:
                    raise
                self._spool(key, data, content_type, metadata, exc)
                return self.inner.url(key)
            self._drop_key(key)  # anything spooled for this key is older than what was just stored
            return url

    def copy(self, src_key: str, dst_key: str) -> str:
        src_key, dst_key = sanitize_key(src_key), sanitize_key(dst_key)
        self._load()
        with self._stripe(src_key):
            entry = self._latest(src_key)
            data = self._read(entry) if entry is not None else None
        if entry is not None and data is not None:
            return self.put(dst_key, data, entry.content_type, dict(entry.metadata))
        with self._stripe(dst_key):
            url = self.inner.copy(src_key, dst_key)
            self._drop_key(dst_key)
            return url

    def get(self, key: str) -> bytes:
        key = sanitize_key(key)
        self._load()
        with self._stripe(key):
            entry = self._latest(key)
            if entry is not None:
                return self._read(entry)
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        key = sanitize_key(key)
        self._load()
        with self._lock:
            if self._latest_locked(key) is not None:
                return True
        return self.inner.exists(key)

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """The backend's URL. Only for objects put to the backend itself: a spooled object is not there yet."""
        return self.inner.presigned_url(key, expires_s)

    def check(self) -> None:
        self.inner.check()

    def check_location(self) -> None:
        self.inner.check_location()

    # -- the spool -------------------------------------------------------------------------------

    def pending(self) -> int:
        """How many spooled objects wait for upload."""
        self._load()
        with self._lock:
            assert self._entries is not None
            return len(self._entries)

    def flush(self) -> int:
        """Upload spooled objects oldest first; returns how many were uploaded.

        Stops (keeping the rest) at the first retryable failure: the outage is not over. A
        non-retryable failure (AccessDenied, NoSuchBucket) is raised, the objects stay spooled.
        An object overwritten by a later put of the same key is dropped without upload.
        """
        self._load()
        uploaded = 0
        with self._flush_lock:
            with self._lock:
                assert self._entries is not None
                queue = sorted(self._entries.values(), key=lambda e: e.entry_id)
            for entry in queue:
                with self._stripe(entry.key):
                    with self._lock:
                        assert self._entries is not None
                        if entry.entry_id not in self._entries:
                            continue  # stored directly meanwhile
                        latest = self._latest_locked(entry.key)
                    if latest is not None and latest.entry_id != entry.entry_id:
                        self._remove(entry)  # superseded by a newer spooled put of the same key
                        continue
                    try:
                        data = self._read(entry)
                    except StorageError as exc:
                        self._quarantine(entry, exc)
                        continue
                    try:
                        self.inner.put(entry.key, data, entry.content_type, dict(entry.metadata))
                    except StorageError as exc:
                        if exc.retryable:
                            log.info("spool flush paused after %d upload(s): %s", uploaded, exc)
                            return uploaded
                        raise
                    self._remove(entry)
                    uploaded += 1
        if uploaded:
            log.info("spool flush uploaded %d object(s)", uploaded)
        return uploaded

    # -- internals -------------------------------------------------------------------------------

    def _stripe(self, key: str) -> threading.Lock:
        return self._stripes[zlib.crc32(key.encode()) % LOCK_STRIPES]

    def _latest(self, key: str) -> SpooledObject | None:
        with self._lock:
            return self._latest_locked(key)

    def _latest_locked(self, key: str) -> SpooledObject | None:
        assert self._entries is not None
        found: SpooledObject | None = None
        for entry in self._entries.values():
            if entry.key == key and (found is None or entry.entry_id > found.entry_id):
                found = entry
        return found

    def _spool(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str], cause: StorageError
    ) -> None:
        with self._lock:
            self._seq += 1
            entry_id = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:08d}"
        entry = SpooledObject(
            entry_id=entry_id,
            key=key,
            content_type=content_type,
            metadata=dict(metadata),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            spooled_at=self._clock().isoformat(),
        )
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self._data_path(entry_id), data)
            manifest = {"version": _MANIFEST_VERSION, **asdict(entry)}
            atomic_write(self._manifest_path(entry_id), json.dumps(manifest, sort_keys=True).encode())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._data_path(entry_id).unlink()
            raise StorageError(
                f"storage unavailable ({cause}) and spooling {key!r} failed: {exc.strerror or exc}",
                retryable=True,
            ) from exc
        with self._lock:
            assert self._entries is not None
            self._entries[entry_id] = entry
        log.warning("storage unavailable, spooled %s (%d bytes): %s", key, len(data), cause)

    def _read(self, entry: SpooledObject) -> bytes:
        try:
            data = self._data_path(entry.entry_id).read_bytes()
        except OSError as exc:
            raise StorageError(
                f"spooled object {entry.key!r} unreadable: {exc.strerror}", retryable=False
            ) from exc
        if entry.sha256 and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise StorageError(f"spooled object {entry.key!r} is corrupt (sha256 mismatch)", retryable=False)
        return data

    def _drop_key(self, key: str) -> None:
        with self._lock:
            assert self._entries is not None
            stale = [e for e in self._entries.values() if e.key == key]
        for entry in stale:
            self._remove(entry)

    def _remove(self, entry: SpooledObject) -> None:
        """Forget one spooled object: manifest first (the commit mark), then the data."""
        with self._lock:
            assert self._entries is not None
            self._entries.pop(entry.entry_id, None)
        for path in (self._manifest_path(entry.entry_id), self._data_path(entry.entry_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _quarantine(self, entry: SpooledObject, reason: StorageError) -> None:
        """Set an unreadable spooled object aside (<id>.json.bad) so it does not block the flush."""
        log.error("spooled object %s set aside: %s", entry.key, reason)
        with self._lock:
            assert self._entries is not None
            self._entries.pop(entry.entry_id, None)
        path = self._manifest_path(entry.entry_id)
        with contextlib.suppress(OSError):
            path.rename(path.with_suffix(".json.bad"))

    def _load(self) -> None:
        with self._lock:
            if self._entries is not None:
                return
            entries: dict[str, SpooledObject] = {}
            if self.spool_dir.is_dir():
                entries = self._scan()
            self._entries = entries

    def _scan(self) -> dict[str, SpooledObject]:
        entries: dict[str, SpooledObject] = {}
        for manifest_path in sorted(self.spool_dir.glob("*.json")):
            entry_id = manifest_path.stem
            try:
                raw = json.loads(manifest_path.read_text())
                raw.pop("version", None)
                entry = SpooledObject(**raw)
                sanitize_key(entry.key)
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable spool manifest %s kept aside: %s", manifest_path.name, exc)
                with contextlib.suppress(OSError):
                    manifest_path.rename(manifest_path.with_suffix(".json.bad"))
                continue
            if entry.entry_id != entry_id or not self._data_path(entry_id).is_file():
                log.error("spool manifest %s has no data, dropped", manifest_path.name)
                with contextlib.suppress(OSError):
                    manifest_path.unlink()
                continue
            entries[entry_id] = entry
        now = time.time()
        leftovers = [p for p in self.spool_dir.glob("*.data") if p.stem not in entries]
        leftovers += self.spool_dir.glob(".tmp-*")
        for path in leftovers:  # interrupted spools: put never returned for them
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > ORPHAN_MAX_AGE_S:
                    path.unlink()
        if entries:
            log.warning("storage spool %s holds %d object(s) to upload", self.spool_dir, len(entries))
        return entries

    def _data_path(self, entry_id: str) -> Path:
        return self.spool_dir / f"{entry_id}.data"

    def _manifest_path(self, entry_id: str) -> Path:
        return self.spool_dir / f"{entry_id}.json"


def process_spool_dir(root: Path, host: str, pid: int) -> Path:
    """This process's own spool directory under `root` (one directory per process: a spool reads its
    directory once, so two live processes must not share one)."""
    return root / f"{host}-{pid}"


def adopt_orphans(inner: Storage, root: Path, host: str, *, alive: Callable[[int], bool]) -> int:
    """Upload what dead processes on this host left in their spools, then remove their empty directories.
    Returns how many objects were uploaded. A store that is still down leaves them for the next start."""
    if not root.is_dir():
        return 0
    uploaded = 0
    for d in sorted(root.iterdir()):
        name, _, pid_s = d.name.rpartition("-")
        if not d.is_dir() or name != host or not pid_s.isdigit() or alive(int(pid_s)):
            continue
        orphan = SpoolingStorage(inner, d)
        try:
            uploaded += orphan.flush()
        except StorageError:
            continue
        if orphan.pending() == 0:
            shutil.rmtree(d, ignore_errors=True)
    return uploaded


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
