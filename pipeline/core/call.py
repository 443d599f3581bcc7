"""One provider call of one item, as a record: what the sync path (process) and the batch tier (batch) hand
to settlement (settle) instead of a train of positional parameters. And what processing an item came to."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from pipeline.db.models import Item


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not claimed (someone else has it, or not due, or final)
    SUCCEEDED = "succeeded"
    CACHED = "cached"
    RETRY = "retry"  # back to pending with next_attempt_at
    FAILED = "failed"
    BLOCKED = "blocked"
    LOST_LEASE = "lost_lease"


@dataclass(frozen=True)
class Call:
    #: the item as claimed (a detached row: read from, never written through)
    item: Item
    provider: str
    #: what the budget reserved for this call; settlement replaces it by the real cost ...
    estimate: Decimal
    #: ... in exactly these budget periods, the ones it was reserved in ("day:...", "month:...")
    periods: tuple[str, ...]
    #: the attempts row written before the call
    attempt_id: int
    #: this call's number among the item's calls (1 = the first), for the retry policy
    attempt: int
    #: the lease the item runs under: this process's owner id, or a batch's
    owner: str

    @property
    def item_id(self) -> int:
        return self.item.id

    @property
    def job_id(self) -> int:
        return self.item.job_id
