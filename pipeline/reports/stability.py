"""Provider stability from the attempts table: requests, success rate, latency percentiles, error classes, 429s.

Definitions (the same for `pipeline providers`, `pipeline probe` and the HTML report):
- requests: attempts started in the window that have finished (an open attempt is `in_flight`);
- success rate: succeeded / requests;
- latency: p50/p95/max over *succeeded* attempts (an error answer is fast and would flatter the figure);
  percentiles interpolate linearly between ranks, like Postgres' percentile_cont, which Postgres computes
  and SQLite reproduces with two rows read at the right offset (never a fetch of every latency);
- error classes: the error_class of each finished, unsuccessful attempt (its outcome when it has none,
  e.g. "abandoned");
- 429s: attempts answered with HTTP 429 (rate limits, daily quota, no credit), and their share of requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from pipeline.db.models import Attempt
from pipeline.states import AttemptOutcome

#: the windows `pipeline providers` shows, by label
WINDOWS: dict[str, timedelta] = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
PERCENTILES = (0.5, 0.95)


@dataclass
class ProviderStats:
    provider: str
    requests: int = 0
    succeeded: int = 0
    in_flight: int = 0
    http_429: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: int | None = None
    error_classes: dict[str, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.requests if self.requests else None

    @property
    def rate_429(self) -> float | None:
        return self.http_429 / self.requests if self.requests else None

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "succeeded": self.succeeded, "in_flight": self.in_flight,
                "success_rate": _round(self.success_rate), "p50_ms": _round(self.p50_ms, 1),
                "p95_ms": _round(self.p95_ms, 1), "max_ms": self.max_ms, "error_classes": self.error_classes,
                "http_429": self.http_429, "rate_429": _round(self.rate_429)}


def _round(v: float | None, places: int = 4) -> float | None:
    return None if v is None else round(v, places)


def _where(since: datetime | None, until: datetime | None, job_id: int | None,
           providers: list[str] | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(Attempt.started_at >= since)
    if until is not None:
        where.append(Attempt.started_at < until)
    if job_id is not None:
        where.append(Attempt.job_id == job_id)
    if providers is not None:
        where.append(Attempt.provider.in_(providers))
    return where


def provider_stats(s: Session, *, since: datetime | None = None, until: datetime | None = None,
                   job_id: int | None = None, providers: list[str] | None = None) -> dict[str, ProviderStats]:
    """Stability per provider over the attempts started in [since, until), optionally of one job."""
    where = _where(since, until, job_id, providers)
    finished = Attempt.outcome != AttemptOutcome.STARTED
    ok = Attempt.outcome == AttemptOutcome.SUCCEEDED
    limited = and_(finished, or_(Attempt.http_status == 429, Attempt.error_class == "rate_limited"))
    out: dict[str, ProviderStats] = {}
    rows = s.execute(
        select(Attempt.provider,
               func.sum(case((finished, 1), else_=0)),
               func.sum(case((ok, 1), else_=0)),
               func.sum(case((finished, 0), else_=1)),
               func.sum(case((limited, 1), else_=0)),
               func.max(case((ok, Attempt.latency_ms), else_=None)))
        .where(*where).group_by(Attempt.provider).order_by(Attempt.provider))
    for name, req, succ, open_, n429, max_ms in rows:
        out[name] = ProviderStats(name, int(req or 0), int(succ or 0), int(open_ or 0), int(n429 or 0),
                                  max_ms=None if max_ms is None else int(max_ms))
    err_class = func.coalesce(Attempt.error_class, Attempt.outcome)
    for name, cls, n in s.execute(
            select(Attempt.provider, err_class, func.count())
            .where(*where, finished, ~ok).group_by(Attempt.provider, err_class).order_by(Attempt.provider)):
        out[name].error_classes[str(cls)] = int(n)
    for name, pcts in latency_percentiles(s, where).items():
        out[name].p50_ms, out[name].p95_ms = pcts
    return out


def windows(s: Session, now: datetime, providers: list[str] | None = None) -> dict[str, dict[str, ProviderStats]]:
    """provider_stats over each of WINDOWS ending now: {"1h": {...}, "1d": {...}}."""
    return {label: provider_stats(s, since=now - span, providers=providers) for label, span in WINDOWS.items()}


def latency_percentiles(s: Session, where: list[ColumnElement[bool]],
                        ps: tuple[float, ...] = PERCENTILES) -> dict[str, tuple[float, ...]]:
    """Latency percentiles (ms) of the succeeded attempts matching `where`, per provider."""
    cond = [*where, Attempt.outcome == AttemptOutcome.SUCCEEDED, Attempt.latency_ms.is_not(None)]
    if s.get_bind().dialect.name == "postgresql":
        cols = [func.percentile_cont(p).within_group(Attempt.latency_ms) for p in ps]
        return {name: tuple(float(v) for v in vals) for name, *vals in
                s.execute(select(Attempt.provider, *cols).where(*cond).group_by(Attempt.provider))}
    out: dict[str, tuple[float, ...]] = {}
    for name, n in s.execute(select(Attempt.provider, func.count()).where(*cond).group_by(Attempt.provider)):
        out[name] = tuple(_nth(s, [*cond, Attempt.provider == name], int(n), p) for p in ps)
    return out


def _nth(s: Session, cond: list[ColumnElement[bool]], n: int, p: float) -> float:
    """percentile_cont(p) of n sorted latencies: the two neighbouring ranks, read with one OFFSET query."""
    pos = p * (n - 1)
    lo = math.floor(pos)
    pair = [v for v in s.scalars(select(Attempt.latency_ms).where(*cond)
                                 .order_by(Attempt.latency_ms).offset(lo).limit(2)) if v is not None]
    if len(pair) == 1:
        return float(pair[0])
    return pair[0] + (pos - lo) * (pair[1] - pair[0])


def percentile(sorted_values: list[float], p: float) -> float | None:
    """percentile_cont over an already sorted list (for figures computed in Python)."""
    if not sorted_values:
        return None
    pos = p * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])
