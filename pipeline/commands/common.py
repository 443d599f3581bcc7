"""What every CLI command shares: the consoles, the common options, error exits, settings, JSON output and a
runtime for the length of one command. pipeline/cli.py and pipeline/commands/*.py import it; it imports
neither of them, nor anything heavy (Celery, boto3) at import time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from pipeline.config import Settings, load_settings
from pipeline.errors import InputError, PipelineError

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

out = Console()
err = Console(stderr=True)

T = TypeVar("T")
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="pipeline.yaml to read (default: ./pipeline.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def fail(e: PipelineError) -> NoReturn:
    err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
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


def with_runtime(config: Path | None, fn: Callable[[Runtime], T], *, migrate: bool = True) -> T:
    """Run `fn` with a runtime opened from the config (no storage check) and closed after."""
    from pipeline.runtime import open_runtime

    settings = settings_from(config)
    rt = guarded(lambda: open_runtime(settings, migrate_db=migrate, check_storage=False))
    try:
        return guarded(lambda: fn(rt))
    finally:
        rt.close()


def job_id_of(rt: Runtime, ref: str) -> int:
    """A job's id from its id or name (InputError naming JOB when there is none)."""
    from pipeline.core.control import find_job

    with rt.sessions() as s:
        return find_job(s, ref).id
