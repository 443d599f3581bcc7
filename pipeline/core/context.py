"""What the core functions need, bundled once per process by the composition root (pipeline.runtime)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from pipeline.clock import Clock
from pipeline.config import ProviderConfig, Settings
from pipeline.core.policy import RetryPolicy
from pipeline.providers.base import Provider, Reference
from pipeline.storage.base import Storage


class GateLike(Protocol):
    """The admission gate as the core uses it (pipeline.gate implements it for Redis and in-process)."""

    def acquire(self, key: str, limits: Any) -> Any: ...

    def release(self, key: str, token: str) -> None: ...

    def feedback(self, key: str, *, ok: bool, rate_limited: bool, retry_after_s: float | None,
                 token: str | None = None) -> None: ...

    def park(self, key: str, until_epoch_s: float, reason: str) -> None: ...


class ProviderRegistry:
    """Provider adapters by name, built on first use from a factory (so unused providers cost nothing)."""

    def __init__(self, settings: Settings, factory: Callable[[ProviderConfig, str | None], Provider]) -> None:
        self._settings = settings
        self._factory = factory
        self._built: dict[tuple[str, str | None], Provider] = {}
        self._lock = threading.Lock()

    def config(self, name: str) -> ProviderConfig:
        return self._settings.provider(name)

    def get(self, name: str, region: str | None = None) -> Provider:
        key = (name, region)
        with self._lock:
            if key not in self._built:
                self._built[key] = self._factory(self.config(name), region)
            return self._built[key]

    def close(self) -> None:
        with self._lock:
            for p in self._built.values():
                p.close()
            self._built.clear()


@dataclass
class Context:
    sessions: sessionmaker[Session]
    storage: Storage
    providers: ProviderRegistry
    gate: GateLike
    settings: Settings
    #: this process's lease owner id (host-pid-random)
    owner: str
    clock: Clock
    load_reference: Callable[[dict[str, Any]], Reference]
    #: what an error leads to (retry at T, fail over, park, pause, fail), with its own rng
    policy: RetryPolicy
    sleep: Callable[[float], None] = field(default=lambda s: None)
