"""Faults the sandbox can inject, chosen by a trigger in the prompt text or at random by profile rates.

Prompt triggers (deterministic, for tests; they stay in the prompt and so in the drawn text):

| trigger                  | Gemini                         | OpenAI images             | Replicate          |
|--------------------------|--------------------------------|---------------------------|--------------------|
| `[sandbox:500]`          | 500 INTERNAL                   | 500 server_error          | 500 problem        |
| `[sandbox:503]`          | 503 UNAVAILABLE (overloaded)   | 503 server_error          | 503 problem        |
| `[sandbox:429]`          | 429, PerMinute quota           | 429 rate_limit_exceeded   | 429 throttled      |
| `[sandbox:429-daily]`    | 429, quotaId ...PerDay...      | 429 rate_limit (per day)  | 429, long wait     |
| `[sandbox:no-credit]`    | 429, quotaValue "0"            | 429 insufficient_quota    | 402 credit         |
| `[sandbox:auth]`         | 400 API_KEY_INVALID            | 401 invalid_api_key       | 401                |
| `[sandbox:block-prompt]` | 200 promptFeedback.blockReason | 400 moderation, input     | failed (E005)      |
| `[sandbox:block-image]`  | 200 finishReason IMAGE_SAFETY  | 400 moderation, output    | failed (E005)      |
| `[sandbox:refuse]`       | 200 STOP, only a text part     | 200 with "data": []       | failed, no image   |
| `[sandbox:malformed]`    | 200, JSON body cut off         | 200, JSON body cut off    | output not image  |
| `[sandbox:truncated]`    | base64 image data cut short    | b64_json cut short        | output file cut    |
| `[sandbox:wrong-size]`   | image at half the size         | same                      | same               |
| `[sandbox:hang]`         | sleeps hang_s, then answers    | same                      | processing hang_s  |
| `[sandbox:shed]`         | 429 without quota details      | 503                       | 503 problem        |

Kie.ai's task API (sandbox/kie.py) answers envelopes: 500 -> code 500, 503 -> 455 (maintenance), 429 -> 429,
429-daily -> 433, no-credit -> 402, auth -> 401; block-prompt and block-image -> a failed task (failCode 422),
refuse -> failCode 501; malformed, truncated, wrong-size and hang as Replicate.

Modifiers: `[sandbox:503x2]` (any fault with `xN`) applies the fault to the first N identical requests to
the same provider name and then answers normally, to test retries. `[sandbox:sleep=1.5]` adds 1.5 s latency.
`[sandbox:interim]` (Gemini) adds an interim thought image before the final one.
In Gemini batch jobs the triggers act per item: error faults become per-item `error` entries (google.rpc codes:
auth -> 16 UNAUTHENTICATED, hang -> 4 DEADLINE_EXCEEDED, the others their HTTP status's code), `malformed` is
ignored. Faults after generation (malformed, truncated, wrong-size, hang) are billed like
real answers; all others are not.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from enum import StrEnum

from pipeline.sandbox.profile import FaultRates

log = logging.getLogger(__name__)


class Fault(StrEnum):
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    RATE_LIMIT = "rate_limit"
    DAILY_QUOTA = "daily_quota"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    AUTH = "auth"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    WRONG_SIZE = "wrong_size"
    BLOCK_PROMPT = "block_prompt"
    BLOCK_IMAGE = "block_image"
    REFUSE = "refuse"
    HANG = "hang"
    #: capacity shed (Gemini Flex is best effort): a 429 naming no quota on Gemini, a 503 elsewhere
    SHED = "shed"

    @property
    def is_error(self) -> bool:
        """Answered with an HTTP error before any image is made."""
        return self in _ERRORS

    @property
    def billed(self) -> bool:
        """An image was made (and paid for) even though the client may not get a usable one."""
        return self in _BILLED


_ERRORS = frozenset(
    {
        Fault.HTTP_500,
        Fault.HTTP_503,
        Fault.RATE_LIMIT,
        Fault.DAILY_QUOTA,
        Fault.INSUFFICIENT_QUOTA,
        Fault.AUTH,
        Fault.SHED,
    }
)
_BILLED = frozenset({Fault.MALFORMED, Fault.TRUNCATED, Fault.WRONG_SIZE, Fault.HANG})

TRIGGER_NAMES: dict[str, Fault] = {
    "500": Fault.HTTP_500,
    "503": Fault.HTTP_503,
    "429": Fault.RATE_LIMIT,
    "429-daily": Fault.DAILY_QUOTA,
    "no-credit": Fault.INSUFFICIENT_QUOTA,
    "auth": Fault.AUTH,
    "malformed": Fault.MALFORMED,
    "truncated": Fault.TRUNCATED,
    "wrong-size": Fault.WRONG_SIZE,
    "block-prompt": Fault.BLOCK_PROMPT,
    "block-image": Fault.BLOCK_IMAGE,
    "refuse": Fault.REFUSE,
    "hang": Fault.HANG,
    "shed": Fault.SHED,
}
#: retry delay announced by a 429 that a trigger or a fault rate forced (not the limiter)
SPURIOUS_RETRY_S = 1.5
_TRIGGER = re.compile(r"\[sandbox:([a-z0-9-]+?)(?:x(\d+))?(?:=([0-9.]+))?\]")


@dataclass(frozen=True)
class Triggers:
    """What the prompt asks of the sandbox."""

    fault: Fault | None = None
    #: apply `fault` only to the first `times` identical requests (None: always)
    times: int | None = None
    extra_latency_s: float = 0.0
    interim_image: bool = False


def parse_triggers(prompt: str) -> Triggers:
    fault: Fault | None = None
    times: int | None = None
    extra = 0.0
    interim = False
    for name, count, value in _TRIGGER.findall(prompt):
        if name == "sleep" and value:
            extra += float(value)
        elif name == "interim":
            interim = True
        elif name in TRIGGER_NAMES and fault is None:
            fault = TRIGGER_NAMES[name]
            times = int(count) if count else None
        else:
            log.warning("sandbox: ignoring unknown or repeated trigger [sandbox:%s]", name)
    return Triggers(fault=fault, times=times, extra_latency_s=extra, interim_image=interim)


def draw_fault(rng: random.Random, rates: FaultRates) -> Fault | None:
    """One draw over the exclusive fault rates; None (no fault) with the remaining probability."""
    u = rng.random()
    acc = 0.0
    for name, rate in rates.rates().items():
        acc += rate
        if u < acc:
            return Fault(name)
    return None
