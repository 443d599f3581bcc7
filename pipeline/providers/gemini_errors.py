"""Gemini API errors (google.rpc.Status as JSON) as the pipeline's error tree: PROVIDERS.md §2. Used for HTTP
answers of generateContent and the batch API, and for batch items (whose codes are google.rpc codes).

    429 RESOURCE_EXHAUSTED        RateLimited(retry_after_s from RetryInfo.retryDelay, else "retry in Ns")
      quotaId *PerDay*/value "0"  DailyQuotaExceeded(until = next reset at config.day_reset_hour_utc)
    500/502/503/504, other 5xx    ProviderUnavailable
    400 API_KEY_INVALID, 401, 403 AuthError;  400 FAILED_PRECONDITION (billing/region): AuthError
    402                           QuotaExhausted (resellers out of credit)
    other 4xx                     InvalidRequest(error.message)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pipeline.errors import (
    AuthError,
    DailyQuotaExceeded,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.http import retry_after_s, short_text

_RETRY_IN = re.compile(r"retry in\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\b", re.IGNORECASE)
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s)?\s*$")


def next_reset(now: datetime, hour_utc: int) -> datetime:
    """The first `hour_utc`:00 (naive UTC) strictly after `now`."""
    reset = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    return reset if reset > now else reset + timedelta(days=1)


def parse_duration_s(value: Any) -> float | None:
    """A protobuf Duration string ("47s", "45.837906927s") in seconds, or None."""
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value)
    if not m:
        return None
    seconds = float(m.group(1))
    return seconds / 1000.0 if m.group(2) == "ms" else seconds


def details(err: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = err.get("details")
    return [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []


def _is_daily(err: Mapping[str, Any]) -> bool:
    for d in details(err):
        if "QuotaFailure" not in str(d.get("@type", "")):
            continue
        for v in d.get("violations") or []:
            if not isinstance(v, Mapping):
                continue
            if "PerDay" in str(v.get("quotaId", "")) or v.get("quotaValue") == "0":
                return True
    return False


def _retry_delay(err: Mapping[str, Any], headers: Mapping[str, str]) -> float | None:
    for d in details(err):
        if "RetryInfo" in str(d.get("@type", "")):
            delay = parse_duration_s(d.get("retryDelay"))
            if delay is not None:
                return delay
    m = _RETRY_IN.search(str(err.get("message", "")))
    if m:
        value = float(m.group(1))
        return value / 1000.0 if m.group(2).lower() == "ms" else value
    return retry_after_s(headers)


def _has_reason(err: Mapping[str, Any], reason: str) -> bool:
    return any(d.get("reason") == reason for d in details(err))


def classify_error(
    status: int,
    payload: Any,
    *,
    provider: str,
    day_reset_hour_utc: int,
    now: datetime,
    headers: Mapping[str, str] | None = None,
    text: str = "",
) -> ProviderError:
    """An HTTP error answer (or a batch item's `error`) as the right error. `payload` is the parsed body."""
    headers = headers or {}
    err: Mapping[str, Any] = {}
    if isinstance(payload, Mapping):
        inner = payload.get("error", payload)
        err = inner if isinstance(inner, Mapping) else {"message": str(inner)}
    code = str(err.get("status") or "")
    message = short_text(err.get("message") or text or "no message")
    label = f"HTTP {status}{' ' + code if code else ''}: {message}"
    kw: dict[str, Any] = {"provider": provider, "http_status": status}
    if status == 429:
        delay = _retry_delay(err, headers)
        if _is_daily(err):
            until = next_reset(now, day_reset_hour_utc)
            return DailyQuotaExceeded(
                f"daily quota exhausted until {until:%Y-%m-%d %H:%M} UTC: {message}",
                until=until,
                retry_after_s=(until - now).total_seconds(),
                **kw,
            )
        return RateLimited(label, retry_after_s=delay, **kw)
    if status >= 500:
        return ProviderUnavailable(label, retry_after_s=retry_after_s(headers), **kw)
    if status in (401, 403) or _has_reason(err, "API_KEY_INVALID") or "API key not valid" in message:
        return AuthError(label, **kw)
    if status == 402:
        return QuotaExhausted(label, **kw)
    if status == 400 and code == "FAILED_PRECONDITION":
        # "User location is not supported", billing not enabled: every call will fail the same way
        return AuthError(label, **kw)
    if status == 408:
        return ProviderUnavailable(label, **kw)
    return InvalidRequest(label, **kw)
