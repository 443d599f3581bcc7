"""RabbitMQ as the broker, on this machine's server, each test in a fresh vhost: `pipeline run` end to end on
amqp://, the `pipeline` queue a durable quorum queue consumed with a per-consumer prefetch and manual acks, no
native-delayed-delivery queues, and a publish the broker refuses (publisher confirms) raising so the dispatcher
puts its items back. The cluster form (submit, several `pipeline worker` processes) is in test_cluster_e2e.py,
a killed worker in tests/faults/test_kill_worker.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline.sandbox.server import SandboxServer, start_sandbox
from tests.fixtures.services import rabbitmq_queues, rabbitmqctl

PIPELINE = str(Path(sys.executable).parent / "pipeline")


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.05, "max_s": 0.2}}}})
    try:
        yield server
    finally:
        server.stop()


def _config(tmp: Path, broker_url: str, sandbox_url: str) -> Path:
    cfg = tmp / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp / 'db.sqlite'}", "broker_url": broker_url,
        "storage_url": f"file://{tmp / 'out'}", "providers": {"sandbox": {"base_url": sandbox_url}},
        "worker": {"max_attempts": 2, "backoff_base_s": 0.05, "backoff_cap_s": 0.1, "concurrency": 4},
    }))
    return cfg


def _manifest(tmp: Path, n: int) -> Path:
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump({
        "job": "rabbit", "providers": ["sandbox"], "prompt": "Photo of {{ title }}",
        "defaults": {"resolution": "1K"}, "items": [{"id": f"p{i}", "title": f"thing {i}"} for i in range(n)]}))
    return path


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in counts.items() if n}


def _vhost(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.mark.integration
def test_run_on_rabbitmq_through_a_quorum_queue(tmp_path: Path, rabbitmq_url: str, sandbox: SandboxServer) -> None:
    cfg = _config(tmp_path, rabbitmq_url, sandbox.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    res = subprocess.run([PIPELINE, "run", str(_manifest(tmp_path, 8)), "--json", "--config", str(cfg)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _nonzero(json.loads(res.stdout.strip().splitlines()[-1])["counts"]) == {"succeeded": 8}
    assert sandbox.ledger()["billed_images"] == 8
    assert "direct exchange" not in res.stderr  # native delayed delivery's warning: the step is left out

    queues = rabbitmq_queues(rabbitmq_url)
    assert queues["pipeline"]["type"] == "quorum" and queues["pipeline"]["durable"] == "true", queues
    assert not [q for q in queues if q.startswith("celery_delayed")], sorted(queues)


@pytest.mark.integration
def test_worker_consumes_with_manual_acks_and_a_per_consumer_prefetch(rabbitmq_url: str) -> None:
    from pipeline.config import Settings
    from pipeline.worker import QUEUE, embedded_worker, make_celery

    def no_context() -> object:
        raise AssertionError("no task is expected")

    app = make_celery(Settings(broker_url=rabbitmq_url), no_context)  # type: ignore[arg-type]
    try:
        with embedded_worker(app, 3) as worker:
            steps = {type(s).__name__ for s in worker.consumer.blueprint.steps.values()}
            assert "Tasks" in steps and "DelayedDelivery" not in steps, steps
            consumers: list[list[str]] = []
            deadline = time.monotonic() + 20
            while not consumers and time.monotonic() < deadline:
                out = rabbitmqctl("list_consumers", "-p", _vhost(rabbitmq_url), "--no-table-headers",
                                  "queue_name", "ack_required", "prefetch_count")
                consumers = [line.split("\t") for line in out.splitlines() if line.startswith(QUEUE + "\t")]
                time.sleep(0.2)
            # acks after the task (acks_late), at most one message per thread, counted per consumer: a quorum queue
            # refuses a consumer on a channel with global QoS
            assert consumers == [[QUEUE, "true", "3"]], consumers
    finally:
        app.close()


@pytest.mark.integration
def test_a_publish_the_broker_refuses_raises_and_the_items_go_back(tmp_path: Path, rabbitmq_url: str,
                                                                   sandbox: SandboxServer) -> None:
    from pipeline.clock import utcnow
    from pipeline.config import load_settings
    from pipeline.core.dispatch import dispatch_once
    from pipeline.runtime import open_runtime
    from pipeline.worker import make_celery, publisher

    cfg = _config(tmp_path, rabbitmq_url, sandbox.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    res = subprocess.run([PIPELINE, "submit", str(_manifest(tmp_path, 5)), "--json", "--config", str(cfg)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    # the queue takes one message and refuses the rest (basic.nack): without publisher confirms the refused
    # messages would vanish while their items stayed `queued` until the sweeper's queued_timeout_s
    rabbitmqctl("set_policy", "-p", _vhost(rabbitmq_url), "--apply-to", "queues", "full", "^pipeline$",
                '{"max-length": 1, "overflow": "reject-publish"}')
    rt = open_runtime(load_settings(cfg, env={}))
    app = make_celery(rt.settings, lambda: rt.ctx)
    try:
        with pytest.raises(Exception) as refused:
            dispatch_once(rt.sessions, publisher(app), utcnow(), max_queued=10)
        assert "Nack" in repr(refused.value) + repr(refused.value.__cause__), repr(refused.value)
        st = subprocess.run([PIPELINE, "status", "rabbit", "--json", "--config", str(cfg)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert _nonzero(json.loads(st.stdout.strip().splitlines()[-1])["counts"]) == {"pending": 5}, st.stdout
    finally:
        app.close()
        rt.close()
    assert sandbox.ledger()["requests"] == 0
