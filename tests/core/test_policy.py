"""The retry policy as data: every decision from an error (or a gate refusal), on a fixed clock and a seeded rng."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from pipeline.config import WorkerSettings
from pipeline.core.policy import Action, RetryPolicy
from pipeline.errors import (
    AuthError,
    ContentBlocked,
    DailyQuotaExceeded,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.states import AttemptOutcome

NOW = datetime(2026, 11, 27, 23, 59, 30)


def policy(**kw: object) -> RetryPolicy:
    return RetryPolicy(max_attempts=3, backoff_base_s=2.0, backoff_cap_s=60.0, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def no_lookup() -> int | None:
    raise AssertionError("the next provider is looked up only when the decision needs it")


def test_terminal_errors_fail_at_once() -> None:
    d = policy().after_error(ContentBlocked("prompt blocked"), provider="p", attempt=1, now=NOW,
                             next_provider=no_lookup)
    assert (d.action, d.outcome, d.reason) == (Action.FAIL, AttemptOutcome.TERMINAL, "p: prompt blocked")


def test_daily_quota_parks_the_provider_until_its_reset_and_refunds_the_attempt() -> None:
    until = NOW + timedelta(hours=8)
    d = policy().after_error(DailyQuotaExceeded("PerDay", until=until), provider="p", attempt=2, now=NOW,
                             next_provider=no_lookup)
    assert (d.action, d.until, d.at, d.refund_attempt) == (Action.PARK, until, NOW, True)
    assert d.outcome == AttemptOutcome.PROVIDER_LEVEL
    d = policy(park_default_s=600.0).after_error(DailyQuotaExceeded("PerDay"), provider="p", attempt=1, now=NOW,
                                                 next_provider=no_lookup)
    assert d.until == NOW + timedelta(seconds=600)


@pytest.mark.parametrize("err", [AuthError("bad key"), QuotaExhausted("no credit")])
def test_auth_and_credit_errors_pause_the_provider(err: Exception) -> None:
    d = policy().after_error(err, provider="p", attempt=3, now=NOW, next_provider=no_lookup)  # type: ignore[arg-type]
    assert (d.action, d.at, d.refund_attempt) == (Action.PAUSE, NOW, True)


def test_retryable_errors_back_off_with_full_jitter_within_the_cap() -> None:
    p = policy()
    delays = []
    for attempt in (1, 2):
        d = p.after_error(ProviderUnavailable("503"), provider="p", attempt=attempt, now=NOW,
                          next_provider=lambda: None)
        assert d.action == Action.RETRY and d.outcome == AttemptOutcome.RETRYABLE and d.at is not None
        delays.append((d.at - NOW).total_seconds())
        assert d.reason == "p: unavailable: 503" and not d.refund_attempt
    assert 0 <= delays[0] <= 2.0 and 0 <= delays[1] <= 4.0
    # the same seed gives the same decisions: the policy's randomness is its own
    again = policy().after_error(ProviderUnavailable("503"), provider="p", attempt=1, now=NOW,
                                 next_provider=lambda: None)
    assert again.at == NOW + timedelta(seconds=delays[0])


def test_retry_after_is_honoured_with_a_bounded_slack() -> None:
    d = policy().after_error(RateLimited("429", retry_after_s=30.0), provider="p", attempt=1, now=NOW,
                             next_provider=lambda: None)
    assert d.at is not None and 30.0 <= (d.at - NOW).total_seconds() <= 31.0


def test_another_provider_takes_a_failed_item_soon() -> None:
    d = policy().after_error(RateLimited("429", retry_after_s=30.0), provider="p", attempt=1, now=NOW,
                             next_provider=lambda: 2)
    assert (d.action, d.provider_index) == (Action.FAIL_OVER, 2)
    assert d.at is not None and (d.at - NOW).total_seconds() <= 0.5


def test_the_last_attempt_gives_up_with_the_last_error() -> None:
    d = policy().after_error(ProviderUnavailable("503"), provider="p", attempt=3, now=NOW, next_provider=no_lookup)
    assert d.action == Action.FAIL
    assert d.reason == "p: gave up after 3 attempts; last error: unavailable: 503"


def test_gate_refusals_wait_or_fail_over_when_the_wait_is_long() -> None:
    p = policy()
    short = p.not_admitted(0.0, now=NOW, next_provider=no_lookup)
    assert (short.action, short.at) == (Action.RETRY, NOW + timedelta(seconds=0.05))
    long_alone = p.not_admitted(10.0, now=NOW, next_provider=lambda: None)
    assert (long_alone.action, long_alone.at) == (Action.RETRY, NOW + timedelta(seconds=10))
    long_other = p.not_admitted(10.0, now=NOW, next_provider=lambda: 1)
    assert (long_other.action, long_other.provider_index) == (Action.FAIL_OVER, 1)
    assert long_other.at == NOW + timedelta(seconds=0.05)


def test_built_from_the_worker_settings() -> None:
    p = RetryPolicy.from_settings(WorkerSettings(max_attempts=4, backoff_base_s=1.5, backoff_cap_s=9.0))
    assert (p.max_attempts, p.backoff_base_s, p.backoff_cap_s) == (4, 1.5, 9.0)
