"""The processing loop, composed once: a Celery app over the runtime's context, the background duties
(dispatcher, sweeper, lease renewal, spool, batches, notifications) and, where no other process consumes the
broker, an in-process Celery worker. `pipeline worker`, `pipeline run` (services.process_here), `pipeline beat`
(services.run_beat) and `pipeline serve` (web.server.processing) all start it here.

Order matters, and is kept here: leases are renewed from the start to the very end (tasks still finishing
while the worker stops keep their items); the dispatcher publishes only once the in-process worker consumes
(nothing goes into a queue nobody declared); on the way out the dispatcher stops first, then the worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from celery import Celery

from pipeline.background import Background
from pipeline.runtime import Runtime
from pipeline.worker import embedded_worker, make_celery, publisher


@dataclass(frozen=True)
class Loop:
    app: Celery
    background: Background


@contextlib.contextmanager
def processing_loop(rt: Runtime, *, max_queued: int, job_id: int | None = None, consume_here: int | None = None,
                    dispatch_thread: bool = True) -> Iterator[Loop]:
    """Compose the loop for `rt`. `consume_here`: threads of an in-process worker (None: other processes
    consume, or the caller runs the worker itself, as `pipeline worker` does). `dispatch_thread`: run the
    background duties in a thread (False: the caller calls `loop.background.tick()`). `job_id` limits
    dispatching to one job."""
    app = make_celery(rt.settings, lambda: rt.ctx)
    bg = Background(rt, publisher(app), max_queued=max_queued, job_id=job_id)
    with contextlib.ExitStack() as stack:
        bg.renewer.start()
        stack.callback(bg.renewer.stop)
        if consume_here is not None:
            stack.enter_context(embedded_worker(app, consume_here))
        if dispatch_thread:
            bg.start()
            stack.callback(bg.stop)
        yield Loop(app, bg)
