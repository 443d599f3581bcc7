"""Exactly once under concurrency, on Postgres: many sweepers racing to mark a job done claim its event once;
many blocked items claim the run's budget event once; many senders deliver each event once. Then the same
with three real `pipeline worker` processes (Redis broker) on a budget-capped job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from pipeline.config import NotifySettings, Settings
from pipeline.core.sweep import sweep
from pipeline.db.models import Notification
from pipeline.notify.deliver import deliver_due
from pipeline.notify.events import claim_budget, run_end_hook
from pipeline.sandbox.server import SandboxServer
from tests.notify.conftest import Receiver
from tests.reports.rows import add_items, add_job, migrated

THREADS = 8
ROUNDS = 5
PIPELINE = str(Path(sys.executable).parent / "pipeline")


def _race(n: int, fn: Callable[[], Any]) -> list[Any]:
    """Run fn in n threads released together; returns their results (raises the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def test_claims_and_deliveries_race_on_postgres(pg_url: str, receiver: Receiver) -> None:
    notify = NotifySettings(webhook_url=receiver.url)
    settings = Settings(database_url=pg_url, notify=notify)
    now = datetime(2026, 3, 10, 12, 0)
    client = httpx.Client(timeout=10)
    with migrated(pg_url) as sessions:
        for r in range(ROUNDS):
            job_id = add_job(sessions, f"race-{r}", now)
            add_items(sessions, job_id, 20, now, lambda i: {"state": "blocked" if i % 4 == 0 else "succeeded"})
            # eight sweepers see the job's last item final at once: one marks it done and claims its event
            done = _race(THREADS, lambda: sweep(sessions, now, queued_timeout_s=60, on_done=run_end_hook(notify)))
            assert sum(d.jobs_done for d in done) == 1

            # eight blocked items of the next run claim its budget event at once: one wins
            def claim(job_id: int = job_id) -> bool:
                with sessions.begin() as s:
                    return claim_budget(s, job_id, notify, now)

            assert sorted(_race(THREADS, claim)) == [False] * (THREADS - 1) + [True]
            # eight senders: each event goes out once
            sent = _race(THREADS, lambda: deliver_due(sessions, client, settings, now))
            assert sorted(d.event for batch in sent for d in batch) == ["budget", "failed"]
        with sessions() as s:
            rows = s.execute(select(Notification.job_id, Notification.event, Notification.run, Notification.state)
                             .order_by(Notification.id)).all()
    assert len(rows) == 2 * ROUNDS and {r.state for r in rows} == {"sent"}
    assert sorted(receiver.events()) == sorted((f"race-{r}", e) for r in range(ROUNDS) for e in ("failed", "budget"))
    client.close()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_three_workers_send_each_event_once(tmp_path: Path, pg_url: str, redis_url: str, sandbox: SandboxServer,
                                            receiver: Receiver) -> None:
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
        "database_url": pg_url, "broker_url": redis_url, "redis_url": redis_url,
        "storage_url": f"file://{tmp_path / 'out'}", "providers": {"sandbox": {"base_url": sandbox.url}},
        "worker": {"max_attempts": 2, "backoff_base_s": 0.05, "backoff_cap_s": 0.2, "lease_s": 10},
        "notify": {"webhook_url": receiver.url}}))
    items = [{"id": f"p{i:02d}", "title": f"product {i}"} for i in range(24)]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "job": "capped", "providers": ["sandbox"], "defaults": {"resolution": "1K"}, "budget": {"max_usd": "0.50"},
        "prompt": "Photo of {{ title }}", "items": items}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    sub = subprocess.run([PIPELINE, "submit", "job.yaml", "--json"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    workers = [subprocess.Popen([PIPELINE, "worker", "--concurrency", "4"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        deadline = time.monotonic() + 180
        while len(receiver.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # any duplicate would arrive now (three sweepers and senders keep running)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
    assert sorted(receiver.events()) == [("capped", "budget"), ("capped", "failed")]
    st = json.loads(subprocess.run([PIPELINE, "status", "capped", "--json"], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=60).stdout)
    assert st["counts"]["blocked"] > 0 and st["counts"]["blocked"] + st["counts"]["succeeded"] == 24
