"""The composition root: builds engines, storage, gate, providers and the core Context from Settings.

Nothing here runs at import. `open_runtime(settings)` does the I/O (connect, migrate when asked, check
storage) in an explicit start step; `Runtime.close()` releases it. Build one per process, after any fork.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.callbacks import SqlCallbackInbox
from pipeline.clock import utcnow
from pipeline.config import ProviderConfig, Settings, api_key
from pipeline.core.context import Context, ProviderRegistry
from pipeline.core.policy import RetryPolicy
from pipeline.core.ports import Gate, OnBlocked
from pipeline.db.migrate import migrate
from pipeline.db.session import check_sqlite_location, make_engine, make_sessionmaker
from pipeline.errors import InputError, StorageError
from pipeline.logging_setup import secrets_of
from pipeline.providers.base import Provider, Reference
from pipeline.providers.factory import make_batch_client, make_provider
from pipeline.providers.gemini_batch import GeminiBatchClient
from pipeline.providers.http import make_http_client
from pipeline.redact import install as install_secrets
from pipeline.references import ReferenceFetcher
from pipeline.storage.base import Storage
from pipeline.storage.factory import open_storage
from pipeline.storage.spool import SpoolingStorage, adopt_orphans, pid_alive, process_spool_dir

#: where paid images wait while the object store is unreachable (one directory per process below it)
SPOOL_ROOT = Path(".pipeline/spool")


def process_owner() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage
    gate: Gate
    providers: ProviderRegistry
    ctx: Context
    http: httpx.Client
    _closers: list[Callable[[], None]]
    _batch_clients: dict[tuple[str, str | None], GeminiBatchClient] = field(default_factory=dict)

    def batch_client(self, name: str, region: str | None) -> GeminiBatchClient:
        """The batch-tier client of a provider (built once per process)."""
        key = (name, region)
        if key not in self._batch_clients:
            cfg = self.ctx.providers.config(name)
            self._batch_clients[key] = make_batch_client(cfg, api_key=api_key(cfg), client=self.http, region=region)
        return self._batch_clients[key]

    def close(self) -> None:
        for fn in reversed(self._closers):
            with contextlib.suppress(Exception):  # closing is best effort
                fn()


def make_gate(settings: Settings) -> tuple[Gate, Callable[[], None]]:
    if settings.redis_url and not settings.embedded:
        import redis

        from pipeline.gate.redis import RedisGate

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5,
                                      health_check_interval=30, retry_on_timeout=True)
        return RedisGate(client), client.close
    from pipeline.gate.local import LocalGate

    return LocalGate(), lambda: None


def check_storage_location(storage: Storage, url: str) -> None:
    """`storage.check()`, with a refusal that retrying cannot fix (no credentials, no bucket, a link in a file
    root leading outside it) turned into an InputError naming storage_url: exit 2, before anything is paid."""
    try:
        storage.check()
    except StorageError as e:
        if e.retryable:
            raise
        raise InputError(str(e), where=f"storage_url {url}") from None


def budget_notifier(settings: Settings) -> OnBlocked:
    """The core's on_blocked hook: the run's budget notification (pipeline.notify), claimed in the blocking
    transaction."""
    from pipeline.notify.events import claim_budget

    def on_blocked(s: Session, job_id: int, now: datetime) -> None:
        claim_budget(s, job_id, settings.notify, now)

    return on_blocked


def lazy_s3_reader() -> Callable[[str, str], bytes]:
    """Reads s3:// references (pipeline.storage.s3.S3Reader), importing boto3 only at the first read: most
    commands, and most manifests, never need it."""
    reader: list[Callable[[str, str], bytes]] = []
    lock = threading.Lock()

    def get(bucket: str, key: str) -> bytes:
        with lock:
            if not reader:
                from pipeline.storage.s3 import S3Reader

                reader.append(S3Reader())
        return reader[0](bucket, key)

    return get


def reference_loader(storage_get: Callable[[str, str], bytes] | None, *,
                     allow_private: bool) -> Callable[[dict[str, Any]], Reference]:
    """Load a reference recorded at submit (same size and type limits as at submit: references.reread_reference);
    its content must still hash to what the cache key was made of."""

    def load(ref: dict[str, Any]) -> Reference:
        from pipeline.references import reread_reference

        source = str(ref["source"])
        data = reread_reference(source, s3_get=storage_get, allow_private=allow_private)
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref["sha256"]:
            raise InputError("reference changed since the job was submitted; submit the manifest again",
                             where=source)
        return Reference(data=data, mime_type=str(ref.get("mime_type") or "image/png"), sha256=digest)

    return load


def open_runtime(settings: Settings, *, migrate_db: bool = True, check_storage: bool = True, create_db: bool = True,
                 provider_overrides: dict[str, dict[str, Any]] | None = None) -> Runtime:
    """Build everything a process needs. `provider_overrides` patches provider configs (e.g. the base_url
    of an in-process sandbox) without touching the user's config. `create_db=False` (read-only commands)
    refuses a SQLite database that does not exist instead of creating it.

    Checked before the database is created or touched: the storage URL (parsed), the SQLite location (its
    directory must exist), the storage itself (`Storage.check`: reachable, writable, no link leading out of a
    file root; a storage that refuses for good, such as bad credentials, no bucket or an unsafe root, is an
    InputError: exit 2)."""
    if provider_overrides:
        providers = dict(settings.providers)
        for name, patch in provider_overrides.items():
            providers[name] = providers[name].model_copy(update=patch)
        settings = settings.model_copy(update={"providers": providers})
    install_secrets(secrets_of(settings))  # failure reasons this process stores are redacted
    inner = open_storage(settings.storage_url)
    check_sqlite_location(settings.database_url, create=create_db, mkdir=False)
    if check_storage:
        check_storage_location(inner, settings.storage_url)
    closers: list[Callable[[], None]] = []
    engine = make_engine(settings.database_url, pool_size=settings.worker.db_pool_size)
    closers.append(engine.dispose)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:
        engine.dispose()
        raise InputError(f"database not reachable: {type(e).__name__}", where="database_url") from None
    if migrate_db:
        migrate(engine)
    sessions = make_sessionmaker(engine)
    host = socket.gethostname()[:32]
    if check_storage:
        adopt_orphans(inner, SPOOL_ROOT, host, alive=pid_alive)
    storage = SpoolingStorage(inner, process_spool_dir(SPOOL_ROOT, host, os.getpid()))
    gate, close_gate = make_gate(settings)
    closers.append(close_gate)
    http = make_http_client(max(p.timeout_s for p in settings.providers.values()))
    closers.append(http.close)

    guard = ReferenceFetcher(allow_private=settings.allow_private_references, allow_http=True).check_url
    inbox = SqlCallbackInbox(sessions)

    def factory(cfg: ProviderConfig, region: str | None) -> Provider:
        return make_provider(cfg, api_key=api_key(cfg), client=http, region=region, output_guard=guard,
                             storage=inner, inbox=inbox, public_base_url=settings.public_base_url)

    registry = ProviderRegistry(settings, factory)
    closers.append(registry.close)
    load_ref = reference_loader(lazy_s3_reader(), allow_private=settings.allow_private_references)
    ctx = Context(sessions=sessions, storage=storage, providers=registry, gate=gate, settings=settings,
                  owner=process_owner(), clock=utcnow, load_reference=load_ref,
                  policy=RetryPolicy.from_settings(settings.worker), sleep=time.sleep, http=http,
                  on_blocked=budget_notifier(settings))
    return Runtime(settings, engine, sessions, storage, gate, registry, ctx, http, closers)
