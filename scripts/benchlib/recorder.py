"""Record every generateContent request the sandbox serves (arrival, finish, status) and turn a run's records
into the benchmark's figures, the same way for every run."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: requests whose path contains this are recorded (image generation calls; admin routes are not)
GENERATE_MARK = ":generateContent"


@dataclass(frozen=True)
class Record:
    #: time.monotonic() when the request reached the sandbox ("sent") and when its answer was handed back
    sent_s: float
    done_s: float
    status: int


class RequestRecorder:
    """ASGI middleware around the sandbox app. Thread safe to read while the server runs."""

    def __init__(self, app: ASGIApp, mark: str = GENERATE_MARK) -> None:
        self.app = app
        self.mark = mark
        self._lock = threading.Lock()
        self._records: list[Record] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or self.mark not in str(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        sent = time.monotonic()
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self._add(Record(sent, time.monotonic(), status))
            await send(message)

        await self.app(scope, receive, recording_send)

    def _add(self, rec: Record) -> None:
        with self._lock:
            self._records.append(rec)

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def figures(records: list[Record], *, real_rpm: float, images: int, wall_s: float) -> dict[str, Any]:
    """The per-run figures of the DESIGN.md contract from the sandbox's own records.

    utilization = successful requests per minute over [first request sent, last request sent] / real_rpm;
    p50_s / p95_s = latency of successful requests (sandbox arrival to answer)."""
    ok = [r for r in records if r.status == 200]
    sent = [r.sent_s for r in records]
    span_s = (max(sent) - min(sent)) if len(sent) > 1 else 0.0
    ok_per_min = len(ok) / span_s * 60 if span_s > 0 else 0.0
    latencies = sorted(r.done_s - r.sent_s for r in ok)
    by_status: dict[str, int] = {}
    for r in records:
        by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
    n429 = by_status.get("429", 0)
    return {
        "images": images,
        "requests": len(records),
        "ok_requests": len(ok),
        "wall_s": round(wall_s, 2),
        "images_per_min": round(images / wall_s * 60, 1) if wall_s > 0 else 0.0,
        "utilization": round(ok_per_min / real_rpm, 3) if real_rpm > 0 else None,
        "http_429": n429,
        "http_429_pct": round(100 * n429 / len(records), 2) if records else 0.0,
        "p50_s": _round(percentile(latencies, 0.50)),
        "p95_s": _round(percentile(latencies, 0.95)),
        "span_s": round(span_s, 2),
        "ok_per_min": round(ok_per_min, 1),
        "by_status": by_status,
        "last_429_at_s": round(max(r.sent_s for r in records if r.status == 429) - min(sent), 2) if n429 else None,
        "timeline_10s": timeline(records, 10.0),
    }


def timeline(records: list[Record], step_s: float) -> list[list[int]]:
    """[successes, 429s] per `step_s` window from the first request sent (by sent time)."""
    if not records:
        return []
    t0 = min(r.sent_s for r in records)
    out: list[list[int]] = []
    for r in records:
        i = int((r.sent_s - t0) // step_s)
        while len(out) <= i:
            out.append([0, 0])
        if r.status == 200:
            out[i][0] += 1
        elif r.status == 429:
            out[i][1] += 1
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
