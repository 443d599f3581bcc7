"""A worker process for test_gate_processes: `threads` threads hammer one gate key from `start_at` to
`stop_at` (epoch seconds), each admitted call "sent" after its wait and answered after a short latency.
Prints one JSON line: the slot times handed out and the times the calls were really sent.

    python -m tests.gate.hammer REDIS_URL PREFIX KEY RPM THREADS START_AT STOP_AT
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from decimal import Decimal

import redis

from pipeline.gate.base import GateLimits
from pipeline.gate.redis import RedisGate


def main(argv: list[str]) -> None:
    url, prefix, key, rpm, threads, start_at, stop_at = argv
    client = redis.Redis.from_url(url)
    gate = RedisGate(client, prefix=prefix)
    lim = GateLimits(rpm=int(rpm), rpd=1_000_000, concurrency=1000, headroom=Decimal("0.03"))
    slots: list[float] = []
    sent: list[float] = []
    lock = threading.Lock()

    def loop(seed: int) -> None:
        rng = random.Random(seed)
        while time.time() < float(stop_at):
            a = gate.acquire(key, lim)
            if not a.admitted:
                time.sleep(a.retry_after_s + rng.uniform(0, 0.02))  # back to the "dispatcher"
                continue
            time.sleep(a.wait_s)
            t = time.time()
            with lock:
                slots.append(a.slot_at_s)
                sent.append(t)
            time.sleep(rng.uniform(0.05, 0.2))  # the provider's latency
            gate.feedback(key, ok=True, rate_limited=False, retry_after_s=None, token=a.token)
            gate.release(key, a.token or "")

    time.sleep(max(float(start_at) - time.time(), 0.0))
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(int(threads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    client.close()
    print(json.dumps({"slots": slots, "sent": sent}))


if __name__ == "__main__":
    main(sys.argv[1:])
