"""A Gemini batch as the API describes it: its states, the operation answered by create/get/list (as a
BatchStatus), the handle the pipeline keeps, and where a finished batch's output sits. Pure data, no I/O; the
calls are pipeline.providers.gemini_batch.

Wire notes (PROVIDERS.md §3): states arrive as BATCH_STATE_* (or JOB_STATE_* via SDK-shaped proxies), counts as
strings, the output under `metadata.output` (SDK) or `response` (older clients), inline (`inlinedResponses`,
sometimes nested once more) or as a `responsesFile`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pipeline.providers.http import MAX_MESSAGE_CHARS


class BatchState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNSPECIFIED = "unspecified"

    @property
    def terminal(self) -> bool:
        return self in (BatchState.SUCCEEDED, BatchState.FAILED, BatchState.CANCELLED, BatchState.EXPIRED)


_STATE_ALIASES = {
    "PENDING": BatchState.PENDING, "QUEUED": BatchState.PENDING,
    "RUNNING": BatchState.RUNNING, "CANCELLING": BatchState.RUNNING, "PAUSED": BatchState.RUNNING,
    "UPDATING": BatchState.RUNNING,
    "SUCCEEDED": BatchState.SUCCEEDED, "PARTIALLY_SUCCEEDED": BatchState.SUCCEEDED,
    "FAILED": BatchState.FAILED, "CANCELLED": BatchState.CANCELLED, "EXPIRED": BatchState.EXPIRED,
}  # fmt: skip


def normalize_state(value: Any) -> BatchState:
    """BATCH_STATE_* (the wire) or JOB_STATE_* (the SDK's names) as one enum."""
    name = str(value or "").upper().removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    return _STATE_ALIASES.get(name, BatchState.UNSPECIFIED)


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0


@dataclass(frozen=True)
class BatchStatus:
    name: str
    display_name: str
    state: BatchState
    done: bool
    request_count: int = 0
    pending_count: int = 0
    succeeded_count: int = 0
    failed_count: int = 0
    create_time: str = ""
    #: the operation's error message, for a batch that failed as a whole
    error: str | None = None
    #: the operation as answered (holds the inline results once done)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_operation(cls, op: Mapping[str, Any]) -> BatchStatus:
        meta = op.get("metadata")
        if not isinstance(meta, Mapping):  # a bare GenerateContentBatch (as in some list answers)
            meta = op
        state = normalize_state(meta.get("state") or op.get("state"))
        stats = meta.get("batchStats")
        stats = stats if isinstance(stats, Mapping) else {}
        err = op.get("error")
        return cls(
            name=str(op.get("name") or meta.get("name") or ""),
            display_name=str(meta.get("displayName") or meta.get("display_name") or ""),
            state=state,
            done=op.get("done") is True or state.terminal,
            request_count=_int(stats.get("requestCount")),
            pending_count=_int(stats.get("pendingRequestCount")),
            succeeded_count=_int(stats.get("successfulRequestCount")),
            failed_count=_int(stats.get("failedRequestCount")),
            create_time=str(meta.get("createTime") or ""),
            error=str(err.get("message") or err)[:MAX_MESSAGE_CHARS] if isinstance(err, Mapping) else None,
            raw=op,
        )


@dataclass(frozen=True)
class BatchHandle:
    name: str
    display_name: str
    keys: tuple[str, ...]
    mode: Literal["inline", "file"]
    #: the uploaded JSONL input ("files/..."), file mode only
    input_file: str | None = None


def batch_output(op: Mapping[str, Any]) -> Mapping[str, Any]:
    """The batch output from `metadata.output` (SDK) or `response` (older clients)."""
    for holder in (op.get("metadata"), op):
        if isinstance(holder, Mapping):
            out = holder.get("output") if holder is not op else holder.get("response")
            if isinstance(out, Mapping):
                return out
    return {}


def inlined_responses(out: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    items: Any = out.get("inlinedResponses")
    if isinstance(items, Mapping):
        items = items.get("inlinedResponses")
    if not isinstance(items, list):
        return None
    return [i for i in items if isinstance(i, Mapping)]
