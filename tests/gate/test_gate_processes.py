"""The Redis gate across processes: 4 processes x 8 threads on one provider key never exceed its rate in
any one-second window (by Redis' clock), and keep it busy (utilization above 0.9)."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from decimal import Decimal

from pipeline.gate.base import GateLimits

RATE_PER_S = 20
RUN_S = 3.0


def _worker(url: str, prefix: str, stamps_key: str, stop_at: float) -> None:
    import redis

    from pipeline.gate.redis import RedisGate

    client = redis.Redis.from_url(url)
    gate = RedisGate(client, prefix=prefix)
    lim = GateLimits(rpm=RATE_PER_S * 60, rpd=1_000_000, concurrency=1000, headroom=Decimal("0"))

    def loop() -> None:
        while time.time() < stop_at:
            a = gate.acquire("prov", lim)
            if not a.admitted:
                time.sleep(min(a.retry_after_s, 0.2))
                continue
            time.sleep(a.wait_s)
            sec, usec = client.time()
            client.rpush(stamps_key, f"{sec + usec / 1e6:.6f}")
            gate.release("prov", a.token or "")

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()


def test_four_processes_share_one_rate(redis_url: str) -> None:
    import redis

    prefix = f"gate-mp-{uuid.uuid4().hex[:8]}"
    stamps_key = f"{prefix}:stamps"
    stop_at = time.time() + RUN_S + 2.0  # processes take a moment to start
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(redis_url, prefix, stamps_key, stop_at)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    client = redis.Redis.from_url(redis_url)
    stamps = sorted(float(x) for x in client.lrange(stamps_key, 0, -1))
    client.close()
    assert stamps, "no calls were admitted"
    # sliding one-second windows: never more than the rate (+1 for the window edge)
    worst = max(sum(1 for t in stamps[i:] if t < s + 1.0) for i, s in enumerate(stamps))
    assert worst <= RATE_PER_S + 1, worst
    span = stamps[-1] - stamps[0]
    utilization = (len(stamps) - 1) / span / RATE_PER_S
    print(f"gate across 4 processes: {len(stamps)} calls, worst 1-s window {worst}, utilization {utilization:.3f}")
    assert utilization > 0.9
