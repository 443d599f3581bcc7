"""kill_worker: kill -9 one of three workers mid-run, twice. Leases (10 s, renewed while calls run) expire, the
sweeper in the surviving workers returns the items, they run again; nothing is lost or stored twice, and every
call that was in flight at a kill shows as maybe billed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.sandbox.server import start_sandbox
from tests.faults.harness import Bucket, base_config, cluster, figures, manifest, record
from tests.faults.private import PrivateRedis

ITEMS = 300
#: leases of this test; the killed worker's items come back after at most this plus a sweep interval
LEASE_S = 10
#: the promise: a killed worker's items run again within this
RERUN_WITHIN_S = 60
#: how long to wait for the victim to have a call in flight before the kill
VICTIM_BUSY_WITHIN_S = 15


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_worker(tmp_path: Path, fault_pg_url: str, private_redis: PrivateRedis, bucket: Bucket,
                     capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = start_sandbox({"seed": 1, "protocols": {"gemini": {"latency": {"min_s": 0.6, "max_s": 1.2}}}})
    cfg = base_config(fault_pg_url, private_redis.url, bucket.storage_url, sandbox.url, lease_s=LEASE_S)
    try:
        with cluster(tmp_path, cfg, {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url}) as c:
            job_id = c.submit(manifest("kill-worker", ITEMS))
            for _ in range(3):
                c.start_worker(concurrency=4)
            in_flight: dict[int, set[int]] = {}  # attempt ids open in the killed worker -> their items
            killed_at: list[float] = []
            rerun_s: list[float] = []
            for round_ in range(2):
                c.wait_progress(job_id, 40 + 90 * round_, timeout_s=90)
                victim = c.workers[round_]  # one of the three running workers
                # kill it while it has a call in flight (on a loaded machine it may be between calls)
                wait_until = time.monotonic() + VICTIM_BUSY_WITHIN_S
                while True:
                    rows = c.q("SELECT id, item_id FROM attempts WHERE outcome = 'started' AND lease_owner LIKE :o",
                               o=f"%-{victim.pid}-%")
                    if rows or time.monotonic() > wait_until:
                        break
                    time.sleep(0.05)
                c.kill(victim)
                killed_at.append(time.monotonic())
                # the calls open at the kill (a finish between the query and the kill is settled, not abandoned)
                in_flight[round_] = {a for a, _ in rows}
                assert rows, f"round {round_}: the victim had no call in flight"
                c.start_worker(concurrency=4)  # its supervisor restarts it
                # its items run again (a newer attempt, by another worker) within RERUN_WITHIN_S
                waiting = set(rows)
                while waiting:
                    waiting = {(a, i) for a, i in waiting if not c.q(
                        "SELECT 1 FROM attempts WHERE item_id = :i AND (id > :a OR (id = :a AND outcome = "
                        "'succeeded')) LIMIT 1", i=i, a=a)}
                    assert time.monotonic() < killed_at[-1] + RERUN_WITHIN_S, \
                        f"items of the killed worker not run again within {RERUN_WITHIN_S} s: {sorted(waiting)}"
                    time.sleep(0.5)
                rerun_s.append(time.monotonic() - killed_at[-1])
            counts = c.wait_final(job_id, 150, bucket=bucket)
            assert counts["succeeded"] == ITEMS, dict(counts)

            opened = set().union(*in_flight.values())
            outcomes = dict(c.q("SELECT id, outcome FROM attempts WHERE id = ANY(:ids)", ids=list(opened)))
            maybe = dict(c.q("SELECT id, maybe_billed FROM attempts WHERE id = ANY(:ids)", ids=list(opened)))
            # every call open at a kill that did not settle before it shows as maybe billed
            unsettled = {a for a in opened if outcomes[a] != "succeeded"}
            assert all(outcomes[a] == "abandoned" and maybe[a] for a in unsettled), outcomes
            time.sleep(1.5)  # calls cut by the kills finish on the provider's side (max latency) and are billed
            fig = figures("kill_worker", c, job_id, bucket, sandbox.ledger()["billed_images"])
            record(fig, capsys, f"in flight at the kills: {len(opened)} ({len(unsettled)} unsettled, all abandoned "
                                f"and maybe billed); rerun after {', '.join(f'{t:.1f}' for t in rerun_s)} s")
            assert fig.lost == 0
            assert fig.duplicated == 0
            assert 0 <= fig.extra_billed <= len(unsettled)
    finally:
        sandbox.stop()
