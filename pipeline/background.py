"""The loops every processing process runs beside its task threads: dispatcher, sweeper, lease renewal and
spool flushing. In `pipeline worker` and `pipeline beat` they run in a thread; in `pipeline run` the main
thread drives them. pipeline.processing composes them with Celery (and starts and stops the lease renewer)."""

from __future__ import annotations

import logging
import threading
import time

from pipeline.core.batch import poll_batches, submit_batches
from pipeline.core.dispatch import Publish, dispatch_once
from pipeline.core.leases import LeaseRenewer
from pipeline.core.sweep import sweep
from pipeline.notify.deliver import deliver_due
from pipeline.notify.events import run_end_hook
from pipeline.runtime import Runtime

log = logging.getLogger("pipeline.background")

#: how often expired leases and stale queue entries are swept
SWEEP_INTERVAL_S = 2.0
#: how often spooled images are retried against the object store
SPOOL_INTERVAL_S = 5.0
#: how often claimed job notifications are sent
NOTIFY_INTERVAL_S = 1.0
#: how often due items of batch jobs are grouped into new batches (open batches poll on their own schedule)
BATCH_INTERVAL_S = 1.0


class Background:
    def __init__(self, rt: Runtime, publish: Publish, *, max_queued: int, job_id: int | None = None) -> None:
        self.rt = rt
        self.publish = publish
        self.max_queued = max_queued
        self.job_id = job_id
        w = rt.settings.worker
        self.renewer = LeaseRenewer(rt.sessions, rt.ctx.owner, w.lease_s, rt.ctx.clock)
        self._last_sweep = 0.0
        self._last_spool = 0.0
        self._last_batch = 0.0
        self._last_notify = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """One round: sweep (when due), flush the spool (when due), dispatch. Returns items published."""
        now_m = time.monotonic()
        try:
            if now_m - self._last_sweep >= SWEEP_INTERVAL_S:
                self._last_sweep = now_m
                self.sweep()
            if now_m - self._last_notify >= NOTIFY_INTERVAL_S:
                self._last_notify = now_m
                self.notify()
            if now_m - self._last_spool >= SPOOL_INTERVAL_S:
                self._last_spool = now_m
                flush = getattr(self.rt.storage, "flush", None)
                if flush is not None:
                    flush()
            if now_m - self._last_batch >= BATCH_INTERVAL_S:
                self._last_batch = now_m
                submit_batches(self.rt.ctx, self.rt.batch_client, self.rt.ctx.clock())
                poll_batches(self.rt.ctx, self.rt.batch_client, self.rt.ctx.clock())
            return dispatch_once(self.rt.sessions, self.publish, self.rt.ctx.clock(), max_queued=self.max_queued,
                                 job_id=self.job_id)
        except Exception as e:
            log.warning("background tick failed: %s: %s", type(e).__name__, e)
            return 0

    def sweep(self) -> None:
        w = self.rt.settings.worker
        sweep(self.rt.sessions, self.rt.ctx.clock(), queued_timeout_s=w.queued_timeout_s,
              on_done=run_end_hook(self.rt.settings.notify))

    def notify(self) -> None:
        """Send the job notifications that are due (claimed by whichever process saw the event)."""
        deliver_due(self.rt.sessions, self.rt.http, self.rt.settings, self.rt.ctx.clock())

    def finish(self) -> None:
        """At the end of `run`: mark the finished job done now and send its notification before exiting."""
        try:
            self.sweep()
            self.notify()
        except Exception as e:
            log.warning("closing sweep failed: %s: %s", type(e).__name__, e)

    def start(self) -> None:
        """Run `tick` in a thread until `stop` (the lease renewer is started on its own)."""
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.rt.settings.worker.dispatch_interval_s
        while not self._stop.is_set():
            published = self.tick()
            if not published:
                self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
