"""Celery's worker consumer for RabbitMQ, without the native delayed delivery bootstep.

With a quorum queue Celery (5.5+) sets up "native delayed delivery" at every worker start: 28 quorum queues and
29 exchanges in the vhost for ETA/countdown tasks, and a warning that the pipeline's direct exchange cannot use
them. The pipeline publishes no ETA or countdown (waits live in the database as `next_attempt_at`), so the step
is left out. Named by pipeline.brokers.AMQP_CONSUMER (`worker_consumer`); imported only by a worker on amqp://.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):  # type: ignore[misc]
    class Blueprint(CeleryConsumer.Blueprint):  # type: ignore[misc]
        default_steps = tuple(s for s in CeleryConsumer.Blueprint.default_steps if s != DELAYED_DELIVERY_STEP)
