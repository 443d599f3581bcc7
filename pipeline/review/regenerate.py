"""Regenerate rejected items: each one's current image is kept as history (copied under `_history/` and
recorded in `item_outputs` with the verdict and note that sent it back), its edited prompt (if any) replaces
the manifest's and so changes its cache key, and it goes back to pending with the cache bypassed for it alone.

Storage copies come first; then one transaction records the history, applies the prompts and resets the
items, so a failure anywhere leaves the items rejected and untouched (a copied file without its row is an
orphan, never a lost image).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.core import lifecycle
from pipeline.core.control import find_job
from pipeline.db.models import Item, ItemOutput, ItemReview, Job
from pipeline.errors import InputError, StorageError
from pipeline.manifest.expand import cache_key_for
from pipeline.presets import MODEL
from pipeline.review.state import WITH_IMAGE, ReviewState
from pipeline.states import FINAL_STATES, JobState
from pipeline.storage.base import Storage

#: where kept images live in storage (beside `_cache/` and `_thumbs/`)
HISTORY_PREFIX = "_history"


def history_key(job_id: int, item_id: int, seq: int, ext: str) -> str:
    return f"{HISTORY_PREFIX}/{job_id}/{item_id}/{seq}.{ext}"


@dataclass(frozen=True)
class _Planned:
    item_id: int
    key: str
    seq: int
    #: where the current image and its thumbnail are
    output_key: str
    source_thumb: str | None
    #: the kept copies (None: the item had no image, e.g. it had failed)
    object_key: str | None
    thumb_key: str | None
    prompt: str
    cache_key: str
    state: str
    provider: str | None
    cost_usd: Decimal
    note: str | None
    produced_at: datetime | None
    #: the edited prompt and its cache key, when it differs from the item's prompt
    new_prompt: str | None
    new_cache_key: str | None


@dataclass(frozen=True)
class RegenerateResult:
    job_id: int
    job_name: str
    #: items sent back to pending
    keys: tuple[str, ...]
    #: of those, items whose image was kept as history
    kept: int
    #: of those, items that run with an edited prompt
    edited: int


def regenerate_rejected(sessions: sessionmaker[Session], storage: Storage, ref: str,
                        now: datetime) -> RegenerateResult:
    """Re-run a job's rejected items (those that have finished), bypassing the cache for them only."""
    with sessions() as s:
        job = find_job(s, ref)
        job_id, job_name = job.id, job.name
        plans = _plan(s, job_id)
    if not plans:
        return RegenerateResult(job_id, job_name, (), 0, 0)
    kept: dict[int, tuple[str, str | None]] = {}
    for p in plans:  # copy before anything is written: an image is never lost
        if p.object_key is not None:
            kept[p.item_id] = _keep(storage, p)
    try:
        with sessions.begin() as s:
            done = _apply(s, job_id, plans, kept, now)
    except IntegrityError:
        raise InputError("another regeneration of this job ran at the same time; look at the job and try again",
                         where="rerun --rejected") from None
    return RegenerateResult(job_id, job_name, tuple(p.key for p in done), sum(p.item_id in kept for p in done),
                            sum(p.new_prompt is not None for p in done))


