"""Run Alembic migrations programmatically (`pipeline db upgrade`, and at start in embedded mode)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

#: migrations/ at the project root (the package is installed in development mode from the checkout)
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
#: Postgres advisory lock key serialising concurrent `db upgrade`s
MIGRATE_LOCK = 7_412_001


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind `engine` to `revision`, on the engine's own connection."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def migrate(engine: Engine) -> None:
    """Bring the schema to head. On Postgres an advisory lock makes concurrent starts take turns."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_LOCK})
            try:
                upgrade(engine)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_LOCK})
                conn.commit()
    else:
        upgrade(engine)
