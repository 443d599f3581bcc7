"""redis_flush: the broker's Redis dies mid-run and comes back empty (this machine's Redis keeps nothing on
disk). Every message in the queue and every unacked delivery is gone; workers reconnect and the job completes
from Postgres state alone: queued items whose message was lost go back to pending after
`worker.queued_timeout_s` and are published again, running items finish under their leases."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sandbox.server import start_sandbox
from tests.faults.harness import Bucket, base_config, cluster, figures, manifest, record
from tests.faults.private import PrivateRedis

ITEMS = 300
#: how long the broker is down
DOWN_S = 3.0
#: a queued item whose message was lost is published again after this (the default is 120 s)
QUEUED_TIMEOUT_S = 10


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_redis_flush(tmp_path: Path, fault_pg_url: str, private_redis: PrivateRedis, bucket: Bucket,
                     capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = start_sandbox({"seed": 2, "protocols": {"gemini": {"latency": {"min_s": 0.6, "max_s": 1.2}}}})
    cfg = base_config(fault_pg_url, private_redis.url, bucket.storage_url, sandbox.url,
                      queued_timeout_s=QUEUED_TIMEOUT_S)
    try:
        with cluster(tmp_path, cfg, {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url}) as c:
            job_id = c.submit(manifest("redis-flush", ITEMS))
            for _ in range(3):
                c.start_worker(concurrency=4)
            c.wait_progress(job_id, 60, timeout_s=90)
            queued = c.counts(job_id)["queued"]
            private_redis.restart(down_s=DOWN_S)  # every message and unacked delivery is gone
            assert queued > 0, "nothing was queued in the broker when it died"
            counts = c.wait_final(job_id, 150, bucket=bucket)
            assert counts["succeeded"] == ITEMS, dict(counts)
            assert all(w.proc.poll() is None for w in c.workers), "a worker died with the broker\n" + c.logs()
            fig = figures("redis_flush", c, job_id, bucket, sandbox.ledger()["billed_images"])
            record(fig, capsys, f"{queued} items were queued in the broker when it died")
            assert fig.lost == 0
            assert fig.duplicated == 0
            assert fig.extra_billed == 0
    finally:
        sandbox.stop()
