"""What the web app's handlers need, built once by `pipeline serve` (or a test) from a Runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from pipeline.clock import Clock
from pipeline.config import Settings
from pipeline.reports.health import ProviderHealth
from pipeline.storage.base import Storage
from pipeline.web.auth import Guard

Health = Callable[[datetime], tuple[list[ProviderHealth], str | None]]


@dataclass(frozen=True)
class WebContext:
    sessions: sessionmaker[Session]
    storage: Storage
    settings: Settings
    guard: Guard
    clock: Clock
    #: the `pipeline providers` table at a time (provider state, live gate rate, stability)
    health: Health
