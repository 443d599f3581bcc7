"""Fixtures for the sandbox tests: one shared default sandbox (reset before each test) and a factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pipeline.sandbox import SandboxServer, start_sandbox


@pytest.fixture(scope="session")
def _shared_sandbox() -> Iterator[SandboxServer]:
    with start_sandbox() as server:
        yield server


@pytest.fixture
def sandbox(_shared_sandbox: SandboxServer) -> SandboxServer:
    """The default-profile sandbox, with an empty ledger."""
    _shared_sandbox.reset()
    return _shared_sandbox


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandboxes with their own profiles; all are stopped after the test."""
    started: list[SandboxServer] = []

    def make(profile: dict[str, Any] | None = None) -> SandboxServer:
        server = start_sandbox(profile)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client
