"""postgres_restart: the database restarts mid-run (`pg_ctl stop -m fast`, a few seconds down, start). Open
transactions are aborted and every pooled connection breaks; workers and their dispatchers reconnect (pre-ping),
work that failed on the way is returned by the sweeper, and the job completes. Calls answered while the database
was down are recorded once it is back (settle.record_paid), so no image is paid twice. The cluster is a
private one in a temp directory, so no other test's database goes down with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sandbox.server import start_sandbox
from tests.conftest import unavailable
from tests.faults.harness import Bucket, base_config, cluster, figures, manifest, record
from tests.faults.private import PrivatePostgres, PrivateRedis

ITEMS = 300
#: how long the database is down
DOWN_S = 4.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_postgres_restart(tmp_path: Path, private_redis: PrivateRedis, bucket: Bucket,
                          capsys: pytest.CaptureFixture[str]) -> None:
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
    except (RuntimeError, OSError) as e:
        pg.destroy()
        unavailable(f"a private Postgres ({e})")
    sandbox = start_sandbox({"seed": 3, "protocols": {"gemini": {"latency": {"min_s": 0.6, "max_s": 1.2}}}})
    cfg = base_config(pg.url, private_redis.url, bucket.storage_url, sandbox.url)
    try:
        with cluster(tmp_path / "work", cfg, {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url}) as c:
            job_id = c.submit(manifest("postgres-restart", ITEMS))
            for _ in range(3):
                c.start_worker(concurrency=4)
            c.wait_progress(job_id, 60, timeout_s=90)
            pg.restart(down_s=DOWN_S)
            counts = c.wait_final(job_id, 150, bucket=bucket)
            assert counts["succeeded"] == ITEMS, dict(counts)
            assert all(w.proc.poll() is None for w in c.workers), "a worker died with the database\n" + c.logs()
            fig = figures("postgres_restart", c, job_id, bucket, sandbox.ledger()["billed_images"])
            record(fig, capsys, f"database down {DOWN_S:.0f} s")
            assert fig.lost == 0
            assert fig.duplicated == 0
            assert fig.extra_billed == 0
    finally:
        sandbox.stop()
        pg.destroy()
