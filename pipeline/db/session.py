"""Engine and session factories. Built per process by the composition root, after any fork."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import InputError

#: the embedded mode's own state directory: created when missing (any other SQLite directory must exist)
STATE_DIR = ".pipeline"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases (and in-memory SQLite)."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    return Path(path) if path and path != ":memory:" and not path.startswith("file:") else None


def check_sqlite_location(url: str, *, create: bool = True, mkdir: bool = True) -> None:
    """Refuse (InputError, nothing created) a SQLite file whose directory does not exist, unless it is the
    default state directory (`.pipeline/` in the working directory, created here unless `mkdir=False`); with
    `create=False`, refuse a database file that does not exist yet (read-only commands must not create one)."""
    path = sqlite_path(url)
    if path is None:
        return
    if not create and not path.exists():
        raise InputError(f"no database at {path}: nothing has been submitted or scheduled here yet "
                         "(run `pipeline submit` or `pipeline run` first, or check database_url)",
                         where="database_url")
    parent = path.parent
    if parent.is_dir():
        return
    if parent.exists():
        raise InputError(f"{parent} is not a directory", where="database_url")
    if parent == Path(STATE_DIR) or parent.resolve() == Path(STATE_DIR).resolve():
        if mkdir:
            parent.mkdir(parents=True, exist_ok=True)
        return
    raise InputError(f"the directory of the SQLite database does not exist: {parent} (create it first)",
                     where="database_url")


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine. SQLite: WAL, a busy timeout and IMMEDIATE transactions so conditional updates from
    threads serialize instead of failing; its directory must exist (`.pipeline/` is created). Postgres:
    pre-ping for reconnects."""
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        check_sqlite_location(url)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upsert_insert(s: Session, table: Any) -> Any:
    """An INSERT for `table` that supports ON CONFLICT on the session's dialect (Postgres or SQLite)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return pg_insert(table) if s.get_bind().dialect.name == "postgresql" else sqlite_insert(table)
