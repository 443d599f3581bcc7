"""Fixtures of the fault suite: a private Redis per test (the broker; restartable, and no other test's
flushes or consumers reach it), a fresh database per test on a private Postgres cluster (a fault test runs up
to 50 worker threads in several processes: the machine's shared server, max_connections 100, also serves
everyone else's tests and benchmarks, and refused connections there would be noise, not findings), and a
fresh versioned bucket on the session's moto server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import unavailable
from tests.faults.harness import Bucket
from tests.faults.private import PrivatePostgres, PrivateRedis
from tests.fixtures.s3 import MotoServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory carries the `faults` marker (`./scripts/test --faults`)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    try:
        server.start()
    except (RuntimeError, OSError) as e:
        unavailable(f"redis-server ({e})")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def bucket(s3_server: MotoServer) -> Iterator[Bucket]:
    s3_server.start()
    b = Bucket(s3_server.endpoint_url, f"faults-{uuid.uuid4().hex[:16]}").create()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
    except (RuntimeError, OSError) as e:
        pg.destroy()
        unavailable(f"a private Postgres cluster ({e})")
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def fault_pg_url(private_pg: PrivatePostgres) -> Iterator[str]:
    """A fresh database on the private cluster."""
    name = f"fault_{uuid.uuid4().hex[:10]}"
    admin = create_engine(private_pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield private_pg.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
