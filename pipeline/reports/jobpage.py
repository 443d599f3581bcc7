"""What the HTML job report shows, gathered with a fixed number of SQL queries whatever the job's size.

Every number is an exact SQL aggregate (the same `job_summary` that `pipeline report JOB --json` prints);
only the gallery and the list of failed items are samples (the first `limit` rows), and they say so.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.models import Item, Job
from pipeline.errors import InputError
from pipeline.reports.queries import JobSummary, Totals, job_summary, ledger_report
from pipeline.reports.stability import ProviderStats, provider_stats
from pipeline.states import ItemState
from pipeline.storage.base import Storage

log = logging.getLogger("pipeline.reports")

#: images shown in the gallery by default (the first ones of the job)
GALLERY_LIMIT = 200
#: failed or blocked items listed one by one by default (all are counted in the reasons table)
FAILED_LIMIT = 200
#: distinct failure reasons listed
REASONS_LIMIT = 50
#: parallel reads of thumbnails from storage
THUMB_READERS = 8

_FAILED = (ItemState.FAILED, ItemState.BLOCKED)
_DONE = (ItemState.SUCCEEDED, ItemState.CACHED)


@dataclass(frozen=True)
class GalleryItem:
    key: str
    state: str
    provider: str | None
    resolution: str
    cost_usd: Decimal
    stored_url: str | None
    thumb_key: str | None


@dataclass(frozen=True)
class FailedItem:
    key: str
    state: str
    provider: str | None
    attempts: int
    reason: str


@dataclass
class JobPage:
    summary: JobSummary
    by_day: dict[str, Totals]
    stability: dict[str, ProviderStats]
    gallery: list[GalleryItem]
    #: items with an image (succeeded or cached): the gallery shows the first len(gallery) of them
    gallery_total: int
    failed: list[FailedItem]
    failed_total: int
    #: (reason, items) for failed and blocked items, most frequent first
    reasons: list[tuple[str, int]]
    generated_at: datetime
    since: datetime | None = None
    until: datetime | None = None
    #: thumbnail bytes by thumb_key, for those that could be read
    thumbs: dict[str, bytes] = field(default_factory=dict)

    @property
    def cache_hit_rate(self) -> float | None:
        return self.summary.cache_hit_rate


def gather(s: Session, job: Job, now: datetime, *, since: datetime | None = None, until: datetime | None = None,
           gallery_limit: int = GALLERY_LIMIT, failed_limit: int = FAILED_LIMIT) -> JobPage:
    summary = job_summary(s, job, since=since, until=until)
    by_day = ledger_report(s, "day", job_id=job.id, since=since, until=until)
    stability = provider_stats(s, job_id=job.id, since=since, until=until)
    gallery = [GalleryItem(*row) for row in s.execute(
        select(Item.key, Item.state, Item.provider, Item.resolution, Item.cost_usd, Item.stored_url, Item.thumb_key)
        .where(Item.job_id == job.id, Item.state.in_(_DONE)).order_by(Item.id).limit(gallery_limit))]
    failed = [FailedItem(k, st, p, int(a or 0), r or "") for k, st, p, a, r in s.execute(
        select(Item.key, Item.state, Item.provider, Item.attempts, Item.failure_reason)
        .where(Item.job_id == job.id, Item.state.in_(_FAILED)).order_by(Item.id).limit(failed_limit))]
    n = func.count()
    reasons = [(r or "(no reason recorded)", int(c)) for r, c in s.execute(
        select(Item.failure_reason, n).where(Item.job_id == job.id, Item.state.in_(_FAILED))
        .group_by(Item.failure_reason).order_by(n.desc(), Item.failure_reason).limit(REASONS_LIMIT))]
    c = summary.counts
    return JobPage(summary=summary, by_day=by_day, stability=stability, gallery=gallery,
                   gallery_total=sum(c.get(str(st), 0) for st in _DONE), failed=failed,
                   failed_total=sum(c.get(str(st), 0) for st in _FAILED), reasons=reasons, generated_at=now,
                   since=since, until=until)


def read_thumbnails(storage: Storage, items: list[GalleryItem]) -> dict[str, bytes]:
    """The gallery's thumbnails from storage, read in parallel; one that cannot be read is left out."""
    keys = list(dict.fromkeys(i.thumb_key for i in items if i.thumb_key))

    def read(key: str) -> tuple[str, bytes | None]:
        try:
            return key, storage.get(key)
        except Exception as e:  # a missing thumbnail shows a placeholder; the report still renders
            log.info("thumbnail %s not readable: %s", key, type(e).__name__)
            return key, None

    if not keys:
        return {}
    with ThreadPoolExecutor(max_workers=min(THUMB_READERS, len(keys))) as pool:
        return {k: data for k, data in pool.map(read, keys) if data is not None}


def build_job_page(sessions: sessionmaker[Session], storage: Storage, job_id: int, now: datetime, *,
                   since: datetime | None = None, until: datetime | None = None,
                   gallery_limit: int = GALLERY_LIMIT) -> JobPage:
    """Gather the page in one read-only session, then read the gallery's thumbnails from storage."""
    with sessions() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise InputError(f"no job with id {job_id}", where="JOB")
        page = gather(s, job, now, since=since, until=until, gallery_limit=gallery_limit)
    page.thumbs = read_thumbnails(storage, page.gallery)
    return page
