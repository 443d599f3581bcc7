"""Helpers for the schedule tests: a scheduled manifest, settings on a database, and the body of a child process
that calls fire_due from several threads at once (spawned, so it builds its own engine)."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Settings, load_settings
from pipeline.db.session import make_engine, make_sessionmaker
from pipeline.schedules.cron import Run
from pipeline.schedules.fire import LoadedRun, fire_due
from pipeline.services import schedule_loader


def write_manifest(path: Path, *, job: str = "social", cron: str = "0 6 * * 1", timezone: str = "Europe/Berlin",
                   items: int = 4, providers: tuple[str, ...] = ("sandbox",), prompt: str | None = None) -> Path:
    path.write_text(yaml.safe_dump({
        "job": job, "providers": list(providers),
        "schedule": {"cron": cron, "timezone": timezone},
        "output": {"key": "social/{{ schedule }}/{{ run_date }}/{{ id }}.png"},  # one key per schedule and run
        "prompt": prompt or "Post {{ id }} for the week of {{ run_date }} ({{ schedule }})",
        "items": [{"id": f"post-{i}", "aspect_ratio": ["9:16", "1:1", "4:5", "16:9"][i % 4]} for i in range(items)],
    }))
    return path


def write_settings(tmp: Path, db_url: str, sandbox_url: str = "http://127.0.0.1:9", **extra: Any) -> Path:
    cfg: dict[str, Any] = {"database_url": db_url, "storage_url": f"file://{tmp / 'out'}",
                           "providers": {"sandbox": {"base_url": sandbox_url}}, **extra}
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def settings_at(path: Path) -> Settings:
    return load_settings(path, env={})


@dataclass(frozen=True)
class _Crash:
    """An item spec whose prompt kills the process when submit reads it: inside the submit's transaction,
    after the fire row was written."""

    key: str
    output_key: str
    cache_key: str
    spec_hash: str
    resolution: str = "1K"
    aspect_ratio: str = "1:1"
    output_format: str = "png"
    references: tuple[Any, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class _CrashingRun:
    job: Any
    specs: list[Any]


def crash_child(config: str, now: datetime) -> None:
    """Fire with a run whose submit dies (SIGKILL) half way through its transaction."""
    settings = settings_at(Path(config))
    engine = make_engine(settings.database_url, pool_size=2)
    real = schedule_loader(settings)

    def load_run(path: Path, run: Run) -> LoadedRun:
        loaded = real(path, run)
        first = loaded.specs[0]
        crash = _Crash(key="crash", output_key="social/crash.png", cache_key=first.cache_key,
                       spec_hash=first.spec_hash)
        return _CrashingRun(loaded.job, [*loaded.specs, crash])

    fire_due(make_sessionmaker(engine), now, load_run)


def race_child(config: str, now: datetime, threads: int, ready: Any, go: Any, results: Any) -> None:
    """Wait for `go`, then call fire_due from `threads` threads at once; put the outcomes on `results`."""
    settings = settings_at(Path(config))
    engine = make_engine(settings.database_url, pool_size=threads)
    sessions = make_sessionmaker(engine)
    load_run = schedule_loader(settings)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        go.wait(30)
        fires = fire_due(sessions, now, load_run)
        with lock:
            outcomes.extend(f"{f.schedule}:{f.outcome}" for f in fires)

    ts = [threading.Thread(target=one) for _ in range(threads)]
    for t in ts:
        t.start()
    ready.put(os.getpid())
    for t in ts:
        t.join(60)
    results.put(outcomes)
    engine.dispose()
