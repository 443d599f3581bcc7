"""The Celery settings each broker needs, as data: `memory://` (the embedded mode), Redis and RabbitMQ.

Every broker gets the same delivery contract from pipeline.worker (acks late, prefetch 1 per thread, reject on
worker lost); what differs is how an unacknowledged message comes back and how a publish is made safe:

- Redis: an unacked message stays in the `unacked` hash until `visibility_timeout` passes, then another worker
  restores it. The pipeline never waits for that: a killed worker's items come back through their leases (the
  sweeper), and the late redelivery is refused by the claim.
- RabbitMQ (amqp://): the `pipeline` queue is a quorum queue (durable, replicated by Raft, messages always on
  disk) and every publish waits for the broker's confirm. An unacked message comes back as soon as the
  consumer's connection closes (a killed worker), with no timeout. The broker's own `consumer_timeout`
  (30 minutes by default) closes a channel whose delivery stays unacked longer: a task lasts one provider call
  (`timeout_s` plus the download), so it must stay well below that.

The gate stays on Redis (`redis_url`) whatever the broker.
"""

from __future__ import annotations

import logging
from typing import Any, Literal
from urllib.parse import urlsplit

log = logging.getLogger("pipeline.brokers")

BrokerKind = Literal["memory", "redis", "amqp"]

#: URL schemes by broker (kombu's names): Redis (plain, TLS, Sentinel) and RabbitMQ over AMQP 0-9-1 (py-amqp)
SCHEMES: dict[str, BrokerKind] = {
    "memory": "memory",
    "redis": "redis", "rediss": "redis", "sentinel": "redis",
    "amqp": "amqp", "amqps": "amqp", "pyamqp": "amqp",
}
#: the memory transport polls once a second by default: 8 tasks/s for an in-process worker
MEMORY_POLLING_INTERVAL_S = 0.01
#: Redis: an unacked message comes back after this; the claim makes the redelivery harmless
REDIS_VISIBILITY_TIMEOUT_S = 3600
#: RabbitMQ's default delivery acknowledgement timeout (`consumer_timeout` in rabbitmq.conf, 30 min)
RABBITMQ_CONSUMER_TIMEOUT_S = 1800
#: a task lasts one provider call (up to its timeout_s; 1200 s for google-flex), its download and storage: warn
#: when the longest timeout_s passes this fraction of the ack timeout
ACK_TIMEOUT_MARGIN = 0.8
#: Celery's consumer blueprint without native delayed delivery (pipeline.amqp_consumer)
AMQP_CONSUMER = "pipeline.amqp_consumer:Consumer"


def broker_kind(url: str) -> BrokerKind | None:
    """memory, redis or amqp by the URL's scheme; None for a scheme the pipeline does not support."""
    return SCHEMES.get(urlsplit(url).scheme.lower())


def celery_conf(broker_url: str, *, longest_task_s: float = 0.0) -> dict[str, Any]:
    """The broker-specific part of the Celery app's configuration. `longest_task_s` (the longest provider
    timeout) only feeds a warning on RabbitMQ, whose ack timeout is set on the server, not here."""
    kind = broker_kind(broker_url)
    if kind == "memory":
        return {"broker_transport_options": {"polling_interval": MEMORY_POLLING_INTERVAL_S}}
    if kind == "amqp":
        if longest_task_s > RABBITMQ_CONSUMER_TIMEOUT_S * ACK_TIMEOUT_MARGIN:
            log.warning("a provider call may last %.0f s: make sure RabbitMQ's consumer_timeout (default %d s) is "
                        "well above it, or a channel whose task runs that long is closed and its messages "
                        "delivered again", longest_task_s, RABBITMQ_CONSUMER_TIMEOUT_S)
        return {
            # a quorum queue: durable, replicated, every message on disk; no global QoS (Celery detects the type
            # and sets the prefetch per consumer), no message priorities, no ETA (the pipeline uses none)
            "task_default_queue_type": "quorum",
            "worker_detect_quorum_queues": True,
            "task_default_delivery_mode": "persistent",
            # a publish returns once the broker has the message (on disk, replicated): a failed or nacked
            # publish raises, and the dispatcher puts the items back to pending
            "broker_transport_options": {"confirm_publish": True},
            "worker_consumer": AMQP_CONSUMER,
        }
    return {"broker_transport_options": {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}}
