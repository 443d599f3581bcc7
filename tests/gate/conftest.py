"""Fixtures of the gate suite: every contract test runs against the Redis gate and the in-process one.

Redis: the real server on localhost, database 8 (database 9 is flushed by other suites' fixtures, 10-15
must stay empty for the benchmark), a unique key prefix per test, and that prefix deleted afterwards, so
tests running at the same time in other suites neither see nor disturb these keys.
The in-process gate runs on a fake clock; `env.advance(s)` moves it, and sleeps for real on Redis (whose
clock the tests cannot move), so keep advances short.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.core.ports import Gate
from pipeline.gate.base import AdaptivePolicy
from pipeline.gate.local import LocalGate
from pipeline.gate.redis import RedisGate
from tests.conftest import unavailable
from tests.fixtures.services import REDIS_BASE

#: the gate suite's Redis database (see the module docstring)
GATE_REDIS_URL = f"{REDIS_BASE.rstrip('/')}/8"


class FakeClock:
    """Epoch seconds that move only when told to."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    kind: str
    make: Callable[[AdaptivePolicy | None], Any]
    advance: Callable[[float], None]
    now: Callable[[], float]
    #: move the stored day back by one, as if the provider's day boundary had passed
    next_day: Callable[[Any, str], None]


@pytest.fixture
def redis_client() -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(GATE_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable(f"Redis ({type(e).__name__})")
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    return f"test-gate-{uuid.uuid4().hex[:10]}"


def drop_prefix(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["redis", "local"])
def env(request: pytest.FixtureRequest, prefix: str) -> Iterator[Env]:
    if request.param == "local":
        clock = FakeClock()

        def advance(s: float) -> None:
            clock.now += s

        def local_next_day(gate: Any, key: str) -> None:
            clock.now += 86_400

        def make_local(policy: AdaptivePolicy | None = None) -> LocalGate:
            return LocalGate(clock=clock, policy=policy)

        yield Env("local", make_local, advance, clock, local_next_day)
        return
    client = request.getfixturevalue("redis_client")

    def server_now() -> float:
        sec, usec = client.time()
        return float(sec) + float(usec) / 1e6

    def redis_next_day(gate: Any, key: str) -> None:
        client.hincrby(gate._keys(key)[0], "day", -1)  # white box: the one field the test cannot wait for

    def make_redis(policy: AdaptivePolicy | None = None) -> RedisGate:
        return RedisGate(client, prefix=prefix, policy=policy)

    yield Env("redis", make_redis, time.sleep, server_now, redis_next_day)
    drop_prefix(client, prefix)


@pytest.fixture
def gate(env: Env) -> Gate:
    g: Gate = env.make(None)
    return g


@pytest.fixture
def redis_prefix(redis_client: Any, prefix: str) -> Iterator[str]:
    """A unique key prefix on the gate suite's Redis database, deleted after the test."""
    yield prefix
    drop_prefix(redis_client, prefix)
