"""Review state of items: approved, rejected (with an optional note) or unreviewed, and edited prompts.

A row in `item_reviews` holds the verdict on an item's *current* image; regenerating an item sends the old
image to its history with the verdict, and the new image starts unreviewed. No row means unreviewed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.core.control import find_job
from pipeline.db.models import Item, ItemReview
from pipeline.db.session import upsert_insert
from pipeline.errors import InputError
from pipeline.manifest.schema import MAX_TEMPLATE_CHARS
from pipeline.states import FINAL_STATES, ItemState

#: longest review note
MAX_NOTE_CHARS = 2000
#: longest edited prompt (the same bound as a manifest's prompt template)
MAX_PROMPT_CHARS = MAX_TEMPLATE_CHARS
#: item states that have an image a person can look at
WITH_IMAGE = frozenset({ItemState.SUCCEEDED, ItemState.CACHED})
#: rows per IN (...) list
CHUNK = 1000

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tabs and newlines are fine in prompts and notes


class ReviewState(StrEnum):
    UNREVIEWED = "unreviewed"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ReviewResult:
    job_id: int
    job_name: str
    approved: tuple[str, ...]
    rejected: tuple[str, ...]
    cleared: tuple[str, ...]


def split_keys(text: str | None) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (item ids cannot contain commas)."""
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def clean_text(text: str | None, *, what: str, limit: int, where: str) -> str | None:
    """A note or prompt as stored: surrounding spaces cut, None when empty; control characters refused."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if len(text) > limit:
        raise InputError(f"the {what} is longer than {limit} characters", where=where)
    if _CONTROL.search(text):
        raise InputError(f"the {what} contains a control character", where=where)
    return text


def review(sessions: sessionmaker[Session], ref: str, now: datetime, *, approve: Sequence[str] = (),
           reject: Sequence[str] = (), clear: Sequence[str] = (), note: str | None = None) -> ReviewResult:
    """Approve, reject or clear (back to unreviewed) items of a job, in one transaction; `note` goes with every
    item approved or rejected here. Unknown items, an item named twice, approving an item without an image or
    reviewing one still in flight are input errors, and then nothing is written."""
    note = clean_text(note, what="note", limit=MAX_NOTE_CHARS, where="--note")
    lists = {"--approve": list(dict.fromkeys(approve)), "--reject": list(dict.fromkeys(reject)),
             "--clear": list(dict.fromkeys(clear))}
    seen: dict[str, str] = {}
    for opt, keys in lists.items():
        for k in keys:
            if k in seen:
                raise InputError(f"item {k!r} is named by both {seen[k]} and {opt}", where=opt)
            seen[k] = opt
    if not seen:
        raise InputError("nothing to review: give --approve, --reject or --clear item ids", where="review")
    with sessions.begin() as s:
        job = find_job(s, ref)
        states = _item_states(s, job.id, list(seen))
        for opt, keys in lists.items():
            missing = [k for k in keys if k not in states]
            if missing:
                raise InputError(f"no such item(s) in job {job.name}: {', '.join(missing)}", where=opt)
        for k in lists["--approve"]:
            if states[k][1] not in WITH_IMAGE:
                raise InputError(f"item {k!r} has no image to approve (it is {states[k][1]})", where="--approve")
        for k in lists["--reject"]:
            if states[k][1] not in FINAL_STATES:
                raise InputError(f"item {k!r} is still {states[k][1]}: review it when it has finished",
                                 where="--reject")
        rows = ([_row(states[k][0], job.id, ReviewState.APPROVED, note, now) for k in lists["--approve"]]
                + [_row(states[k][0], job.id, ReviewState.REJECTED, note, now) for k in lists["--reject"]]
                + [_row(states[k][0], job.id, ReviewState.UNREVIEWED, None, now) for k in lists["--clear"]])
        for i in range(0, len(rows), CHUNK):
            ins = upsert_insert(s, ItemReview).values(rows[i:i + CHUNK])
            s.execute(ins.on_conflict_do_update(index_elements=["item_id"], set_={
                "state": ins.excluded.state, "note": ins.excluded.note, "updated_at": ins.excluded.updated_at}))
        return ReviewResult(job.id, job.name, tuple(lists["--approve"]), tuple(lists["--reject"]),
                            tuple(lists["--clear"]))


def set_prompt(sessions: sessionmaker[Session], ref: str, key: str, prompt: str, now: datetime) -> tuple[int, str]:
    """Store an edited prompt for one item (an override of the manifest's). It is applied, and changes the
    item's cache key, when the item is next regenerated (`pipeline rerun JOB --rejected`). Returns
    (job_id, job name)."""
    text = clean_text(prompt, what="prompt", limit=MAX_PROMPT_CHARS, where="--prompt")
    if text is None:
        raise InputError("the prompt is empty", where="--prompt")
    with sessions.begin() as s:
        job = find_job(s, ref)
        states = _item_states(s, job.id, [key])
        if key not in states:
            raise InputError(f"no such item in job {job.name}: {key}", where="--prompt")
        ins = upsert_insert(s, ItemReview).values(item_id=states[key][0], job_id=job.id,
                                                   state=ReviewState.UNREVIEWED, prompt_override=text, updated_at=now)
        s.execute(ins.on_conflict_do_update(index_elements=["item_id"],
                                            set_={"prompt_override": text, "updated_at": now}))
        return job.id, job.name


def review_counts(s: Session, job_id: int) -> dict[str, int]:
    """{"approved", "rejected", "unreviewed"} over all the job's items."""
    return review_counts_for(s, [job_id]).get(job_id, _counts(0, {}))


def review_counts_for(s: Session, job_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Review counts of several jobs with two grouped queries."""
    ids = list(job_ids)
    if not ids:
        return {}
    totals = dict(s.execute(select(Item.job_id, func.count()).where(Item.job_id.in_(ids)).group_by(Item.job_id))
                  .tuples().all())
    by: dict[int, dict[str, int]] = {}
    for job_id, state, n in s.execute(select(ItemReview.job_id, ItemReview.state, func.count())
                                      .where(ItemReview.job_id.in_(ids))
                                      .group_by(ItemReview.job_id, ItemReview.state)).tuples():
        by.setdefault(int(job_id), {})[str(state)] = int(n)
    return {i: _counts(int(totals.get(i, 0)), by.get(i, {})) for i in ids}


def _counts(total: int, by: dict[str, int]) -> dict[str, int]:
    approved, rejected = by.get(ReviewState.APPROVED, 0), by.get(ReviewState.REJECTED, 0)
    return {"approved": approved, "rejected": rejected, "unreviewed": max(0, total - approved - rejected)}


def _item_states(s: Session, job_id: int, keys: list[str]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for i in range(0, len(keys), CHUNK):
        for item_id, key, state in s.execute(select(Item.id, Item.key, Item.state)
                                             .where(Item.job_id == job_id, Item.key.in_(keys[i:i + CHUNK]))):
            out[str(key)] = (int(item_id), str(state))
    return out


def _row(item_id: int, job_id: int, state: ReviewState, note: str | None, now: datetime) -> dict[str, Any]:
    return {"item_id": item_id, "job_id": job_id, "state": str(state), "note": note, "updated_at": now}
