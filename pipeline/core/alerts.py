"""Budget alerts at 50, 80 and 100% of a cap: to the log, and to a webhook when configured.

Each threshold is claimed with a compare-and-set on the row's `alerted_pct`, inside the settling transaction,
so one alert goes out per threshold however many workers cross it together. Sending happens after commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.db.models import BudgetPeriod, Job

log = logging.getLogger("pipeline.budget")

THRESHOLDS = (50, 80, 100)
#: a webhook that does not answer within this is given up (the alert is in the log either way)
WEBHOOK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Alert:
    scope: str  # "job <name>" | "day:..." | "month:..."
    pct: int
    spent_usd: Decimal
    cap_usd: Decimal

    def text(self) -> str:
        return f"budget {self.scope}: {self.pct}% used (${self.spent_usd:.2f} of ${self.cap_usd:.2f})"


def _crossed(spent: Decimal, cap: Decimal, already: int) -> int | None:
    if cap <= 0:
        return None
    pct = spent * 100 / cap
    hits = [t for t in THRESHOLDS if pct >= t and t > already]
    return max(hits) if hits else None


def claim_alerts(s: Session, job_id: int, periods: Sequence[str]) -> list[Alert]:
    """Inside the settling transaction: the thresholds just crossed, each claimed by exactly one caller, for the
    job and the budget periods its cost was charged to."""
    out: list[Alert] = []
    row = s.execute(select(Job.name, Job.spent_usd, Job.max_usd, Job.alerted_pct)
                    .where(Job.id == job_id)).one_or_none()
    if row is not None and row.max_usd is not None:
        pct = _crossed(row.spent_usd, row.max_usd, row.alerted_pct)
        if pct is not None and s.execute(update(Job).where(Job.id == job_id, Job.alerted_pct == row.alerted_pct)
                                         .values(alerted_pct=pct)
                                         .execution_options(synchronize_session=False)).rowcount == 1:  # type: ignore[attr-defined]
            out.append(Alert(f"job {row.name}", pct, row.spent_usd, row.max_usd))
    for period in periods:
        prow = s.get(BudgetPeriod, period)
        if prow is None or prow.cap_usd is None:
            continue
        cap = prow.cap_usd
        pct = _crossed(prow.spent_usd, cap, prow.alerted_pct)
        if pct is not None and s.execute(update(BudgetPeriod)
                                         .where(BudgetPeriod.period == period,
                                                BudgetPeriod.alerted_pct == prow.alerted_pct)
                                         .values(alerted_pct=pct)
                                         .execution_options(synchronize_session=False)).rowcount == 1:  # type: ignore[attr-defined]
            out.append(Alert(period, pct, prow.spent_usd, cap))
    return out


def send_alerts(alerts: list[Alert], webhook_url: str | None, client: httpx.Client) -> None:
    """Log each alert and POST it to the webhook (JSON) with the process's client. A failing webhook is logged,
    never raised."""
    for a in alerts:
        log.warning(a.text())
        if not webhook_url:
            continue
        body = {"text": a.text(), "scope": a.scope, "pct": a.pct, "spent_usd": f"{a.spent_usd:.2f}",
                "cap_usd": f"{a.cap_usd:.2f}"}
        try:
            client.post(webhook_url, json=body, timeout=WEBHOOK_TIMEOUT_S)
        except httpx.HTTPError as e:
            log.warning("budget alert webhook failed: %s", type(e).__name__)
