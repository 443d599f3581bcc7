"""duplicate_delivery: every broker message is delivered twice. Beside the workers' own dispatchers the test
publishes every dispatched item id a second time with a bare Celery producer on the same broker (the message
a worker would get from a redelivery or a double publish). The claim decides who runs an item and the cache
reservation is the idempotency key: no item runs twice, nothing is written twice, nothing is paid twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from celery import Celery

from pipeline.sandbox.server import start_sandbox
from pipeline.worker import QUEUE, TASK_NAME
from tests.faults.harness import Bucket, Cluster, base_config, cluster, figures, manifest, record
from tests.faults.private import PrivateRedis

ITEMS = 300


def _publish_twice(c: Cluster, job_id: int, broker_url: str, stop: threading.Event, sent: set[int]) -> None:
    """Publish each item id once more as soon as the dispatcher has published it (state left pending)."""
    app = Celery("duplicates", broker=broker_url, set_as_current=False)
    try:
        with app.producer_or_acquire() as producer:
            while not stop.is_set():
                ids = [i for (i,) in c.q("SELECT id FROM items WHERE job_id = :j AND state <> 'pending'",
                                         j=job_id) if i not in sent]
                for item_id in ids:
                    app.send_task(TASK_NAME, args=(item_id,), queue=QUEUE, producer=producer)
                    sent.add(item_id)
                stop.wait(0.05)
    finally:
        app.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_duplicate_delivery(tmp_path: Path, fault_pg_url: str, private_redis: PrivateRedis, bucket: Bucket,
                            capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = start_sandbox({"seed": 7, "protocols": {"gemini": {"latency": {"min_s": 0.5, "max_s": 1.0}}}})
    cfg = base_config(fault_pg_url, private_redis.url, bucket.storage_url, sandbox.url)
    stop = threading.Event()
    sent: set[int] = set()
    try:
        with cluster(tmp_path, cfg, {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url}) as c:
            job_id = c.submit(manifest("duplicate-delivery", ITEMS))
            dup = threading.Thread(target=_publish_twice, args=(c, job_id, private_redis.url, stop, sent),
                                   daemon=True)
            dup.start()
            for _ in range(3):
                c.start_worker(concurrency=4)
            counts = c.wait_final(job_id, 150, bucket=bucket)
            stop.set()
            dup.join(timeout=10)
            assert counts["succeeded"] == ITEMS, dict(counts)
            assert len(sent) == ITEMS, f"only {len(sent)} items were published twice"
            calls = c.q("SELECT count(*) FROM attempts WHERE job_id = :j", j=job_id)[0][0]
            assert calls == ITEMS, f"{calls} provider calls for {ITEMS} items"
            fig = figures("duplicate_delivery", c, job_id, bucket, sandbox.ledger()["billed_images"])
            record(fig, capsys)
            assert fig.lost == 0
            assert fig.duplicated == 0
            assert fig.extra_billed == 0
    finally:
        stop.set()
        sandbox.stop()
