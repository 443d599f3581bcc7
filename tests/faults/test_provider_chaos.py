"""provider_chaos: the sandbox answers 20% of calls with a mixed fault (500, 503, malformed JSON, truncated
images, hangs past the provider timeout, safety blocks). Every item ends succeeded or failed with the right
reason; a blocked prompt is never retried (the terminal error family); retryable faults are retried."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.sandbox.server import start_sandbox
from tests.faults.harness import Bucket, base_config, cluster, figures, manifest, record
from tests.faults.private import PrivateRedis

ITEMS = 300
#: 20% in all; exclusive per request
FAULTS = {"http_500": 0.04, "http_503": 0.04, "malformed": 0.03, "truncated": 0.03, "hang": 0.02,
          "block_prompt": 0.02, "block_image": 0.02}
#: items whose prompt the sandbox always blocks (a trigger): each must have exactly one attempt
ALWAYS_BLOCKED = 10
#: provider timeout of this test; a hang lasts HANG_S > TIMEOUT_S
TIMEOUT_S = 2.0
HANG_S = 4.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_provider_chaos(tmp_path: Path, fault_pg_url: str, private_redis: PrivateRedis, bucket: Bucket,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert abs(sum(FAULTS.values()) - 0.20) < 1e-9
    sandbox = start_sandbox({"seed": 5, "protocols": {"gemini": {
        "latency": {"min_s": 0.4, "max_s": 0.9}, "faults": FAULTS, "hang_s": HANG_S}}})
    cfg = base_config(fault_pg_url, private_redis.url, bucket.storage_url, sandbox.url, max_attempts=8,
                      backoff_base_s=0.1, backoff_cap_s=0.5)
    cfg["providers"]["sandbox"]["timeout_s"] = TIMEOUT_S
    m = manifest("provider-chaos", ITEMS)
    for i in range(ALWAYS_BLOCKED):  # the trigger wins over the random draw: blocked on every request
        m["items"][i * 7]["prompt"] = f"forbidden thing {i} [sandbox:block-prompt]"
    blocked_keys = {m["items"][i * 7]["id"] for i in range(ALWAYS_BLOCKED)}
    try:
        with cluster(tmp_path, cfg, {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url}) as c:
            job_id = c.submit(m)
            for _ in range(3):
                c.start_worker(concurrency=4)
            counts = c.wait_final(job_id, 180, bucket=bucket)
            assert set(counts) <= {"succeeded", "failed"}, dict(counts)

            items = {key: (state, reason, n) for key, state, reason, n in c.q(
                "SELECT key, state, failure_reason, attempts FROM items WHERE job_id = :j", j=job_id)}
            attempts: dict[str, list[tuple[str, str | None]]] = {}
            for key, outcome, error_class in c.q(
                    "SELECT i.key, a.outcome, a.error_class FROM attempts a JOIN items i ON i.id = a.item_id "
                    "WHERE a.job_id = :j ORDER BY a.id", j=job_id):
                attempts.setdefault(key, []).append((outcome, error_class))
            seen = {cls for tries in attempts.values() for _, cls in tries if cls}
            # every fault kind of the mix was met (hangs as timeouts, truncated images as bad_image)
            assert {"unavailable", "malformed", "bad_image", "timeout", "content_blocked"} <= seen, seen

            for key, (state, reason, _) in items.items():
                tries = attempts[key]
                blocked_at = [i for i, (_, cls) in enumerate(tries) if cls == "content_blocked"]
                if blocked_at:  # a block is terminal: the last attempt, and the item failed saying so
                    assert blocked_at == [len(tries) - 1], (key, tries)
                    assert state == "failed" and "blocked" in (reason or ""), (key, state, reason)
                elif state == "failed":  # only a run of retryable faults as long as max_attempts fails otherwise
                    assert "gave up after" in (reason or "") and len(tries) == 8, (key, reason, tries)
                else:
                    assert tries[-1][0] == "succeeded" and all(o == "retryable" for o, _ in tries[:-1]), (key, tries)
            for key in blocked_keys:  # no blocked prompt was retried
                assert items[key][0] == "failed" and len(attempts[key]) == 1 and items[key][2] == 1, \
                    (key, items[key], attempts[key])

            time.sleep(HANG_S)  # hung calls finish (and are billed) on the provider's side
            fig = figures("provider_chaos", c, job_id, bucket, sandbox.ledger()["billed_images"])
            # billed but unusable answers (truncated, malformed, hung past the timeout) are the only extra cost
            billed_faults = sum(1 for tries in attempts.values() for _, cls in tries
                                if cls in ("malformed", "bad_image", "timeout"))
            failed = sum(1 for st, _, _ in items.values() if st == "failed")
            record(fig, capsys, f"{failed} failed (safety blocks), {billed_faults} billed-but-unusable answers retried")
            assert fig.lost == 0
            assert fig.duplicated == 0
            assert 0 <= fig.extra_billed <= billed_faults
    finally:
        sandbox.stop()
