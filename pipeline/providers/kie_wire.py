"""Kie.ai's Market task API on the wire (docs.kie.ai, read 2026-11-29; the evidence is tests/providers/captures/kie).

    POST /api/v1/jobs/createTask   {"model", "callBackUrl"?, "input": {"prompt", "image_input": [URL],
                                    "aspect_ratio", "resolution", "output_format"}}
                                   -> {"code": 200, "msg": "success", "data": {"taskId": "..."}}
    GET  /api/v1/jobs/recordInfo?taskId=...
                                   -> {"code": 200, "msg" | "message": "success", "data": {"taskId", "state",
                                       "resultJson": "{\\"resultUrls\\": [...]}", "failCode": "422", "failMsg", ...}}

Every answer is an envelope `{code, msg}`. The docs list the codes (200, 401, 402, 404, 422, 429, 455, 500, 501,
505) as the envelope's and show error answers as HTTP statuses; public clients see them inside HTTP 200 answers
too. So the code is read from the body whatever the status, and the status stands in when there is no body.

    401, 403                 AuthError                provider paused
    402                      QuotaExhausted           provider paused, items fail over
    433                      DailyQuotaExceeded       the key's daily cap (seen by a public client, not documented)
    429                      RateLimited              Retry-After when sent, else Kie's 10 s window
    400, 404, 422, other 4xx InvalidRequest           terminal
    455, 500, 501, 505, 5xx  ProviderUnavailable      retried

A task in state `fail` carries `failCode` (a string) and `failMsg`: transient codes (429, 455, 5xx) are retried as
"task_failed"; 401/402/433 act on the provider as above; any other code, or none, fails the item with failMsg
(ContentBlocked when it says the content was refused).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.errors import (
    AuthError,
    ContentBlocked,
    DailyQuotaExceeded,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.http import retry_after_s, short_text

CREATE_PATH = "/api/v1/jobs/createTask"
RECORD_PATH = "/api/v1/jobs/recordInfo"
BASE64_UPLOAD_PATH = "/api/file-base64-upload"
STREAM_UPLOAD_PATH = "/api/file-stream-upload"
#: the Market model id of Nano Banana Pro
MODEL = "nano-banana-pro"
PENDING_STATES = ("waiting", "queuing", "generating")
TERMINAL_STATES = ("success", "fail")
#: documented enums of the createTask input
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "auto")
RESOLUTIONS = ("1K", "2K", "4K")
OUTPUT_FORMATS = ("png", "jpg")
#: most image_input URLs one task takes (schema maxItems)
MAX_IMAGE_INPUTS = 8
#: Kie counts new tasks over windows of this many seconds (20 per 10 s): the wait after a 429 without a delay
RATE_WINDOW_S = 10.0
#: failCodes after which the same task may succeed if created again
TRANSIENT_CODES = frozenset({429, 455, 500, 501, 502, 503, 504, 505})
#: words of a failMsg that say the content was refused (terminal, shown as a block)
BLOCK_WORDS = ("prohibited", "safety", "sensitive", "nsfw", "violat", "policy", "flagged", "blocked")


@dataclass(frozen=True)
class Record:
    """A task as recordInfo (or a callback) describes it."""

    task_id: str
    state: str
    result_urls: tuple[str, ...] = ()
    fail_code: str = ""
    fail_msg: str = ""
    #: resultJson that could not be read (success without usable URLs)
    malformed: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


def task_body(prompt: str, aspect_ratio: str, resolution: str, output_format: str, image_urls: list[str],
              *, model: str = MODEL, callback_url: str | None = None) -> dict[str, Any]:
    """The createTask body. Formats other than jpg/jpeg ask for png (Kie makes only those two)."""
    fmt = "jpg" if output_format.lower() in ("jpg", "jpeg") else "png"
    body: dict[str, Any] = {"model": model}
    if callback_url:
        body["callBackUrl"] = callback_url
    body["input"] = {"prompt": prompt, "image_input": list(image_urls), "aspect_ratio": aspect_ratio,
                     "resolution": resolution, "output_format": fmt}
    return body


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def envelope_message(payload: Any, text: str = "") -> str:
    """The envelope's text: `msg`, or `message` (the recordInfo page's spelling), or the raw body."""
    body = payload if isinstance(payload, Mapping) else {}
    return short_text(body.get("msg") or body.get("message") or text or "no message")


def envelope_code(status: int, payload: Any) -> int:
    """The answer's code: the envelope's, else the HTTP status (200 only when both say success). An HTTP 200
    without a usable code is a malformed answer: 500."""
    body = payload if isinstance(payload, Mapping) else {}
    code = _code(body.get("code"))
    if status == 200 and code == 200:
        return 200
    if code is None or code == 200:
        return status if status != 200 else 500
    return code


def envelope_error(status: int, payload: Any, *, provider: str, headers: Mapping[str, str], now: datetime,
                   text: str = "") -> ProviderError | None:
    """None for a successful envelope (HTTP 200 and code 200); otherwise the error its code (or, without a
    readable code, the HTTP status) names."""
    body = payload if isinstance(payload, Mapping) else {}
    code = envelope_code(status, payload)
    if code == 200:
        return None
    label = f"code {code}" + (f" (HTTP {status})" if status != code else "") + f": {envelope_message(body, text)}"
    return classify(code, label, provider=provider, http_status=status, headers=headers, now=now)


def classify(code: int, label: str, *, provider: str, http_status: int | None, headers: Mapping[str, str],
             now: datetime) -> ProviderError:
    kw: dict[str, Any] = {"provider": provider, "http_status": http_status}
    if code in (401, 403):
        return AuthError(label, **kw)
    if code == 402:
        return QuotaExhausted(label, **kw)
    if code == 433:
        return DailyQuotaExceeded(label, **kw)
    if code == 429:
        delay = retry_after_s(headers, now)
        return RateLimited(label, retry_after_s=RATE_WINDOW_S if delay is None else delay, **kw)
    if 400 <= code < 500 and code not in TRANSIENT_CODES:  # 455 is maintenance: it passes
        return InvalidRequest(label, **kw)
    return ProviderUnavailable(label, retry_after_s=retry_after_s(headers, now), **kw)


def parse_record(payload: Any) -> Record | None:
    """The task in a successful recordInfo answer or a callback body; None when there is none to read."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, Mapping) or not isinstance(data.get("state"), str):
        return None
    task_id = str(data.get("taskId") or data.get("task_id") or "")
    state = str(data["state"])
    urls: tuple[str, ...] = ()
    malformed = ""
    if state == "success":
        raw = data.get("resultJson")
        try:
            result = json.loads(raw) if isinstance(raw, str) else raw  # a JSON *string*; an object is read too
        except json.JSONDecodeError:
            result, malformed = None, short_text(raw, 120)
        found = result.get("resultUrls") if isinstance(result, Mapping) else None
        if isinstance(found, list):
            urls = tuple(u for u in found if isinstance(u, str) and u)
        if not urls and not malformed:
            malformed = short_text(raw, 120) or "no resultJson"
    extra = {k: data[k] for k in ("costTime", "completeTime", "createTime") if k in data}
    return Record(task_id=task_id, state=state, result_urls=urls, fail_code=str(data.get("failCode") or ""),
                  fail_msg=str(data.get("failMsg") or ""), malformed=malformed, extra=extra)


def fail_error(record: Record, *, provider: str, now: datetime) -> ProviderError:
    """The error a task in state `fail` is: retryable only for a transient failCode."""
    code = _code(record.fail_code)
    message = short_text(record.fail_msg or "task failed")
    label = f"task failed ({record.fail_code or 'no code'}): {message}"
    if code in TRANSIENT_CODES:
        return ProviderUnavailable(label, provider=provider, http_status=200, error_class="task_failed")
    if code in (401, 402, 403, 433):
        return classify(code, label, provider=provider, http_status=200, headers={}, now=now)
    if any(w in message.lower() for w in BLOCK_WORDS):
        return ContentBlocked(f"blocked: {message}", provider=provider, http_status=200)
    return InvalidRequest(label, provider=provider, http_status=200)
