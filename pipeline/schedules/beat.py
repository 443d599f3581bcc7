"""The `pipeline beat` process: the dispatcher, sweeper and spool duties (pipeline.background) in a thread, and
in the main thread a look for due schedules every SCHEDULE_INTERVAL_S. Any number of beats may run: each fire
happens once (pipeline.schedules.fire). In the embedded mode (memory:// broker) no other process can take the
beat's messages, so it also runs an in-process worker that processes the jobs it fires."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from pipeline.config import Settings
from pipeline.schedules.cron import Run
from pipeline.schedules.fire import Fire, FireOutcome, LoadedRun, LoadRun, fire_due

log = logging.getLogger("pipeline.beat")

#: how often the beat looks for due schedules
SCHEDULE_INTERVAL_S = 1.0
#: a schedule whose manifest failed to load is tried again after this long
LOAD_RETRY_S = 60.0


class ScheduleTicker:
    """Calls fire_due, holding back for LOAD_RETRY_S the schedules whose manifests failed to load."""

    def __init__(self, sessions: sessionmaker[Session], load_run: LoadRun, clock: Callable[[], datetime],
                 on_fire: Callable[[Fire], None] | None = None, monotonic: Callable[[], float] = time.monotonic):
        self.sessions = sessions
        self.load_run = load_run
        self.clock = clock
        self.on_fire = on_fire
        self.monotonic = monotonic
        self._held: dict[str, float] = {}

    def tick(self) -> list[Fire]:
        now_m = self.monotonic()
        held = {name for name, until in self._held.items() if until > now_m}
        try:
            fires = fire_due(self.sessions, self.clock(), self.load_run, exclude=held)
        except Exception as e:  # the database away for a moment: the next tick tries again
            log.warning("schedules: %s: %s", type(e).__name__, e)
            return []
        for f in fires:
            if f.outcome == FireOutcome.ERROR:
                self._held[f.schedule] = now_m + LOAD_RETRY_S
            else:
                self._held.pop(f.schedule, None)
            if self.on_fire is not None and f.outcome != FireOutcome.ALREADY:
                self.on_fire(f)
        return fires


def services_loader(settings: Settings) -> LoadRun:
    """The LoadRun of a real beat: pipeline.services.load with the run's template variables and job suffix."""
    from pipeline import services

    def load_run(path: Path, run: Run) -> LoadedRun:
        return services.load(path, settings, extra_vars=run.template_vars(), job_suffix=run.job_suffix)

    return load_run


def run_beat(settings: Settings, *, on_fire: Callable[[Fire], None] | None = None,
             stop: threading.Event | None = None, on_ready: Callable[[], None] | None = None) -> None:
    """Run until `stop` is set (or KeyboardInterrupt)."""
    from pipeline import services
    from pipeline.background import Background
    from pipeline.worker import embedded_worker, make_celery, publisher

    stop = stop or threading.Event()
    names = sorted(n for n, p in settings.providers.items() if p.kind == "sandbox")
    rt, stack = services.open_for(settings, names if settings.embedded else [])
    with stack:
        app = make_celery(rt.settings, lambda: rt.ctx)
        if settings.embedded:
            stack.enter_context(embedded_worker(app, settings.worker.concurrency))
        bg = Background(rt, publisher(app), max_queued=settings.worker.max_queued)

        ticker = ScheduleTicker(rt.sessions, services_loader(rt.settings), rt.ctx.clock, on_fire)
        bg.start()
        try:
            if on_ready is not None:
                on_ready()
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.is_set():
                    ticker.tick()
                    stop.wait(SCHEDULE_INTERVAL_S)
        finally:
            bg.stop()
