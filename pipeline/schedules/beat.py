"""The beat's schedule duty: `ScheduleTicker` fires due schedules (pipeline.schedules.fire) and holds back for a
while those whose manifests failed to load. Any number of beats may run: each fire happens once. The `pipeline
beat` process around it (the processing loop's background duties, an in-process worker in the embedded mode)
is composed in pipeline.services.run_beat."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from pipeline.schedules.fire import Fire, FireOutcome, LoadRun, fire_due

log = logging.getLogger("pipeline.beat")

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
