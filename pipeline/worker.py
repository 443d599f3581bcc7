"""The Celery app and its one thin task: an item id in, core.process_item, nothing else.

Worker settings: acks_late (a message is acked after the task ran), prefetch 1, reject on worker lost,
threads pool sized for I/O-bound calls of 5-30 s. No ETA/countdown anywhere: waits live in the database.
What differs per broker (Redis, RabbitMQ, memory) is in pipeline.brokers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery, signals
from celery.exceptions import Reject
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from pipeline.brokers import broker_kind, celery_conf
from pipeline.config import Settings
from pipeline.core.context import Context
from pipeline.core.process import process_item

log = logging.getLogger("pipeline.worker")

TASK_NAME = "pipeline.process_item"
QUEUE = "pipeline"


def make_celery(settings: Settings, get_ctx: Callable[[], Context]) -> Celery:
    broker = "memory://localhost/" if settings.broker_url.rstrip("/") == "memory:" else settings.broker_url
    app = Celery("pipeline", broker=broker, set_as_current=False)
    if not _context:
        _context.append(get_ctx)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        # leave sys.stdout/stderr alone: the pipeline's log handler writes to sys.stderr, and Celery's redirect
        # would turn it into a logger that drops what our handler writes (every worker log line was lost)
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        # per broker: Redis' visibility timeout; RabbitMQ's quorum queue and publisher confirms (pipeline.brokers)
        **celery_conf(settings.broker_url,
                      longest_task_s=max((p.timeout_s for p in settings.providers.values() if p.enabled), default=0)),
    )

    _context[0] = get_ctx
    # Celery sets up logging itself (root level from --loglevel, stdout redirected) unless a receiver of
    # setup_logging exists: logging is pipeline.logging_setup's, configured from the settings already
    signals.setup_logging.connect(_keep_pipeline_logging, weak=False, dispatch_uid="pipeline.logging")
    app.task(name=TASK_NAME, ignore_result=True)(process_item_task)
    return app


#: the process's runtime context, set by make_celery (one runtime per process: the worker, or `run`)
_context: list[Callable[[], Context]] = []


def _keep_pipeline_logging(**_: Any) -> None:
    """Receiver of Celery's setup_logging signal: its presence tells Celery to leave logging alone."""


#: how long a task whose database is unreachable waits before handing its message back
DB_DOWN_BACKOFF_S = 1.0


def process_item_task(item_id: int) -> str:
    """The one task: an item id in, the core does the rest. One module-level callable for every app (Celery
    keeps one task per name: a second callable under the same name would never be called).

    If the database cannot be reached (restart, no free connection) the item could not even be claimed: the
    message goes back to the broker instead of being acked, so the item is not left `queued` until the
    sweeper's timeout."""
    try:
        return str(process_item(_context[0](), int(item_id)))
    except (OperationalError, InterfaceError, SATimeoutError) as e:
        log.warning("item %s: database unavailable (%s); message requeued", item_id, type(e).__name__)
        time.sleep(DB_DOWN_BACKOFF_S)
        raise Reject(type(e).__name__, requeue=True) from None


def node_name() -> str:
    """This worker's Celery node name, one per process: Celery names every worker `celery@host`, and on RabbitMQ
    each node's remote-control queue (`<node>.celery.pidbox`) is exclusive to one connection, so a second worker
    process on the same host under the same name could not declare it and would never start consuming."""
    return f"pipeline-{os.getpid()}@{socket.gethostname()}"


def publisher(app: Celery) -> Callable[[Sequence[int]], None]:
    """Publish many item ids on one producer connection (much faster than one delay() each)."""
    task = app.tasks[TASK_NAME]

    def publish(ids: Sequence[int]) -> None:
        with app.producer_or_acquire() as producer:
            for item_id in ids:
                task.apply_async((int(item_id),), producer=producer)

    return publish


@contextmanager
def embedded_worker(app: Celery, concurrency: int) -> Iterator[Any]:
    """A Celery worker (threads pool) in a thread of this process, for the embedded mode and `run`."""
    from celery.worker import WorkController

    worker = WorkController(app=app, hostname=node_name(), concurrency=concurrency, pool="threads", loglevel="WARNING",
                            without_heartbeat=True, without_mingle=True, without_gossip=True,
                            queues=[QUEUE])
    t = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
    t.start()
    _wait_until_consuming(worker, t)
    try:
        yield worker
    finally:
        _stop(worker, t)


def _stop(worker: Any, thread: threading.Thread) -> None:
    """Warm shutdown of the in-process worker: running tasks finish and are acked. A py-amqp connection is not
    thread-safe (stopping from this thread cancels the consumer on the connection the worker's thread is reading,
    and both hang), so on RabbitMQ the worker's own thread is asked to stop, as Celery does on SIGTERM."""
    if broker_kind(str(worker.app.conf.broker_url)) == "amqp":
        from celery.worker import state

        state.should_stop = 0  # its event loop raises WorkerShutdown (exit code 0) at its next turn
        if getattr(worker, "hub", None) is not None:
            worker.hub.call_soon(lambda: None)  # a turn now, not after its poll timeout (up to 10 s)
        try:
            thread.join(timeout=30)
        finally:
            state.should_stop = None  # the flag is process-wide: the next in-process worker must not see it
    else:
        worker.stop(in_sighandler=False)
        thread.join(timeout=30)


#: how long the in-process worker may take to start consuming
WORKER_START_TIMEOUT_S = 60.0


def _wait_until_consuming(worker: Any, thread: threading.Thread) -> None:
    """Block until the worker's consumer is set up (its queue declared), so nothing is published into a
    queue nobody has declared yet; fail loudly if the worker thread dies while starting."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        consumer = getattr(worker, "consumer", None)
        if consumer is not None and getattr(consumer, "task_consumer", None) is not None:
            return
        if not thread.is_alive():
            raise RuntimeError("the in-process Celery worker stopped while starting")
        time.sleep(0.01)
    raise RuntimeError("the in-process Celery worker did not start consuming in time")
