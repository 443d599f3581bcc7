"""The seams the core calls through, as Protocols: the admission gate, the batch-tier client, and the hook that
tells job notifications an item was blocked.

Implementations live beside their seam (pipeline.gate.redis.RedisGate and pipeline.gate.local.LocalGate;
pipeline.providers.gemini_batch.GeminiBatchClient) and are wired in by the composition root (pipeline.runtime);
the core never imports them. The values crossing the gate seam (GateLimits, Admission, GateSnapshot) are the
gate's own data types, in pipeline.gate.base.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from pipeline.errors import ProviderError
from pipeline.gate.base import Admission, GateLimits, GateSnapshot
from pipeline.providers.base import ImageRequest, ImageResult


class Gate(Protocol):
    """One admission gate per provider key, shared by every worker (pipeline.gate.base tells the checks)."""

    def acquire(self, key: str, limits: GateLimits) -> Admission:
        """Rate, daily count and in-flight slot in one atomic step."""
        ...

    def release(self, key: str, token: str) -> None:
        """Give the in-flight slot back (idempotent; an expired or unknown token is a no-op)."""
        ...

    def feedback(
        self, key: str, *, ok: bool, rate_limited: bool, retry_after_s: float | None, token: str | None = None
    ) -> None:
        """Report a call's outcome: clean (`ok`) raises the rate, `rate_limited` (429) cuts it and blocks
        new admissions for the provider's `retry_after_s` when given. Other failures change nothing.
        Pass the admission's `token`: a 429 for a slot booked before the last cut is not cut for again."""
        ...

    def park(self, key: str, until_epoch_s: float, reason: str) -> None:
        """Refuse admissions (reason "parked") until then (daily quota, paused provider); 0 lifts it."""
        ...

    def snapshot(self, key: str, limits: GateLimits) -> GateSnapshot:
        """The live state, read-only."""
        ...


class RemoteBatch(Protocol):
    """A provider batch as its client reports it."""

    @property
    def name(self) -> str: ...

    @property
    def done(self) -> bool: ...

    #: the provider's state, normalized (pipeline.providers.gemini_batch.BatchState)
    @property
    def state(self) -> str: ...

    #: why the batch failed as a whole, if it did
    @property
    def error(self) -> str | None: ...


class Named(Protocol):
    @property
    def name(self) -> str: ...


B = TypeVar("B", bound=RemoteBatch)


class BatchClient(Protocol[B]):
    """The batch tier of one provider (Gemini batch mode): create, look up, poll, read results, cancel."""

    def create(self, display_name: str, requests: Sequence[tuple[str, ImageRequest]]) -> Named:
        """Submit one batch; an unclear answer (maybe created) raises a maybe-billed ProviderError."""
        ...

    def find_by_display_name(self, display_name: str) -> B | None:
        """The batch created under `display_name`, resolving an unclear create."""
        ...

    def get(self, name: str) -> B: ...

    def results(self, status: B, requests: Mapping[str, ImageRequest]) -> dict[str, ImageResult | ProviderError]:
        """Every key of `requests` mapped to its image or its error, for a batch that is done."""
        ...

    def cancel(self, name: str) -> None: ...


#: the batch client of a provider, in a region (built once per process by the runtime)
BatchClients = Callable[[str, str | None], BatchClient[Any]]


#: called in the transaction that blocked an item of job `job_id` for budget (pipeline.notify claims the run's
#: budget event there, once per run); the runtime wires it, the core never imports notify
OnBlocked = Callable[[Session, int, datetime], None]
