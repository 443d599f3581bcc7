"""Sandbox profiles: limits, latency, faults and prices per protocol and per simulated provider.

A profile is YAML (or a dict) validated once into `SandboxProfile`; unknown keys are errors.

```yaml
seed: 7                      # seeds latency and fault draws (omit: random)
batch_delay_s: 2.0           # a Gemini batch job finishes this long after creation
protocols:                   # requests without a /p/{name}/ prefix count under the protocol name
  gemini:
    rpm: 60                  # token bucket, refilled at rpm/60 per second
    bucket_s: 1.0            # capacity in seconds of rate (default 60 = a whole minute's worth)
    rpd: 1000
    latency: {min_s: 0.2, max_s: 0.5}
    faults: {http_503: 0.05, block_image: 0.01}
    api_keys: [k1]           # when set, other keys get the protocol's real auth error
providers:                   # served under http://host:port/p/{name}/...
  kie:
    protocol: kie            # optional; requests of another protocol under this name get 404
    rpm: 120                 # with bucket_s 10: 20 new tasks per 10 seconds, as Kie.ai documents
    bucket_s: 10
    error_status: "200"      # Kie: errors inside HTTP 200 envelopes (default "code": the HTTP status)
    price_per_image: {"1K": "0.09", "2K": "0.09", "4K": "0.12"}
```
Protocols: "gemini", "gemini-batch", "openai", "replicate", "kie", "aimlapi" (AIML's JSON dialect on the OpenAI
images path; only under a provider name). A provider name without an entry gets the
defaults of the protocol it is called with.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import InputError
from pipeline.files import read_capped
from pipeline.manifest.yamlsource import parse_yaml

Protocol = Literal["gemini", "gemini-batch", "openai", "replicate", "kie", "aimlapi"]
PROTOCOLS: tuple[Protocol, ...] = ("gemini", "gemini-batch", "openai", "replicate", "kie", "aimlapi")
#: default capacity of the rate-limit bucket: one minute's worth of requests, like a per-minute quota
DEFAULT_BUCKET_S = 60.0
#: default duration of the "hang" fault; longer than any sane client timeout in tests is not needed
DEFAULT_HANG_S = 30.0
#: default time from batch creation to BATCH_STATE_SUCCEEDED
DEFAULT_BATCH_DELAY_S = 2.0
#: largest profile file read (a profile is a few hundred bytes)
MAX_PROFILE_BYTES = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latency(_Strict):
    """Simulated processing time of a successful generation, drawn uniformly from [min_s, max_s]."""

    min_s: float = Field(default=0.0, ge=0)
    max_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if self.max_s < self.min_s:
            raise ValueError("latency.max_s must be >= latency.min_s")
        return self


class FaultRates(_Strict):
    """Probability (0..1) of each fault per request; they are exclusive, so the sum must be <= 1."""

    http_500: float = Field(default=0.0, ge=0, le=1)
    http_503: float = Field(default=0.0, ge=0, le=1)
    #: a 429 even though the limit was not reached (shared quota used by someone else)
    rate_limit: float = Field(default=0.0, ge=0, le=1)
    #: a 429 naming a per-day quota
    daily_quota: float = Field(default=0.0, ge=0, le=1)
    #: out of credit (OpenAI insufficient_quota, Replicate 402, Gemini quotaValue "0")
    insufficient_quota: float = Field(default=0.0, ge=0, le=1)
    malformed: float = Field(default=0.0, ge=0, le=1)
    truncated: float = Field(default=0.0, ge=0, le=1)
    wrong_size: float = Field(default=0.0, ge=0, le=1)
    block_prompt: float = Field(default=0.0, ge=0, le=1)
    block_image: float = Field(default=0.0, ge=0, le=1)
    refuse: float = Field(default=0.0, ge=0, le=1)
    hang: float = Field(default=0.0, ge=0, le=1)
    #: a request shed for capacity (Gemini Flex is best effort)
    shed: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_at_most_one(self) -> FaultRates:
        if sum(self.rates().values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must sum to at most 1")
        return self

    def rates(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in type(self).model_fields}


class EndpointProfile(_Strict):
    """Behaviour of one protocol's default endpoint or of one named provider."""

    protocol: Protocol | None = None
    rpm: int | None = Field(default=None, gt=0)
    bucket_s: float = Field(default=DEFAULT_BUCKET_S, gt=0)
    rpd: int | None = Field(default=None, gt=0)
    latency: Latency = Latency()
    faults: FaultRates = FaultRates()
    hang_s: float = Field(default=DEFAULT_HANG_S, ge=0)
    #: accepted API keys; None accepts any key or none
    api_keys: tuple[str, ...] | None = None
    #: flat price per billed image by resolution; resolutions left out are priced from usage tokens
    price_per_image: dict[str, Decimal] | None = None
    #: Gemini: put a {"text": ..., "thought": true} part before the image, as the thinking model does
    thought_parts: bool = True
    #: Gemini / OpenAI default output MIME type (OpenAI's output_format and Replicate's input win)
    output_mime: Literal["image/png", "image/jpeg"] = "image/png"
    #: Gemini: where the image goes in the answer: Google's `inlineData` part, or (Gemini-format resellers) a text
    #: part holding a data URL, or a text part holding a markdown link to the image served by the sandbox
    image_in: Literal["inline", "text-data-url", "text-url"] = "inline"
    #: Gemini: whether the model takes `serviceTier: flex`; False answers it with a 400 naming the tier
    flex: bool = True
    #: OpenAI: answer with url instead of b64_json even when the request does not ask for it
    response_format: Literal["b64_json", "url"] = "b64_json"
    #: Kie: error envelopes {code, msg} go out with the HTTP status equal to their code, or with HTTP 200
    error_status: Literal["code", "200"] = "code"

    @field_validator("price_per_image", mode="before")
    @classmethod
    def _exact_prices(cls, v: Any) -> Any:
        if isinstance(v, dict):
            bad = sorted(set(v) - {"1K", "2K", "4K"})
            if bad:
                raise ValueError(f"price_per_image keys must be 1K, 2K, 4K (got {', '.join(bad)})")
            return {k: repr(p) if isinstance(p, float) else p for k, p in v.items()}
        return v


