"""What every CLI command shares: the consoles, the common options, error exits, settings, JSON output, a
runtime for the length of one command, and the progress bar of a job processed here. pipeline/cli.py and
pipeline/commands/*.py import it; it imports neither of them, nor anything heavy (Celery, boto3) at import time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import Settings, load_settings
from pipeline.errors import InputError, PipelineError
from pipeline.redact import redact_known
from pipeline.reports import render

if TYPE_CHECKING:
    from pipeline.reports.queries import JobSummary
    from pipeline.runtime import Runtime

out = Console()
err = Console(stderr=True)

T = TypeVar("T")
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="pipeline.yaml to read (default: ./pipeline.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def fail(e: PipelineError) -> NoReturn:
    """Print an error (its text escaped: it may quote stored data or input; keys cut out) and exit 2 for bad
    input, 1 otherwise."""
    err.print(f"[bold red]error:[/] {escape(redact_known(str(e)))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2 if isinstance(e, InputError) else 1)


def guarded(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except PipelineError as e:
        fail(e)


def settings_from(config: Path | None) -> Settings:
    from pipeline.logging_setup import configure_logging

    s = guarded(lambda: load_settings(config))
    guarded(lambda: configure_logging(s))
    return s


def money(v: Any) -> str:
    return f"${v:,.2f}" if not isinstance(v, str) else v


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def with_runtime(config: Path | None, fn: Callable[[Runtime], T], *, migrate: bool = True,
                 create_db: bool = False) -> T:
    """Run `fn` with a runtime opened from the config (no storage check) and closed after. For commands on
    existing jobs: a SQLite database that does not exist is not created (exit 2: nothing submitted yet) unless
    `create_db`."""
    from pipeline.runtime import open_runtime

    settings = settings_from(config)
    rt = guarded(lambda: open_runtime(settings, migrate_db=migrate, check_storage=False, create_db=create_db))
    try:
        return guarded(lambda: fn(rt))
    finally:
        rt.close()


def job_id_of(rt: Runtime, ref: str) -> int:
    """A job's id from its id or name (InputError naming JOB when there is none)."""
    from pipeline.core.control import find_job

    with rt.sessions() as s:
        return find_job(s, ref).id


def job_providers(settings: Settings, ref: str) -> list[str]:
    """The providers a job uses (to start an in-process sandbox for it), read without migrating anything."""
    from pipeline.core.control import find_job
    from pipeline.db.session import check_sqlite_location, make_engine, make_sessionmaker

    guarded(lambda: check_sqlite_location(settings.database_url, create=False))
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as s:
            return list(find_job(s, ref).providers)
    except PipelineError as e:
        fail(e)
    except SQLAlchemyError as e:  # no database (or no tables) yet
        fail(InputError(f"cannot read the database: {type(e).__name__}", where="database_url"))
    finally:
        engine.dispose()


def render_summary(s: JobSummary, *, scope: str = "") -> None:
    render.render_summary(out, s, scope=scope)


class JobProgress:
    """The progress bar of `run`, `rerun` and `status --watch` (on stderr; disabled with --json)."""

    def __init__(self, label: str, total: int | None, *, disable: bool = False) -> None:
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err, disable=disable)
        self._task = self._bar.add_task(escape(label), total=total, detail="")

    def __enter__(self) -> JobProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def update(self, s: JobSummary) -> None:
        c = s.counts
        done = sum(c[k] for k in ("succeeded", "cached", "failed", "blocked", "cancelled"))
        self._bar.update(self._task, total=sum(c.values()), completed=done,
                         detail=f"ok {c['succeeded']} cached {c['cached']} failed {c['failed']} "
                                f"running {c['running']} ${s.totals.cost_usd:.2f}")


def process_with_progress(rt: Runtime, job_id: int, total: int, *, as_json: bool,
                          concurrency: int | None = None) -> JobSummary:
    """Process a job here to the end, with a progress bar."""
    from pipeline import services

    with JobProgress(f"job {job_id}", total, disable=as_json) as bar:
        return services.process_here(rt, job_id, concurrency=concurrency, on_progress=bar.update)
