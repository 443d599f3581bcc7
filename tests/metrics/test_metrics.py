"""Prometheus metrics: a real `pipeline worker --metrics-port` processes a small job against the sandbox over
HTTP and Postgres; /metrics, scraped with httpx, shows exactly what the job did."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from pipeline.clock import utcnow
from pipeline.core.dispatch import dispatch_once
from pipeline.core.submit import submit
from pipeline.db.models import Attempt, Item, Job
from pipeline.metrics.collector import PipelineCollector
from pipeline.runtime import open_runtime
from pipeline.sandbox.server import start_sandbox
from pipeline.states import FINAL_STATES
from tests.core.helpers import Spec, job, specs
from tests.schedules.firing import settings_at, write_settings

PIPELINE = str(Path(sys.executable).parent / "pipeline")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
def test_worker_serves_metrics_of_what_it_did(tmp_path: Path, pg_url: str) -> None:
    sandbox = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.05, "max_s": 0.15}}}})
    port = free_port()
    # one worker with its in-process broker: the job is submitted to Postgres here, dispatched and run there
    config = write_settings(tmp_path, pg_url, sandbox.url, broker_url="memory://",
                            worker={"backoff_base_s": 0.1, "backoff_cap_s": 0.5, "max_attempts": 3})
    rt = open_runtime(settings_at(config))
    worker = subprocess.Popen([PIPELINE, "worker", "--concurrency", "4", "--metrics-port", str(port)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        items = [*specs(3, prompt="a teal vase {i}"),
                 Spec(key="limited", prompt="a coral lamp [sandbox:429x1]", output_key="test/limited.png"),
                 Spec(key="blocked", prompt="a chair [sandbox:block-prompt]", output_key="test/blocked.png")]
        res = submit(rt.sessions, job("metrics-job", max_usd=Decimal("5")), items, utcnow())
        deadline = time.monotonic() + 60
        while True:
            with rt.sessions() as s:
                states = list(s.scalars(select(Item.state).where(Item.job_id == res.job_id)))
            if all(st in FINAL_STATES for st in states):
                break
            assert worker.poll() is None, worker.communicate()[1][-3000:]
            assert time.monotonic() < deadline, states
            time.sleep(0.3)
        with rt.sessions() as s:
            timed = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.latency_ms.is_not(None)))
            spent = s.scalar(select(Job.spent_usd).where(Job.id == res.job_id))
        time.sleep(MAX_AGE_S_PLUS)
        resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        m = parse(resp.text)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        rt.close()
        billed = sandbox.ledger()
        sandbox.stop()

    assert value(m, "pipeline_metrics_database_up") == 1
    assert value(m, "pipeline_images", provider="sandbox", state="succeeded") == 4
    assert value(m, "pipeline_images", provider="sandbox", state="failed") == 1
    assert Decimal(str(value(m, "pipeline_cost_usd_total", provider="sandbox"))) == Decimal(billed["billed_usd"])
    assert spent == Decimal(billed["billed_usd"])
    assert value(m, "pipeline_provider_rate_limited_total", provider="sandbox") == 1 == billed["by_status"]["429"]
    assert value(m, "pipeline_provider_requests_total", provider="sandbox", outcome="succeeded") == 4
    assert value(m, "pipeline_provider_requests_total", provider="sandbox", outcome="retryable") == 1
    assert value(m, "pipeline_provider_requests_total", provider="sandbox", outcome="terminal") == 1
    assert value(m, "pipeline_provider_request_duration_seconds_count", provider="sandbox") == timed == 6
    assert value(m, "pipeline_provider_request_duration_seconds_bucket", provider="sandbox", le="+Inf") == 6
    assert value(m, "pipeline_provider_request_duration_seconds_bucket", provider="sandbox", le="0.05") <= 6
    assert 0.05 * 4 < value(m, "pipeline_provider_request_duration_seconds_sum", provider="sandbox") < 30
    assert value(m, "pipeline_queue_depth") == 0 and value(m, "pipeline_due_items") == 0
    assert value(m, "pipeline_running_items") == 0
    assert Decimal(str(value(m, "pipeline_job_budget_used_usd", job="metrics-job"))) == spent
    assert value(m, "pipeline_job_budget_max_usd", job="metrics-job") == 5
    assert value(m, "pipeline_job_budget_reserved_usd", job="metrics-job") == 0
    assert any(name == "process_resident_memory_bytes" for name, _ in m)


#: the collector reuses a snapshot for 2 s; wait that out so the scrape sees the final state
MAX_AGE_S_PLUS = 2.1


def test_queue_depth_and_due_items_follow_the_dispatcher(tmp_path: Path, pg_url: str) -> None:
    rt = open_runtime(settings_at(write_settings(tmp_path, pg_url)), check_storage=False)
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PipelineCollector(rt.sessions, max_age_s=0))

        def scrape() -> Samples:
            return parse(generate_latest(registry).decode())

        now = utcnow()
        submit(rt.sessions, job("queued-job"), specs(5), now)
        m = scrape()
        assert (value(m, "pipeline_due_items"), value(m, "pipeline_queue_depth")) == (5, 0)
        assert value(m, "pipeline_job_budget_used_usd", job="queued-job") == 0
        published: list[int] = []
        assert dispatch_once(rt.sessions, published.extend, now, max_queued=3) == 3
        m = scrape()
        assert (value(m, "pipeline_due_items"), value(m, "pipeline_queue_depth")) == (2, 3)
    finally:
        rt.close()


def test_a_scrape_still_answers_when_the_database_is_gone(tmp_path: Path) -> None:
    from pipeline.db.session import make_engine, make_sessionmaker

    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(make_sessionmaker(engine)))
    m = parse(generate_latest(registry).decode())
    assert value(m, "pipeline_metrics_database_up") == 0 and len(m) == 1
    engine.dispose()
