"""What the core functions need, bundled once per process by the composition root (pipeline.runtime)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from pipeline.clock import Clock
from pipeline.config import ProviderConfig, Settings
from pipeline.core.policy import RetryPolicy
from pipeline.core.ports import Gate, OnBlocked
from pipeline.providers.base import Provider, Reference
from pipeline.storage.base import Storage


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
    gate: Gate
    settings: Settings
    #: this process's lease owner id (host-pid-random)
    owner: str
    clock: Clock
    load_reference: Callable[[dict[str, Any]], Reference]
    #: what an error leads to (retry at T, fail over, park, pause, fail), with its own rng
    policy: RetryPolicy
    #: how the core waits a moment (a gate slot's wait, a pause between database retries): time.sleep in a
    #: process, a fake in tests; no default, so nothing waits by accident or skips a wait silently
    sleep: Callable[[float], None]
    #: the process's HTTP client (budget alert webhooks)
    http: httpx.Client
    #: told, in the blocking transaction, when an item is blocked for budget (job notifications)
    on_blocked: OnBlocked
