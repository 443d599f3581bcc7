"""The models and the migrations agree, on both databases the project supports."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from pipeline.db.migrate import upgrade
from pipeline.db.models import Base
from pipeline.db.session import make_engine


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_migrations_match_models(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        tables = set(inspect(engine).get_table_names())
        assert {"jobs", "items", "attempts", "cache_entries", "ledger", "provider_states",
                "budget_periods"} <= tables
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
        upgrade(engine)
    finally:
        engine.dispose()
