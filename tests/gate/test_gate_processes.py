"""The Redis gate across processes: 4 processes x 8 threads on one provider key at 20 requests/s (3%
headroom: 19.4/s). No one-second window holds more than the gate's rate, a token-bucket provider holding one
second's worth of the real limit would answer no 429, and the gate keeps the provider busy (> 0.9)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.gate.conftest import GATE_REDIS_URL

RATE_PER_S = 20
GATE_RATE_PER_S = RATE_PER_S * 0.97
RUN_S = 3.0
ROOT = Path(__file__).resolve().parents[2]


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    worst, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window_s:
            j += 1
        worst = max(worst, i - j + 1)
    return worst


def bucket_429s(times: list[float], rate_per_s: float, capacity: float) -> int:
    """429s a provider enforcing `rate_per_s` as a token bucket of `capacity` (full at the start) answers."""
    tokens, last, refused = capacity, times[0], 0
    for t in times:
        tokens = min(capacity, tokens + (t - last) * rate_per_s)
        last = t
        if tokens >= 1:
            tokens -= 1
        else:
            refused += 1
    return refused


def test_four_processes_share_one_rate(redis_prefix: str) -> None:
    start_at = time.time() + 1.5  # the processes start, import and then begin together
    stop_at = start_at + RUN_S
    cmd = [sys.executable, "-m", "tests.gate.hammer", GATE_REDIS_URL, redis_prefix, "prov", str(RATE_PER_S * 60), "8",
           repr(start_at), repr(stop_at)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    slots: list[float] = []
    sent: list[float] = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        got = json.loads(out.strip().splitlines()[-1])
        slots += got["slots"]
        sent += got["sent"]
    slots.sort()
    sent.sort()
    per_process = len(slots) / 4
    assert per_process > 5, "every process got calls in"
    # by the gate's own clock: never more than the rate in any one-second window (+1: a window that starts on
    # a slot also holds the slot one second later)
    worst = max_in_window(slots)
    assert worst <= GATE_RATE_PER_S + 1, worst
    # as the provider sees the calls (sent after each caller's own sleep): no 429 from a one-second bucket
    assert bucket_429s(sent, RATE_PER_S, RATE_PER_S) == 0
    span = slots[-1] - slots[0]
    utilization = (len(slots) - 1) / span / RATE_PER_S
    print(f"4 processes x 8 threads: {len(slots)} calls in {span:.2f} s, worst 1-s window {worst}, "
          f"utilization {utilization:.3f}")
    assert utilization > 0.9
