"""kill_worker: kill -9 one of three workers mid-run, twice. Leases (10 s, renewed while calls run) expire, the
sweeper in the surviving workers returns the items, they run again; nothing is lost or stored twice, and every
call that was in flight at a kill shows as maybe billed.

On both brokers: Redis (the killed worker's unacked messages wait out the visibility timeout; the sweeper does
not wait for them) and RabbitMQ (they come back at once when its connection drops, and the claim refuses the
items still under the dead worker's lease). The gate stays in Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.sandbox.server import start_sandbox
from tests.faults.harness import FINAL, Bucket, base_config, cluster, figures, manifest, record
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
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_kill_worker(broker: str, request: pytest.FixtureRequest, tmp_path: Path, fault_pg_url: str,
                     private_redis: PrivateRedis, bucket: Bucket, capsys: pytest.CaptureFixture[str]) -> None:
    broker_url = private_redis.url if broker == "redis" else str(request.getfixturevalue("rabbitmq_url"))
    sandbox = start_sandbox({"seed": 1, "protocols": {"gemini": {"latency": {"min_s": 0.6, "max_s": 1.2}}}})
    cfg = base_config(fault_pg_url, broker_url, bucket.storage_url, sandbox.url, gate_url=private_redis.url,
                      lease_s=LEASE_S)
    try:
        with cluster(tmp_path, cfg, {"AWS_ENDPOINT_URL_S3": bucket.endpoint_url}) as c:
            job_id = c.submit(manifest("kill-worker", ITEMS))
            for _ in range(3):
                c.start_worker(concurrency=4)
            in_flight: dict[int, set[int]] = {}  # attempt ids open in the killed worker -> their items
            killed_at: dict[int, float] = {}
            waiting: dict[int, set[tuple[int, int]]] = {}  # per kill: (attempt, item) not yet run again
            rerun_s: dict[int, float] = {}

            def track_reruns() -> None:
                """A killed worker's items run again (a newer attempt, by another worker) within RERUN_WITHIN_S."""
                for r in list(waiting):
                    waiting[r] = {(a, i) for a, i in waiting[r] if not c.q(
                        "SELECT 1 FROM attempts WHERE item_id = :i AND (id > :a OR (id = :a AND outcome = "
                        "'succeeded')) LIMIT 1", i=i, a=a)}
                    if not waiting[r]:
                        del waiting[r]
                        rerun_s[r] = time.monotonic() - killed_at[r]
                        continue
                    assert time.monotonic() < killed_at[r] + RERUN_WITHIN_S, \
                        f"items of the killed worker not run again within {RERUN_WITHIN_S} s: {sorted(waiting[r])}"

            for round_ in range(2):
                # the second kill does not wait for the first one's items to run again: they go back behind the
                # backlog, and by then the job could be all but finished, leaving the victim nothing in flight
                deadline = time.monotonic() + 90
                while sum(n for s, n in c.counts(job_id).items() if s in FINAL) < 40 + 90 * round_:
                    track_reruns()
                    assert time.monotonic() < deadline, f"round {round_}: no progress\n{c.logs()[-4000:]}"
                    time.sleep(0.2)
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
                killed_at[round_] = time.monotonic()
                # the calls open at the kill (a finish between the query and the kill is settled, not abandoned)
                in_flight[round_] = {a for a, _ in rows}
                assert rows, f"round {round_}: the victim had no call in flight {dict(c.counts(job_id))}"
                waiting[round_] = {(a, i) for a, i in rows}
                c.start_worker(concurrency=4)  # its supervisor restarts it
            while waiting:
                track_reruns()
                time.sleep(0.5)
            counts = c.wait_final(job_id, 150, bucket=bucket)
            assert counts["succeeded"] == ITEMS, dict(counts)

            opened = set().union(*in_flight.values())
            outcomes = dict(c.q("SELECT id, outcome FROM attempts WHERE id = ANY(:ids)", ids=list(opened)))
            maybe = dict(c.q("SELECT id, maybe_billed FROM attempts WHERE id = ANY(:ids)", ids=list(opened)))
            # every call open at a kill that did not settle before it shows as maybe billed
            unsettled = {a for a in opened if outcomes[a] != "succeeded"}
            assert all(outcomes[a] == "abandoned" and maybe[a] for a in unsettled), outcomes
            time.sleep(1.5)  # calls cut by the kills finish on the provider's side (max latency) and are billed
            fault = "kill_worker" if broker == "redis" else f"kill_worker_{broker}"
            fig = figures(fault, c, job_id, bucket, sandbox.ledger()["billed_images"])
            reruns = ", ".join(f"{rerun_s[r]:.1f}" for r in sorted(rerun_s))
            record(fig, capsys, f"in flight at the kills: {len(opened)} ({len(unsettled)} unsettled, all abandoned "
                                f"and maybe billed); rerun after {reruns} s")
            assert fig.lost == 0
            assert fig.duplicated == 0
            assert 0 <= fig.extra_billed <= len(unsettled)
    finally:
        sandbox.stop()
