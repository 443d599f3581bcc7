from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.sandbox.server import SandboxServer, start_sandbox


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.01, "max_s": 0.03}}}})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("pg_url"))
