"""docker-compose.yml stays valid (no Docker engine here: `docker-compose config` validates the file)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_has_the_cluster() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    for name in ("postgres", "redis", "minio", "minio-init", "worker", "beat", "flower"):
        assert name in services, name
    assert "mb" in " ".join(services["minio-init"]["command"])  # the bucket is created at start
    assert services["worker"]["command"][:2] == ["pipeline", "worker"]


def test_either_broker_redis_by_default_rabbitmq_under_its_profile() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]  # started only when asked for
    assert services["worker"]["environment"]["PIPELINE_BROKER_URL"] == "${BROKER_URL:-redis://redis:6379/0}"
    assert services["worker"]["environment"]["PIPELINE_REDIS_URL"].startswith("redis://")  # the gate stays in Redis
    assert "${BROKER_URL:-redis://redis:6379/0}" in " ".join(services["flower"]["command"])


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    res = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_on_rabbitmq() -> None:
    url = "amqp://pipeline:pipeline@rabbitmq:5672/pipeline"
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROFILES"} | {"BROKER_URL": url}
    res = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "rabbitmq",
                          "config"], capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    services = yaml.safe_load(res.stdout)["services"]
    assert "rabbitmq" in services
    for name in ("worker", "beat", "cli"):
        assert services[name]["environment"]["PIPELINE_BROKER_URL"] == url, name
    assert f"--broker={url}" in services["flower"]["command"]
