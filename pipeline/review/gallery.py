"""The job page's gallery: one page of items with everything a reviewer needs, filtered by item state, review
state, tag, provider and resolution, in a fixed number of queries whatever the job's size."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.orm import Session

from pipeline.db.models import Attempt, Item, ItemOutput, ItemReview
from pipeline.review.state import WITH_IMAGE, ReviewState
from pipeline.states import ItemState

#: images on one page of the gallery by default, and at most
PER_PAGE = 48
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class Filters:
    state: str | None = None
    review: str | None = None
    tag: str | None = None
    provider: str | None = None
    resolution: str | None = None

    @classmethod
    def parse(cls, params: dict[str, str]) -> Filters:
        """From query parameters; unknown states and review states are ignored (no filter), never an error."""
        def get(name: str) -> str | None:
            v = (params.get(name) or "").strip()
            return v[:200] or None

        state, review = get("state"), get("review")
        return cls(state=state if state in {str(s) for s in ItemState} else None,
                   review=review if review in {str(r) for r in ReviewState} else None,
                   tag=get("tag"), provider=get("provider"), resolution=get("resolution"))

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in (("state", self.state), ("review", self.review), ("tag", self.tag),
                                  ("provider", self.provider), ("resolution", self.resolution)) if v}


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    seq: int
    thumb_key: str | None
    prompt: str
    provider: str | None
    cost_usd: Decimal
    review_state: str
    note: str | None
    archived_at: datetime


@dataclass(frozen=True)
class Card:
    id: int
    key: str
    state: str
    review: str
    note: str | None
    prompt: str
    prompt_override: str | None
    references: tuple[str, ...]
    tags: tuple[str, ...]
    provider: str | None
    resolution: str
    aspect_ratio: str
    cost_usd: Decimal
    #: calls in the item's current run, and in all
    attempts: int
    calls: int
    failure_reason: str | None
    has_image: bool
    has_thumb: bool
    #: changes whenever the item's image may have changed (cache-busting for image URLs)
    version: str
    history: tuple[HistoryEntry, ...] = ()

    @property
    def override_pending(self) -> bool:
        """An edited prompt that the current image was not made from (applied at the next regeneration)."""
        return self.prompt_override is not None and self.prompt_override != self.prompt


@dataclass
class GalleryPage:
    cards: list[Card]
    total: int
    page: int
    per_page: int
    #: values present in the job, for the filter menus
    providers: list[str] = field(default_factory=list)
    resolutions: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _where(job_id: int, f: Filters) -> list[Any]:
    where: list[Any] = [Item.job_id == job_id]
    if f.state:
        where.append(Item.state == f.state)
    if f.review == ReviewState.UNREVIEWED:
        where.append(or_(ItemReview.state.is_(None), ItemReview.state == ReviewState.UNREVIEWED))
    elif f.review:
        where.append(ItemReview.state == f.review)
    if f.provider:
        where.append(Item.provider == f.provider)
    if f.resolution:
        where.append(Item.resolution == f.resolution)
    if f.tag:
        # tags are a JSON list; its text holds the tag as a JSON string (portable across SQLite and Postgres)
        needle = json.dumps(f.tag).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(cast(Item.tags, Text).like(f"%{needle}%", escape="\\"))
    return where


def gallery(s: Session, job_id: int, filters: Filters, *, page: int = 1, per_page: int = PER_PAGE) -> GalleryPage:
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    where = _where(job_id, filters)
    base = select(Item.id).outerjoin(ItemReview, ItemReview.item_id == Item.id).where(*where)
    total = int(s.scalar(select(func.count()).select_from(base.subquery())) or 0)
    pages = max(1, -(-total // per_page))
    page = max(1, min(page, pages))
    rows = s.execute(select(Item, ItemReview.state, ItemReview.note, ItemReview.prompt_override)
                     .outerjoin(ItemReview, ItemReview.item_id == Item.id).where(*where)
                     .order_by(Item.id).offset((page - 1) * per_page).limit(per_page)).all()
    ids = [item.id for item, *_ in rows]
    calls = dict(s.execute(select(Attempt.item_id, func.count()).where(Attempt.item_id.in_(ids))
                           .group_by(Attempt.item_id)).tuples().all()) if ids else {}
    history: dict[int, list[HistoryEntry]] = {}
    if ids:
        for h in s.scalars(select(ItemOutput).where(ItemOutput.item_id.in_(ids))
                           .order_by(ItemOutput.item_id, ItemOutput.seq.desc())):
            history.setdefault(h.item_id, []).append(HistoryEntry(
                h.id, h.seq, h.thumb_key, h.prompt, h.provider, h.cost_usd, h.review_state, h.note, h.archived_at))
    cards = [_card(item, review, note, override, int(calls.get(item.id, 0)), history.get(item.id, []))
             for item, review, note, override in rows]
    return GalleryPage(cards, total, page, per_page, *_options(s, job_id))


def card(s: Session, job_id: int, item_id: int) -> Card | None:
    """One item's card (after a review action)."""
    row = s.execute(select(Item, ItemReview.state, ItemReview.note, ItemReview.prompt_override)
                    .outerjoin(ItemReview, ItemReview.item_id == Item.id)
                    .where(Item.job_id == job_id, Item.id == item_id)).first()
    if row is None:
        return None
    item, review, note, override = row
    n = int(s.scalar(select(func.count()).select_from(Attempt).where(Attempt.item_id == item_id)) or 0)
    hist = [HistoryEntry(h.id, h.seq, h.thumb_key, h.prompt, h.provider, h.cost_usd, h.review_state, h.note,
                         h.archived_at)
            for h in s.scalars(select(ItemOutput).where(ItemOutput.item_id == item_id)
                               .order_by(ItemOutput.seq.desc()))]
    return _card(item, review, note, override, n, hist)


def _card(item: Item, review: str | None, note: str | None, override: str | None, calls: int,
          history: list[HistoryEntry]) -> Card:
    has_image = item.state in WITH_IMAGE and item.stored_url is not None
    refs = tuple(str(r.get("source", "")).rsplit("/", 1)[-1] for r in item.references or [])
    return Card(
        id=item.id, key=item.key, state=item.state, review=review or ReviewState.UNREVIEWED, note=note,
        prompt=item.prompt, prompt_override=override, references=refs, tags=tuple(str(t) for t in item.tags or []),
        provider=item.provider, resolution=item.resolution, aspect_ratio=item.aspect_ratio, cost_usd=item.cost_usd,
        attempts=item.attempts, calls=calls, failure_reason=item.failure_reason, has_image=has_image,
        has_thumb=has_image and item.thumb_key is not None,
        version=f"{item.updated_at:%Y%m%d%H%M%S%f}-{len(history)}", history=tuple(history))


def _options(s: Session, job_id: int) -> tuple[list[str], list[str], list[str]]:
    providers = [str(p) for p in s.scalars(select(Item.provider).where(Item.job_id == job_id,
                                                                        Item.provider.is_not(None))
                                           .distinct().order_by(Item.provider))]
    resolutions = [str(r) for r in s.scalars(select(Item.resolution).where(Item.job_id == job_id).distinct()
                                             .order_by(Item.resolution))]
    tags: set[str] = set()
    for text in s.scalars(select(cast(Item.tags, Text)).where(Item.job_id == job_id).distinct()):
        try:
            tags.update(str(t) for t in json.loads(text or "[]"))
        except ValueError:
            continue
    return providers, resolutions, sorted(tags)
