"""Delivering claimed job events: Slack-compatible JSON POSTed with the runtime's shared HTTP client.

A pending row is taken with a compare-and-set (pending -> sending) before the POST, so one process sends it;
then it is marked sent, or failed with the reason. A POST that could not have arrived (no connection), or was
refused for now (429, 5xx), is tried again later, up to MAX_ATTEMPTS; one whose answer never came (a timeout
after sending) is not sent again: it may have arrived, and a duplicate is worse than a gap in a channel.

The body follows Slack's incoming webhooks: `text` (the fallback every client shows), `blocks` (section blocks
in mrkdwn) and `metadata` (`event_type`, `event_payload` with the job's exact numbers), so a Slack channel
and a script read the same message. Webhook URLs are never logged: they carry the channel's secret.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import NotifySettings, Settings, webhook_url
from pipeline.db.models import Job, Notification
from pipeline.money import show
from pipeline.notify.events import effective
from pipeline.references import address_problem, system_resolve
from pipeline.reports.queries import JobSummary, job_summary
from pipeline.review.state import review_counts

log = logging.getLogger("pipeline.notify")

#: a webhook that does not answer within this is given up for this try
WEBHOOK_TIMEOUT_S = 5.0
#: tries of one event when the webhook could not be reached or asked to come back
MAX_ATTEMPTS = 3
#: pause before the next try, times the tries so far
RETRY_BASE_S = 30.0
#: a row left `sending` this long belongs to a process that stopped mid-POST: it is marked failed, not resent
STALE_SENDING_S = 300.0
#: rows delivered per call
BATCH = 20

_TITLES = {"finished": "finished", "failed": "finished with failures", "budget": "hit its budget"}
_ICONS = {"finished": ":white_check_mark:", "failed": ":warning:", "budget": ":money_with_wings:"}


@dataclass(frozen=True)
class Delivery:
    notification_id: int
    event: str
    state: str  # sent | failed | pending (to be tried again) | skipped


def deliver_due(sessions: sessionmaker[Session], client: httpx.Client, settings: Settings, now: datetime, *,
                limit: int = BATCH) -> list[Delivery]:
    """Send the claimed events that are due; returns what happened to each one this process took."""
    with sessions.begin() as s:
        s.execute(update(Notification)
                  .where(Notification.state == "sending",
                         Notification.updated_at < now - timedelta(seconds=STALE_SENDING_S))
                  .values(state="failed", error="the sending process stopped mid-send; not sent again (it may have "
                                                "arrived)", updated_at=now)
                  .execution_options(synchronize_session=False))
    with sessions() as s:
        due = list(s.scalars(select(Notification.id).where(Notification.state == "pending",
                                                           Notification.next_attempt_at <= now)
                             .order_by(Notification.id).limit(limit)))
    out = []
    for nid in due:
        d = deliver_one(sessions, client, settings, nid, now)
        if d is not None:
            out.append(d)
    return out


def deliver_one(sessions: sessionmaker[Session], client: httpx.Client, settings: Settings, nid: int,
                now: datetime) -> Delivery | None:
    """Take one pending event (compare-and-set) and send it. None when another process took it first."""
    with sessions.begin() as s:
        took = s.execute(update(Notification).where(Notification.id == nid, Notification.state == "pending")
                         .values(state="sending", attempts=Notification.attempts + 1, updated_at=now)
                         .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        if took != 1:
            return None
        n = s.get_one(Notification, nid)
        job = s.get_one(Job, n.job_id)
        eff = effective(settings.notify, job.manifest)
        body = slack_body(n.event, job_summary(s, job), review_counts(s, job.id), settings.serve.public_url)
        event, attempts = n.event, n.attempts
    url, problem = _target(eff, job.manifest, settings)
    if url is None:
        return _finish(sessions, nid, event, "skipped", problem or "no webhook configured", now)
    if problem is not None:
        return _finish(sessions, nid, event, "failed", problem, now)
    try:
        res = client.post(url, json=body, timeout=WEBHOOK_TIMEOUT_S)
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # never reached the receiver: safe to try again
        return _again(sessions, nid, event, attempts, f"webhook not reachable: {type(e).__name__}", now)
    except httpx.HTTPError as e:  # sent, answer lost: it may have arrived
        return _finish(sessions, nid, event, "failed", f"webhook: {type(e).__name__} (not sent again)", now)
    if res.status_code == 429 or res.status_code >= 500:
        return _again(sessions, nid, event, attempts, f"webhook answered {res.status_code}", now)
    if res.status_code >= 400:
        return _finish(sessions, nid, event, "failed", f"webhook refused it: HTTP {res.status_code}", now)
    return _finish(sessions, nid, event, "sent", None, now)


def _target(eff: NotifySettings | None, manifest: dict[str, Any] | None,
            settings: Settings) -> tuple[str | None, str | None]:
    """(url, problem): the webhook of a job, and why it may not be used. A webhook named by a manifest (not the
    operator's config) must not lead to a private or metadata address unless allow_private_references is on."""
    if eff is None:
        return None, "the job has no notify settings"
    url = webhook_url(eff)
    if url is None:
        return None, None
    own = (manifest or {}).get("notify") or {}
    from_manifest = bool(own.get("webhook_url") or own.get("webhook_url_env"))
    if from_manifest:
        problem = _address_problem(url, allow_private=settings.allow_private_references)
        if problem:
            return url, f"webhook address refused: {problem}"
    return url, None


def _address_problem(url: str, *, allow_private: bool) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "not an http(s) URL"
    try:
        addresses = system_resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError:
        return "its host does not resolve"
    for a in addresses:
        problem = address_problem(ipaddress.ip_address(a.split("%", 1)[0]), allow_private=allow_private)
        if problem:
            return f"{parts.hostname} is {problem}"
    return None


def _again(sessions: sessionmaker[Session], nid: int, event: str, attempts: int, error: str,
           now: datetime) -> Delivery:
    if attempts >= MAX_ATTEMPTS:
        return _finish(sessions, nid, event, "failed", f"{error}; gave up after {attempts} tries", now)
    with sessions.begin() as s:
        s.execute(update(Notification).where(Notification.id == nid, Notification.state == "sending")
                  .values(state="pending", error=error, updated_at=now,
                          next_attempt_at=now + timedelta(seconds=RETRY_BASE_S * attempts))
                  .execution_options(synchronize_session=False))
    log.warning("notification %s (%s) not delivered, will try again: %s", nid, event, error)
    return Delivery(nid, event, "pending")


def _finish(sessions: sessionmaker[Session], nid: int, event: str, state: str, error: str | None,
            now: datetime) -> Delivery:
    with sessions.begin() as s:
        s.execute(update(Notification).where(Notification.id == nid, Notification.state == "sending")
                  .values(state=state, error=error, updated_at=now, sent_at=now if state == "sent" else None)
                  .execution_options(synchronize_session=False))
    if state == "failed":
        log.warning("notification %s (%s) failed: %s", nid, event, error)
    return Delivery(nid, event, state)


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def job_link(public_url: str | None, job_id: int) -> str | None:
    return f"{public_url.rstrip('/')}/jobs/{job_id}" if public_url else None


def slack_body(event: str, summary: JobSummary, review: dict[str, int], public_url: str | None) -> dict[str, Any]:
    """The message: Slack-compatible (text, blocks, metadata) with the job's exact numbers in the metadata."""
    t, c = summary.totals, summary.counts
    counts = ", ".join(f"{k} {v}" for k, v in c.items() if v) or "no items"
    link = job_link(public_url, summary.job_id)
    headline = f"{_ICONS.get(event, '')} Job *{_mrkdwn(summary.name)}* {_TITLES.get(event, event)}".strip()
    text = (f"{headline}: {_mrkdwn(counts)} · cost ${show(t.cost_usd)} · saved ${show(t.saved_usd)}"
            + (f" · <{link}|open the job>" if link else ""))
    fields = [("State", summary.state), ("Items", counts), ("Cost", f"${show(t.cost_usd)}"),
              ("Saved", f"${show(t.saved_usd)}"),
              ("Review", f"approved {review['approved']}, rejected {review['rejected']}, "
                         f"unreviewed {review['unreviewed']}")]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(v)}"} for k, v in fields]},
    ]
    payload = {"job": summary.name, "job_id": summary.job_id, "event": event, "state": summary.state,
               "counts": c, "cost_usd": show(t.cost_usd), "list_cost_usd": show(t.list_cost_usd),
               "saved_usd": show(t.saved_usd), "review": review, "url": link}
    return {"text": text, "blocks": blocks,
            "metadata": {"event_type": f"pipeline_job_{event}", "event_payload": payload}}
