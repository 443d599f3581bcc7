"""docker-compose.yml stays valid (no Docker engine here: `docker-compose config` validates the file)."""

from __future__ import annotations

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


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    res = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
