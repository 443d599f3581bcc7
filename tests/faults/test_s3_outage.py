"""s3_outage: the object store is unreachable for 30 s mid-run. moto keeps running behind a TCP proxy the test
takes down (listener closed, open connections reset) and brings back: closest to a network outage, and the
bucket survives. Images paid for during the outage are spooled to local disk (storage.spool), the items
succeed, and the background loop uploads the spool when the store answers again: nothing lost, nothing paid
twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.sandbox.server import start_sandbox
from tests.faults.harness import Bucket, base_config, cluster, figures, manifest, record
from tests.faults.private import PrivateRedis, TcpProxy
from tests.fixtures.s3 import MotoServer

ITEMS = 300
#: how long the store is unreachable
OUTAGE_S = 30.0


def spool_entries(cwd: Path) -> int:
    """Objects waiting in the workers' spools (one directory per process under .pipeline/spool)."""
    return sum(1 for _ in (cwd / ".pipeline" / "spool").glob("*/*.json"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_s3_outage(tmp_path: Path, fault_pg_url: str, private_redis: PrivateRedis,
                   moto_server_factory: Callable[[], MotoServer], capsys: pytest.CaptureFixture[str]) -> None:
    moto = moto_server_factory()
    proxy = TcpProxy(moto.port)
    proxy.up()
    direct = Bucket(moto.endpoint_url, f"outage-{uuid.uuid4().hex[:12]}").create()  # the test reads past the proxy
    sandbox = start_sandbox({"seed": 4, "protocols": {"gemini": {"latency": {"min_s": 0.8, "max_s": 1.4}}}})
    cfg = base_config(fault_pg_url, private_redis.url, direct.storage_url, sandbox.url)
    try:
        with cluster(tmp_path, cfg, {"AWS_ENDPOINT_URL_S3": proxy.url}) as c:
            job_id = c.submit(manifest("s3-outage", ITEMS))
            for _ in range(3):
                c.start_worker(concurrency=4)
            c.wait_progress(job_id, 30, timeout_s=90)
            proxy.down()
            down_at = time.monotonic()
            done_before = sum(n for s, n in c.counts(job_id).items() if s in ("succeeded", "cached"))
            while time.monotonic() - down_at < OUTAGE_S:
                time.sleep(0.5)
            done_during = sum(n for s, n in c.counts(job_id).items() if s in ("succeeded", "cached")) - done_before
            spooled = spool_entries(tmp_path)
            proxy.up()
            # work went on during the outage: paid images waited in the local spool, their items succeeded
            assert done_during > 0 and spooled > 0, (done_during, spooled, c.logs()[-3000:])
            counts = c.wait_final(job_id, 150, bucket=direct)  # includes: every output object is in the bucket
            assert counts["succeeded"] == ITEMS, dict(counts)
            deadline = time.monotonic() + 30
            while spool_entries(tmp_path):
                assert time.monotonic() < deadline, "the spool was not emptied after the store came back"
                time.sleep(0.5)
            fig = figures("s3_outage", c, job_id, direct, sandbox.ledger()["billed_images"])
            record(fig, capsys, f"{done_during} items succeeded during the {OUTAGE_S:.0f} s outage, {spooled} objects "
                                "spooled, spool empty after")
            assert fig.lost == 0
            assert fig.duplicated == 0
            assert fig.extra_billed == 0
    finally:
        sandbox.stop()
        proxy.down()
        direct.close()
