"""The project's one error tree.

    PipelineError
    ├── InputError                 bad manifest, config or CLI input: exit code 2, nothing written
    ├── ProviderError              anything a provider call went wrong with (carries provider, status, class)
    │   ├── RetryableError         try again later (retry_after_s from the provider when it said so)
    │   │   ├── RateLimited        429 with the provider's own delay
    │   │   ├── ProviderUnavailable 500/502/503/504, connection refused/reset
    │   │   ├── ProviderTimeout    read timeout after the request was sent: maybe billed
    │   │   └── BadImage           garbage, truncated base64, wrong size: never stored
    │   ├── TerminalError          never retried; the item fails with a reason a person can read
    │   │   ├── ContentBlocked     prompt blocked, image blocked, text-only refusal, moderation
    │   │   └── InvalidRequest     400 / invalid argument
    │   └── ProviderLevelError     the provider, not just the item, must stop
    │       ├── AuthError          401/403/API key invalid: provider paused
    │       ├── QuotaExhausted     insufficient_quota / no credit: provider paused
    │       └── DailyQuotaExceeded PerDay quota: provider parked until reset
    └── StorageError               storage backend failures (translated in storage/ only)

Third-party exceptions are translated into this tree at exactly one boundary: httpx errors inside each
provider adapter, botocore errors inside storage/s3.py.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class InputError(PipelineError):
    """Invalid input (manifest, config, CLI). `where` names the place: file:line, item id, key."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ProviderError(PipelineError):
    """A provider call that did not give an image. `error_class` is a stable short name for reports."""

    error_class = "provider_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        http_status: int | None = None,
        error_class: str | None = None,
        maybe_billed: bool = False,
        retry_after_s: float | None = None,
        cost_usd: Decimal | None = None,
        remote_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.http_status = http_status
        if error_class is not None:
            self.error_class = error_class
        self.maybe_billed = maybe_billed
        self.retry_after_s = retry_after_s
        #: what the failed call cost when the provider said so (a 200 whose image was bad is billed)
        self.cost_usd = cost_usd
        #: the provider's handle for the work (Replicate prediction id), to resume instead of paying again
        self.remote_id = remote_id


class RetryableError(ProviderError):
    error_class = "retryable"
    retryable = True


class RateLimited(RetryableError):
    error_class = "rate_limited"


class ProviderUnavailable(RetryableError):
    error_class = "unavailable"


class ProviderTimeout(RetryableError):
    error_class = "timeout"


class BadImage(RetryableError):
    error_class = "bad_image"


class TerminalError(ProviderError):
    error_class = "terminal"


class ContentBlocked(TerminalError):
    error_class = "content_blocked"


class InvalidRequest(TerminalError):
    error_class = "invalid_request"


class ProviderLevelError(ProviderError):
    """The provider itself must stop taking work (for every job), not just this item."""

    error_class = "provider_level"
    retryable = True  # the item is retried (elsewhere or later); the provider is paused/parked

    #: until when the provider is parked; None = paused until an operator resumes it
    until: datetime | None = None


class AuthError(ProviderLevelError):
    error_class = "auth"


class QuotaExhausted(ProviderLevelError):
    error_class = "insufficient_quota"


class DailyQuotaExceeded(ProviderLevelError):
    error_class = "daily_quota"

    def __init__(self, message: str, *, until: datetime | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.until = until


class StorageError(PipelineError):
    """A storage backend failed; `retryable` tells whether trying later can help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

