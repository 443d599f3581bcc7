"""Fixtures for report tests: both databases, a sandbox over HTTP, a config file, headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.sandbox.server import SandboxServer, start_sandbox

CI = os.environ.get("CI") == "true"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"seed": 3, "protocols": {"gemini": {"latency": {"min_s": 0.02, "max_s": 0.08}}}})
    try:
        yield server
    finally:
        server.stop()


def write_config(tmp: Path, db_url: str, sandbox_url: str, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "database_url": db_url,
        "storage_url": f"file://{tmp / 'out'}",
        "providers": {"sandbox": {"base_url": sandbox_url}},
        "worker": {"lease_s": 10, "max_attempts": 4, "backoff_base_s": 0.05, "backoff_cap_s": 0.2,
                   "concurrency": 8},
        **extra,
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed here when missing and we are root (scripts/test installs it in CI)."""
    path = _find_chromium()
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, env=env,
                       capture_output=True, timeout=900, check=False)
        path = _find_chromium()
    if path is None:
        if CI:
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium is not installed and could not be installed here (not root or no apt-get)")
    return path


def chromium_args(binary: str, profile_dir: Path) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile_dir}"]
