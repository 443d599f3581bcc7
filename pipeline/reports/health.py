"""Provider health for `pipeline providers`: configuration, state (ok, paused, parked until T), the admission
gate's live rate against the configured limit, and stability over the last hour and day (reports.stability).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import ProviderConfig
from pipeline.core.context import Context
from pipeline.core.providers_state import all_states
from pipeline.db.models import Attempt
from pipeline.gate.base import GateLimits, GateSnapshot
from pipeline.reports.stability import WINDOWS, ProviderStats, windows
from pipeline.states import ProviderStatus

log = logging.getLogger("pipeline.reports")


@dataclass
class ProviderHealth:
    name: str
    config: ProviderConfig | None
    #: ok | paused | parked (from the shared provider state; an expired park is ok)
    state: str = ProviderStatus.OK
    reason: str | None = None
    until: datetime | None = None
    gate: GateSnapshot | None = None
    #: why there is no gate snapshot (gate unreachable); None when there is one or none was asked
    gate_error: str | None = None
    #: stability by window label ("1h", "1d")
    windows: dict[str, ProviderStats] = field(default_factory=dict)

    @property
    def state_text(self) -> str:
        if self.state == ProviderStatus.PARKED and self.until is not None:
            return f"parked until {self.until.strftime('%Y-%m-%d %H:%M')} UTC"
        if self.state == ProviderStatus.OK and self.gate is not None and self.gate.parked_until:
            return f"parked (gate) until {_epoch(self.gate.parked_until).strftime('%Y-%m-%d %H:%M')} UTC"
        return str(self.state)

    def as_json(self) -> dict[str, Any]:
        cfg = self.config
        g = self.gate
        return {
            "name": self.name, "configured": cfg is not None,
            "kind": cfg.kind if cfg else None, "model": cfg.model if cfg else None,
            "base_url": (cfg.base_url or "(in-process)") if cfg else None,
            "enabled": cfg.enabled if cfg else None, "data_policy": cfg.data_policy if cfg else None,
            "prices": {k: str(v) for k, v in cfg.prices.items()} if cfg else {},
            "prices_date": cfg.prices_date if cfg else None,
            "limits": cfg.limits.model_dump() if cfg else None,
            "state": str(self.state), "reason": self.reason,
            "until": self.until.isoformat() if self.until else None,
            "gate": None if g is None else {
                "rate_per_min": round(g.rate_per_min, 2), "limit_per_min": round(g.limit_per_min, 2),
                "in_flight": g.in_flight, "concurrency": g.concurrency, "today": g.today,
                "daily_limit": g.daily_limit,
                "parked_until": _epoch(g.parked_until).isoformat() if g.parked_until else None,
                "park_reason": g.park_reason,
                "cooldown_until": _epoch(g.cooldown_until).isoformat() if g.cooldown_until else None,
                "ceiling_per_min": None if g.ceiling_per_min is None else round(g.ceiling_per_min, 2)},
            "gate_error": self.gate_error,
            "stability": {label: st.as_json() for label, st in self.windows.items()},
        }


def _epoch(s: float) -> datetime:
    return datetime.fromtimestamp(s, UTC).replace(tzinfo=None)


def provider_health(ctx: Context, now: datetime) -> tuple[list[ProviderHealth], str | None]:
    """Every configured provider, plus any other name that has a state row or calls in the last day; and a note
    when the database could not be read (not migrated yet: the configuration and the gate are still shown)."""
    settings = ctx.settings
    note: str | None = None
    try:
        with ctx.sessions() as s:
            states = all_states(s)
            stats = windows(s, now)
            recent = set(s.scalars(select(Attempt.provider).distinct()
                                   .where(Attempt.started_at >= now - WINDOWS["1d"])))
    except SQLAlchemyError as e:
        states, stats, recent = {}, {}, set()
        note = f"no provider state or stability: the database cannot be read ({type(e).__name__}); " \
               "run `pipeline db upgrade`"
    names = sorted(set(settings.providers) | set(states) | recent)
    out: list[ProviderHealth] = []
    for name in names:
        cfg = settings.providers.get(name)
        h = ProviderHealth(name, cfg)
        row = states.get(name)
        if row is not None and row.status != ProviderStatus.OK:
            expired = row.status == ProviderStatus.PARKED and row.until is not None and row.until <= now
            if not expired:
                h.state, h.reason, h.until = row.status, row.reason, row.until
        if cfg is not None:
            h.gate, h.gate_error = _snapshot(ctx, name)
        h.windows = {label: per.get(name, ProviderStats(name)) for label, per in stats.items()}
        out.append(h)
    return out, note


def _snapshot(ctx: Context, name: str) -> tuple[GateSnapshot | None, str | None]:
    try:
        return ctx.gate.snapshot(name, GateLimits.from_provider(ctx.providers.config(name))), None
    except Exception as e:  # the gate (Redis) unreachable: show the rest, say why the gate part is missing
        log.info("gate snapshot of %s failed: %s", name, type(e).__name__)
        return None, f"gate unavailable: {type(e).__name__}"
