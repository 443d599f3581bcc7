"""The baseline stability probe: a small job of distinct prompts on one provider, and what its calls showed.

The probe is an ordinary manifest (written to a temporary file and loaded like any other), submitted and run
on the same code path as real jobs, so gate, retries, cache, budget and storage all take part. Its prompts
carry a random nonce: the cache never answers them and every image is a real call.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.config import ProviderConfig
from pipeline.db.models import Attempt
from pipeline.money import show
from pipeline.reports.queries import Totals, counts, ledger_totals
from pipeline.reports.stability import ProviderStats, percentile, provider_stats
from pipeline.states import AttemptOutcome

SUBJECTS = ("a ceramic teapot", "a pair of running shoes", "a leather wallet", "a desk lamp", "a glass vase",
            "a wristwatch", "a coffee grinder", "a wool scarf", "a bicycle helmet", "a pair of headphones")
#: the sliding window of "busiest minute" in the rate figures
MINUTE_S = 60.0


def probe_job_name(provider: str, now: datetime) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", provider).strip("-.") or "provider"
    return f"probe-{slug[:80]}-{now.strftime('%Y%m%dT%H%M%S')}"


def write_probe_manifest(directory: Path, provider: str, n: int, resolution: str, now: datetime) -> Path:
    """A manifest of `n` distinct prompts on `provider` alone (no failover), in `directory`."""
    job = probe_job_name(provider, now)
    nonce = uuid.uuid4().hex[:10]
    manifest = {
        "job": job,
        "description": f"baseline stability probe of {provider}: {n} images at {resolution}",
        "providers": [provider],
        "failover": False,
        "defaults": {"resolution": resolution, "aspect_ratio": "1:1", "format": "png"},
        "output": {"key": "probes/{{ job }}/{{ id }}.png"},
        "prompt": "Stability probe {{ id }} ({{ nonce }}): product photo of {{ subject }} on a plain background, "
                  "soft studio light",
        "tags": ["probe"],
        "items": [{"id": f"p{i + 1:04d}", "subject": SUBJECTS[i % len(SUBJECTS)], "nonce": nonce}
                  for i in range(n)],
    }
    path = directory / f"{job}.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class ProbeResult:
    job_id: int
    job: str
    provider: str
    items: dict[str, int]
    stats: ProviderStats
    latencies_ms: list[int]
    wall_s: float
    busiest_minute: int
    peak_concurrency: int
    configured_rpm: int
    gate_limit_rpm: float
    totals: Totals
    estimated_usd: Decimal | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved_rpm(self) -> float | None:
        started = self.stats.requests + self.stats.in_flight
        return started / self.wall_s * 60.0 if self.wall_s > 0 else None

    @property
    def headroom(self) -> float | None:
        """1 - achieved/configured rpm: how far below the provider's published rate the probe ran."""
        a = self.achieved_rpm
        return None if a is None else 1.0 - a / self.configured_rpm

    def latency(self) -> dict[str, float | None]:
        v = [float(x) for x in self.latencies_ms]
        return {"min": v[0] if v else None, "p50": percentile(v, 0.5), "p95": percentile(v, 0.95),
                "max": v[-1] if v else None, "mean": sum(v) / len(v) if v else None}

    def as_json(self) -> dict[str, Any]:
        lat = self.latency()
        return {
            "job_id": self.job_id, "job": self.job, "provider": self.provider, "items": self.items,
            **{k: v for k, v in self.stats.as_json().items() if k not in ("p50_ms", "p95_ms", "max_ms")},
            "latency_ms": {k: None if x is None else round(x, 1) for k, x in lat.items()},
            "rate": {"wall_s": round(self.wall_s, 3),
                     "achieved_rpm": None if self.achieved_rpm is None else round(self.achieved_rpm, 2),
                     "busiest_minute": self.busiest_minute, "configured_rpm": self.configured_rpm,
                     "gate_limit_rpm": round(self.gate_limit_rpm, 2),
                     "headroom": None if self.headroom is None else round(self.headroom, 4),
                     "peak_concurrency": self.peak_concurrency},
            "cost_usd": show(self.totals.cost_usd), "list_cost_usd": show(self.totals.list_cost_usd),
            "saved_usd": show(self.totals.saved_usd),
            "estimated_usd": None if self.estimated_usd is None else show(self.estimated_usd),
        }


def probe_result(s: Session, job_id: int, job: str, cfg: ProviderConfig, gate_limit_rpm: float,
                 estimated_usd: Decimal | None = None) -> ProbeResult:
    stats = provider_stats(s, job_id=job_id, providers=[cfg.name]).get(cfg.name, ProviderStats(cfg.name))
    rows = list(s.execute(select(Attempt.started_at, Attempt.finished_at, Attempt.outcome, Attempt.latency_ms)
                          .where(Attempt.job_id == job_id).order_by(Attempt.started_at)))
    latencies = sorted(int(lat) for _, _, outcome, lat in rows
                       if outcome == AttemptOutcome.SUCCEEDED and lat is not None)
    starts = [r[0] for r in rows]
    ends = [r[1] or r[0] for r in rows]
    wall_s = (max(ends) - min(starts)).total_seconds() if rows else 0.0
    return ProbeResult(job_id=job_id, job=job, provider=cfg.name, items=counts(s, job_id), stats=stats,
                       latencies_ms=latencies, wall_s=wall_s, busiest_minute=_busiest(starts),
                       peak_concurrency=_peak(starts, ends), configured_rpm=cfg.limits.rpm,
                       gate_limit_rpm=gate_limit_rpm, totals=ledger_totals(s, job_id=job_id),
                       estimated_usd=estimated_usd)


def _busiest(starts: list[datetime]) -> int:
    """Most calls started within any MINUTE_S window (starts sorted)."""
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while (t - starts[lo]).total_seconds() >= MINUTE_S:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _peak(starts: list[datetime], ends: list[datetime]) -> int:
    """Most calls in flight at once."""
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best