def _plan(s: Session, job_id: int) -> list[_Planned]:
    rows = s.execute(select(Item, ItemReview.note, ItemReview.prompt_override)
                     .join(ItemReview, ItemReview.item_id == Item.id)
                     .where(Item.job_id == job_id, ItemReview.state == ReviewState.REJECTED,
                            Item.state.in_([str(x) for x in FINAL_STATES]))
                     .order_by(Item.id)).all()
    ids = [item.id for item, _, _ in rows]
    last: dict[int, int] = {}
    if ids:
        last = dict(s.execute(select(ItemOutput.item_id, func.max(ItemOutput.seq))
                              .where(ItemOutput.item_id.in_(ids)).group_by(ItemOutput.item_id)).tuples().all())
    plans = []
    for item, note, override in rows:
        seq = int(last.get(item.id) or 0) + 1
        has_image = item.state in WITH_IMAGE and item.stored_url is not None
        ext = item.output_key.rsplit(".", 1)[-1] if "." in item.output_key.rsplit("/", 1)[-1] else "img"
        new_prompt = override if override and override != item.prompt else None
        new_key = None if new_prompt is None else cache_key_for(
            model=MODEL, prompt=new_prompt, resolution=item.resolution, aspect_ratio=item.aspect_ratio,
            output_format=item.output_format, reference_sha256s=[str(r["sha256"]) for r in item.references or []])
        plans.append(_Planned(
            item_id=item.id, key=item.key, seq=seq, output_key=item.output_key, source_thumb=item.thumb_key,
            object_key=history_key(job_id, item.id, seq, ext) if has_image else None,
            thumb_key=history_key(job_id, item.id, seq, "thumb.jpg") if has_image and item.thumb_key else None,
            prompt=item.prompt, cache_key=item.cache_key, state=item.state, provider=item.provider,
            cost_usd=item.cost_usd, note=note, produced_at=item.finished_at, new_prompt=new_prompt,
            new_cache_key=new_key))
    return plans


def _keep(storage: Storage, p: _Planned) -> tuple[str, str | None]:
    """Copy an item's current image (and thumbnail) to its history keys. The item's output key is the source:
    the cache object behind it is overwritten when the item is generated again."""
    assert p.object_key is not None
    storage.copy(p.output_key, p.object_key)
    thumb: str | None = None
    if p.thumb_key is not None and p.source_thumb is not None:
        try:
            storage.copy(p.source_thumb, p.thumb_key)
            thumb = p.thumb_key
        except StorageError:
            thumb = None  # a thumbnail is a convenience: the page shows the full image instead
    return p.object_key, thumb


def _apply(s: Session, job_id: int, plans: list[_Planned], kept: dict[int, tuple[str, str | None]],
           now: datetime) -> list[_Planned]:
    """Record history, apply edited prompts and reset the items that are still rejected and final."""
    q = (select(Item.id).join(ItemReview, ItemReview.item_id == Item.id)
         .where(Item.id.in_([p.item_id for p in plans]), ItemReview.state == ReviewState.REJECTED,
                Item.state.in_([str(x) for x in FINAL_STATES])))
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=Item)
    still = set(s.scalars(q))
    done = [p for p in plans if p.item_id in still]
    if not done:
        return []
    for p in done:
        if p.item_id in kept:
            obj, thumb = kept[p.item_id]
            s.add(ItemOutput(item_id=p.item_id, job_id=job_id, seq=p.seq, object_key=obj, thumb_key=thumb,
                             prompt=p.prompt, cache_key=p.cache_key, state=p.state, provider=p.provider,
                             cost_usd=p.cost_usd, review_state=ReviewState.REJECTED, note=p.note,
                             produced_at=p.produced_at, archived_at=now))
    s.flush()  # a second regeneration racing this one fails here, on the unique (item_id, seq)
    ids = [p.item_id for p in done]
    reset_for_regeneration(s, job_id, done, now)
    s.execute(update(ItemReview).where(ItemReview.item_id.in_(ids))
              .values(state=ReviewState.UNREVIEWED, note=None, updated_at=now)
              .execution_options(synchronize_session=False))
    return done


def reset_for_regeneration(s: Session, job_id: int, done: list[_Planned], now: datetime) -> None:
    """The one state write of regeneration, through the item lifecycle: final items back to pending with the
    cache bypassed for them (force) and their edited prompt (and its cache key) applied, their job active again."""
    edited = [p for p in done if p.new_prompt is not None]
    for p in edited:
        lifecycle.reset(s, now, ids=[p.item_id], states=FINAL_STATES, force=True,
                        spec={"prompt": p.new_prompt, "cache_key": p.new_cache_key})
    rest = [p.item_id for p in done if p.new_prompt is None]
    if rest:
        lifecycle.reset(s, now, ids=rest, states=FINAL_STATES, force=True)
    s.execute(update(Job).where(Job.id == job_id).values(state=JobState.ACTIVE, updated_at=now)
              .execution_options(synchronize_session=False))
