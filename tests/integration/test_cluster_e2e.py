"""End to end on the cluster setup: Postgres, the broker (Redis, or RabbitMQ in a fresh vhost), the gate in Redis,
S3 over HTTP (moto), the sandbox over HTTP, `pipeline submit` then two real `pipeline worker` processes,
`status`, `report`, `rerun --failed`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import yaml

from pipeline.sandbox.server import start_sandbox
from tests.fixtures.services import rabbitmq_queues, rabbitmqctl

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = str(Path(sys.executable).parent / "pipeline")


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PIPELINE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _json(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert res.stdout.strip(), res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


@pytest.mark.integration
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_submit_workers_status_report_rerun(broker: str, request: pytest.FixtureRequest, tmp_path: Path, pg_url: str,
                                            redis_url: str, s3_bucket: tuple[str, str], s3_env: dict[str, str]) -> None:
    broker_url = redis_url if broker == "redis" else str(request.getfixturevalue("rabbitmq_url"))
    endpoint, bucket = s3_bucket
    sandbox = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.2, "max_s": 0.6}}}})
    workers: list[subprocess.Popen[str]] = []
    try:
        (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({
            "database_url": pg_url, "broker_url": broker_url, "redis_url": redis_url,
            "storage_url": f"s3://{bucket}/runs",
            "providers": {"sandbox": {"base_url": sandbox.url}},
            "worker": {"max_attempts": 2, "backoff_base_s": 0.1, "backoff_cap_s": 0.5, "lease_s": 10},
        }))
        items = [{"id": f"p{i:02d}", "title": f"product {i}"} for i in range(12)]
        items.append({"id": "flaky", "title": "flaky one", "prompt": "retry me [sandbox:503x2]"})
        (tmp_path / "job.yaml").write_text(yaml.safe_dump({
            "job": "cluster-e2e", "providers": ["sandbox"],
            "defaults": {"resolution": "1K", "aspect_ratio": "4:5", "format": "png"},
            "output": {"key": "shop/{{ id }}.png"}, "prompt": "Photo of {{ title }}", "items": items,
        }))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")} | s3_env
        t0 = time.monotonic()
        sub = _cli(["submit", "job.yaml", "--json"], tmp_path, env)
        assert sub.returncode == 0, sub.stderr
        job_id = str(_json(sub)["job_id"])
        assert time.monotonic() - t0 < 30
        for _ in range(2):
            workers.append(subprocess.Popen([PIPELINE, "worker", "--concurrency", "4"], cwd=tmp_path, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 120
        while True:
            st = _json(_cli(["status", job_id, "--json"], tmp_path, env))
            if st["state"] != "running":
                break
            assert time.monotonic() < deadline, st
            time.sleep(1)
        assert st["counts"]["succeeded"] == 12 and st["counts"]["failed"] == 1, st

        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        head = s3.head_object(Bucket=bucket, Key="runs/shop/p00.png")
        assert head["ContentType"] == "image/png" and head["Metadata"]["provider"] == "sandbox"

        rep = _json(_cli(["report", job_id, "--json"], tmp_path, env))
        ledger = sandbox.ledger()
        assert ledger["billed_images"] == 12
        assert Decimal(rep["cost_usd"]) == Decimal(ledger["billed_usd"])  # exact, not just to the cent

        rr = _cli(["rerun", job_id, "--failed"], tmp_path, env)
        assert rr.returncode == 0 and "1 items" in rr.stdout, rr.stdout + rr.stderr
        deadline = time.monotonic() + 60
        while True:
            st = _json(_cli(["status", job_id, "--json"], tmp_path, env))
            if st["state"] != "running":
                break
            assert time.monotonic() < deadline, st
            time.sleep(1)
        assert st["counts"]["succeeded"] == 13 and st["state"] == "succeeded", st
        assert sandbox.ledger()["billed_images"] == 13
        s3.head_object(Bucket=bucket, Key="runs/shop/flaky.png")
        if broker == "rabbitmq":
            queues = rabbitmq_queues(broker_url)
            assert queues["pipeline"]["type"] == "quorum", queues
            assert not [q for q in queues if q.startswith("celery_delayed")], sorted(queues)
            # both workers consume: each has its own node name, so its own (exclusive) remote-control queue
            out = rabbitmqctl("list_consumers", "-p", urlsplit(broker_url).path.lstrip("/"), "--no-table-headers",
                              "queue_name")
            assert out.split().count("pipeline") == 2, out + "\n".join(w.stderr.read() for w in workers
                                                                      if w.poll() is not None and w.stderr)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
        sandbox.stop()
