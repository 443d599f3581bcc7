"""Gemini API errors (google.rpc.Status as JSON) as the pipeline's error tree: PROVIDERS.md §2. Used for HTTP
answers of generateContent and the batch API, and for batch items (whose codes are google.rpc codes).

    429 insufficient_user_quota   QuotaExhausted (laozhang.ai: the account's balance is spent)
    429 RESOURCE_EXHAUSTED        RateLimited(retry_after_s from RetryInfo.retryDelay, else "retry in Ns")
      quotaId *PerDay*/value "0"  DailyQuotaExceeded(until = next reset at config.day_reset_hour_utc)
    500/502/503/504, other 5xx    ProviderUnavailable
    400 API_KEY_INVALID, 401, 403 AuthError;  400 FAILED_PRECONDITION (billing/region): AuthError
    402                           QuotaExhausted (resellers out of credit)
    other 4xx                     InvalidRequest(error.message)

A batch item's error carries a google.rpc code instead (item_error): 3 terminal, 8 rate-limited, 4/13/14
retryable, 7/16 pause the provider.
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


#: laozhang.ai's out-of-balance refusal: "user [12345] quota [50000000] preConsumedQuota [150000000] is not enough"
#: with the code insufficient_user_quota (https://docs.laozhang.ai/ru/faq/balance-insufficient)
_BALANCE = re.compile(r"quota \[\d+\] preConsumedQuota \[\d+\] is not enough")


def _out_of_balance(message: str, err: Mapping[str, Any]) -> bool:
    """A reseller's 429 that means the account's balance is spent (laozhang.ai: insufficient_user_quota), not a
    rate: the provider pauses instead of waiting."""
    return ("insufficient_user_quota" in (str(err.get("code") or ""), str(err.get("type") or ""))
            or "insufficient_user_quota" in message or _BALANCE.search(message) is not None)


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
    if status == 429 and _out_of_balance(message, err):
        return QuotaExhausted(label, **kw)
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


#: google.rpc.Code of a batch item's error (a google.rpc.Status: python-genai types.JobError {code, message,
#: details}; https://ai.google.dev/api/batch-mode InlinedResponse.error) -> the HTTP status whose rules apply.
#: 3 INVALID_ARGUMENT terminal; 8 RESOURCE_EXHAUSTED rate-limited; 4 DEADLINE_EXCEEDED, 13 INTERNAL,
#: 14 UNAVAILABLE retryable; 7 PERMISSION_DENIED, 16 UNAUTHENTICATED pause the provider. Codes from
#: googleapis/googleapis google/rpc/code.proto; the others follow their canonical HTTP mapping there, except
#: CANCELLED and ABORTED, read as retryable (503).
RPC_CODES: dict[int, tuple[str, int]] = {
    1: ("CANCELLED", 503), 2: ("UNKNOWN", 500), 3: ("INVALID_ARGUMENT", 400), 4: ("DEADLINE_EXCEEDED", 504),
    5: ("NOT_FOUND", 404), 6: ("ALREADY_EXISTS", 409), 7: ("PERMISSION_DENIED", 403),
    8: ("RESOURCE_EXHAUSTED", 429), 9: ("FAILED_PRECONDITION", 400), 10: ("ABORTED", 503),
    11: ("OUT_OF_RANGE", 400), 12: ("UNIMPLEMENTED", 501), 13: ("INTERNAL", 500), 14: ("UNAVAILABLE", 503),
    15: ("DATA_LOSS", 500), 16: ("UNAUTHENTICATED", 401),
}  # fmt: skip
_RPC_BY_NAME = {name: http for name, http in RPC_CODES.values()}


def item_error(err: Mapping[str, Any], *, provider: str, now: Any, day_reset_hour_utc: int) -> ProviderError:
    """A batch item's `error` as the right error. Its `code` is a google.rpc code (0-16), not an HTTP status;
    a `status` string (as in HTTP error bodies) names it too and wins when present; an HTTP-looking code
    (400-599, from proxies) is read as HTTP."""
    code = err.get("code")
    name = str(err.get("status") or "").upper()
    if name in _RPC_BY_NAME:
        status = _RPC_BY_NAME[name]
    elif isinstance(code, int) and not isinstance(code, bool) and code in RPC_CODES:
        name, status = RPC_CODES[code]
    elif isinstance(code, int) and 400 <= code <= 599:
        status = code
    else:
        status = 500
    body = {"error": {**err, "status": name} if name else dict(err)}
    return classify_error(status, body, provider=provider, now=now, day_reset_hour_utc=day_reset_hour_utc)
