"""The broker-specific Celery settings (pipeline.brokers) and broker_url validation; the same settings on a
real RabbitMQ are in tests/integration/test_rabbitmq.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.brokers import (
    REDIS_VISIBILITY_TIMEOUT_S,
    broker_kind,
    celery_conf,
)
from pipeline.cli import app
from pipeline.config import load_settings
from pipeline.errors import InputError


@pytest.mark.parametrize(("url", "kind"), [
    ("memory://", "memory"), ("memory:", "memory"),
    ("redis://localhost:6379/0", "redis"), ("rediss://h:6380/0", "redis"), ("sentinel://h:26379", "redis"),
    ("amqp://guest:guest@localhost:5672//", "amqp"), ("AMQPS://u:p@h/v", "amqp"), ("pyamqp://h", "amqp"),
    ("sqs://", None), ("kafka://h:9092", None), ("localhost:6379", None), ("", None),
])
def test_broker_kind(url: str, kind: str | None) -> None:
    assert broker_kind(url) == kind


def test_redis_keeps_its_visibility_timeout_and_nothing_of_rabbitmq() -> None:
    conf = celery_conf("redis://localhost:6379/0")
    assert conf == {"broker_transport_options": {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}}


def test_memory_polls_often() -> None:
    assert celery_conf("memory://")["broker_transport_options"]["polling_interval"] <= 0.05


def test_rabbitmq_quorum_queue_confirms_and_no_visibility_timeout() -> None:
    conf = celery_conf("amqp://guest:guest@localhost:5672/pipeline")
    assert conf["task_default_queue_type"] == "quorum"
    assert conf["worker_detect_quorum_queues"] is True  # prefetch per consumer: quorum queues refuse global QoS
    assert conf["task_default_delivery_mode"] == "persistent"
    assert conf["broker_transport_options"] == {"confirm_publish": True}  # no visibility_timeout: a Redis notion
    assert conf["worker_consumer"] == "pipeline.amqp_consumer:Consumer"


def test_the_amqp_consumer_leaves_out_only_native_delayed_delivery() -> None:
    from celery.worker.consumer import Consumer as CeleryConsumer

    from pipeline.amqp_consumer import DELAYED_DELIVERY_STEP, Consumer

    celery_steps = list(CeleryConsumer.Blueprint.default_steps)
    assert DELAYED_DELIVERY_STEP in celery_steps  # the step exists in this Celery: leaving it out means something
    assert list(Consumer.Blueprint.default_steps) == [s for s in celery_steps if s != DELAYED_DELIVERY_STEP]


def test_a_provider_call_near_rabbitmqs_ack_timeout_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.brokers"):
        celery_conf("amqp://h//", longest_task_s=1200)  # google-flex's timeout_s: within 30 min
        assert not caplog.records
        celery_conf("amqp://h//", longest_task_s=3600)
        celery_conf("redis://h/0", longest_task_s=3600)  # Redis has no ack timeout
    assert len(caplog.records) == 1 and "consumer_timeout" in caplog.records[0].getMessage()


def test_settings_accept_rabbitmq_and_refuse_unknown_brokers_without_echoing_them() -> None:
    assert load_settings(env={"PIPELINE_BROKER_URL": "amqp://u:p@rabbit:5672/prod"}).broker_url.startswith("amqp")
    with pytest.raises(InputError) as e:
        load_settings(env={"PIPELINE_BROKER_URL": "kafka://user:s3cret-pass@host:9092"})
    assert "broker_url" in str(e.value) and "amqp://" in str(e.value)
    assert "s3cret-pass" not in str(e.value)


def test_bad_broker_url_in_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("broker_url: rabbitmq://localhost:5672\n")
    res = CliRunner().invoke(app, ["providers", "--config", str(cfg)])
    assert res.exit_code == 2 and "broker_url" in res.output
