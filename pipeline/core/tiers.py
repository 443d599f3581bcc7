"""Which of a job's providers `mode: auto` uses, by the time left before its deadline: Google's Flex tier
(`service_tier: flex`: half price, minutes of latency, best effort) only while the deadline is at least
`flex.min_deadline_h` away, and then first; the batch tier is decided at submit (services.use_batch).
Jobs in `sync` mode use the providers they list, in their order, flex ones included."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from pipeline.config import ProviderConfig
from pipeline.errors import PipelineError


def flex_order(
    candidates: Sequence[tuple[int, str]],
    config_of: Callable[[str], ProviderConfig],
    *,
    mode: str,
    deadline_at: datetime | None,
    now: datetime,
    min_deadline_h: float,
) -> tuple[list[tuple[int, str]], list[str]]:
    """(candidates in the order to try, reasons for those left out)."""
    if mode != "auto":
        return list(candidates), []

    def is_flex(name: str) -> bool:
        try:
            return config_of(name).service_tier == "flex"
        except PipelineError:  # an unconfigured name: the caller reports it
            return False

    flex = [c for c in candidates if is_flex(c[1])]
    if not flex:
        return list(candidates), []
    rest = [c for c in candidates if c not in flex]
    if deadline_at is not None and deadline_at - now >= timedelta(hours=min_deadline_h):
        return flex + rest, []
    why = "no deadline" if deadline_at is None else f"deadline in less than {min_deadline_h:g} h"
    return rest, [f"{name}: flex tier skipped ({why})" for _, name in flex]
