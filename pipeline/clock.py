"""Time in one place: naive UTC datetimes everywhere (SQLite and Postgres agree on them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

#: A clock returns the current naive-UTC datetime. Tests inject their own.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def monotonic_s() -> float:
    return time.monotonic()