class SandboxProfile(_Strict):
    seed: int | None = None
    batch_delay_s: float = Field(default=DEFAULT_BATCH_DELAY_S, ge=0)
    protocols: dict[Protocol, EndpointProfile] = Field(default_factory=dict)
    providers: dict[str, EndpointProfile] = Field(default_factory=dict)

    @field_validator("providers")
    @classmethod
    def _names(cls, v: dict[str, EndpointProfile]) -> dict[str, EndpointProfile]:
        for name in v:
            if not name or "/" in name:
                raise ValueError(f"bad provider name {name!r}")
        return v

    def endpoint(self, name: str, protocol: Protocol) -> EndpointProfile:
        """The profile that applies to requests counted under `name` speaking `protocol`."""
        if name in self.providers:
            return self.providers[name]
        return self.protocols.get(protocol, EndpointProfile())


def load_profile(source: str | Path | dict[str, Any] | SandboxProfile | None) -> SandboxProfile:
    """Validate a profile from a YAML file path, a dict or nothing (defaults). Raises InputError."""
    if source is None:
        return SandboxProfile()
    if isinstance(source, SandboxProfile):
        return source
    where = "sandbox profile"
    data: Any = source
    if isinstance(source, str | Path):
        where = str(source)
        raw = read_capped(Path(source), MAX_PROFILE_BYTES, what="sandbox profile", where=where)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("sandbox profile is not UTF-8", where=where) from None
        data = parse_yaml(text, where).data or {}  # bounded: nesting, node and alias-expansion limits
    if not isinstance(data, dict):
        raise InputError("sandbox profile must be a mapping", where=where)
    try:
        return SandboxProfile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{loc}: {err['msg']}", where=where) from None
