"""Shared fixtures: real Postgres and Redis on this machine, env isolation, and the plugins for S3 (moto's
server over HTTP) and the sandbox. Service tests skip locally when a service is missing and fail in CI."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.services"]

ROOT = Path(__file__).resolve().parents[1]
CI = os.environ.get("CI") == "true"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No PIPELINE_* or provider key leaks between tests (or from the developer's shell)."""
    for k in list(os.environ):
        if k.startswith("PIPELINE_") or k.endswith("_API_KEY") or k == "REPLICATE_API_TOKEN":
            monkeypatch.delenv(k, raising=False)
    yield


def unavailable(what: str) -> None:
    if CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
