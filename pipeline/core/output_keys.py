"""One output key, one job: submit refuses a key another job's item also writes (they would overwrite each other's
images in storage without a word), unless the manifest says `output: {shared: true}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.db.models import Item, Job
from pipeline.errors import InputError

#: keys looked up per query (items.output_key is indexed)
CHUNK = 1000


def refuse_shared_keys(s: Session, job_id: int, specs: Sequence[Any]) -> None:
    """Raise InputError naming the first item whose output key belongs to an item of another job."""
    by_key = {spec.output_key: spec.key for spec in specs}
    keys = sorted(by_key)
    for i in range(0, len(keys), CHUNK):
        hit = s.execute(
            select(Item.output_key, Item.key, Job.name).join(Job, Job.id == Item.job_id)
            .where(Item.output_key.in_(keys[i:i + CHUNK]), Item.job_id != job_id).limit(1)
        ).first()
        if hit is not None:
            key, other_item, other_job = hit
            raise InputError(
                f"output key {key!r} is also written by item {other_item!r} of job {other_job!r}: the two jobs would "
                "overwrite each other's images. Make the key template unique per job (e.g. with {{ job }}), or "
                "set `output: {shared: true}` to let the last image stored win",
                where=f"item {by_key[key]}")
