"""budget_race: 50 concurrent workers (5 processes x 10 threads) race for a budget of a few images. The
reservation is one conditional update (spent + reserved + estimate <= cap) per cap, so the job cap and the
global daily cap both hold to the cent, and the provider bills exactly the affordable number of images."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.sandbox.server import start_sandbox
from tests.faults.harness import Bucket, base_config, cluster, figures, manifest, record
from tests.faults.private import PrivateRedis

ITEMS = 200
PROCESSES, THREADS = 5, 10
#: one image costs exactly this (the provider's price and the sandbox's bill), so the estimate is exact
PRICE = Decimal("0.10")
JOB_CAP = Decimal("0.50")
DAILY_CAP = Decimal("1.00")
AFFORDABLE = int(JOB_CAP / PRICE)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_budget_race(tmp_path: Path, fault_pg_url: str, private_redis: PrivateRedis, bucket: Bucket,
                     capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = start_sandbox({"seed": 6, "protocols": {"gemini": {
        "latency": {"min_s": 0.5, "max_s": 1.0}, "price_per_image": {"1K": str(PRICE)}}}})
    cfg = base_config(fault_pg_url, private_redis.url, bucket.storage_url, sandbox.url, max_queued=120)
    cfg["providers"]["sandbox"].update({"cost_from_usage": False, "prices": {"1K": str(PRICE)}})
    cfg["budget"] = {"daily_usd": str(DAILY_CAP)}
    cfg["log_level"] = "INFO"  # the workers say when they consume ("ready")
    try:
        with cluster(tmp_path, cfg, {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url}) as c:
            for _ in range(PROCESSES):
                c.start_worker(concurrency=THREADS)
            deadline = time.monotonic() + 90
            while sum("ready." in w.log_text() for w in c.workers) < PROCESSES:  # every thread can race
                assert time.monotonic() < deadline, c.logs()[-3000:]
                time.sleep(0.2)
            job_id = c.submit(manifest("budget-race", ITEMS, budget={"max_usd": str(JOB_CAP)}))
            counts = c.wait_final(job_id, 120, bucket=bucket)
            assert counts == {"succeeded": AFFORDABLE, "blocked": ITEMS - AFFORDABLE}, dict(counts)
            (spent, reserved, cap), = c.q("SELECT spent_usd, reserved_usd, max_usd FROM jobs WHERE id = :j", j=job_id)
            assert spent <= cap and spent == PRICE * AFFORDABLE and reserved == 0, (spent, reserved, cap)
            (day_spent, day_reserved), = c.q("SELECT spent_usd, reserved_usd FROM budget_periods WHERE period "
                                             "LIKE 'day:%'")
            assert day_spent == PRICE * AFFORDABLE and day_reserved == 0, (day_spent, day_reserved)
            reasons = {r for (r,) in c.q("SELECT DISTINCT failure_reason FROM items WHERE state = 'blocked' "
                                         "AND job_id = :j", j=job_id)}
            assert all(r.startswith("budget: the job cap") for r in reasons), reasons
            ledger = sandbox.ledger()
            assert Decimal(ledger["billed_usd"]) == PRICE * AFFORDABLE
            fig = figures("budget_race", c, job_id, bucket, ledger["billed_images"])
            record(fig, capsys)
            assert fig.billed == AFFORDABLE
            assert fig.lost == 0 and fig.duplicated == 0 and fig.extra_billed == 0
    finally:
        sandbox.stop()
