"""`pipeline callbacks` over real HTTP, on SQLite and Postgres: the token is the credential, a repeated or forged
delivery is harmless, and a Kie task whose callback arrives is finished without polling recordInfo."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.callbacks import MAX_BODY_BYTES, SqlCallbackInbox, build_callback_app
from pipeline.db.migrate import upgrade
from pipeline.db.models import TaskCallback
from pipeline.db.session import make_engine, make_sessionmaker
from pipeline.providers.base import ImageRequest
from pipeline.providers.kie import Callbacks, KieProvider
from tests.providers.asgi import serve
from tests.providers.corpus import captures, shape_problems
from tests.providers.provider_wire import KEY, config


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'cb.db'}" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def receiver(sessions: sessionmaker[Session]) -> Iterator[tuple[str, SqlCallbackInbox]]:
    inbox = SqlCallbackInbox(sessions)
    with serve(build_callback_app(inbox)) as url:
        yield url, inbox


def documented_body(task_id: str) -> dict[str, Any]:
    (cap,) = [c for c in captures(provider="kie", kind="callback")]
    body: dict[str, Any] = cap.body_with(IMAGE_URL="https://tempfile.test/out.png")
    body["data"]["taskId"] = task_id
    return body


def post(url: str, provider: str, token: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/callbacks/{provider}/{token}", content=content,
                      headers={"Content-Type": "application/json"}, **kw)


def test_a_delivery_is_stored_once_and_repeats_only_count(receiver: tuple[str, SqlCallbackInbox],
                                                         sessions: sessionmaker[Session]) -> None:
    url, inbox = receiver
    token = inbox.open("kie")
    inbox.bind(token, "task_1")
    first = post(url, "kie", token, documented_body("task_1"))
    assert first.status_code == 200 and first.json() == {"ok": True, "result": "stored"}
    changed = documented_body("task_1")
    changed["data"]["state"] = "fail"
    again = post(url, "kie", token, changed)
    assert again.status_code == 200 and again.json()["result"] == "duplicate"
    stored = inbox.payload("kie", "task_1")
    assert stored == documented_body("task_1")  # the first delivery, untouched by the repeat
    with sessions() as s:
        row = s.scalar(select(TaskCallback).where(TaskCallback.token == token))
        assert row is not None and row.deliveries == 2 and row.received_at is not None


def test_forged_and_broken_deliveries_store_nothing(receiver: tuple[str, SqlCallbackInbox]) -> None:
    url, inbox = receiver
    token = inbox.open("kie")
    inbox.bind(token, "task_mine")
    guessed = "A" * 43
    assert post(url, "kie", guessed, documented_body("task_mine")).status_code == 404  # unknown token
    assert post(url, "kie", "short", documented_body("task_mine")).status_code == 404  # not a token at all
    assert post(url, "replicate", token, documented_body("task_mine")).status_code == 404  # another provider
    other = post(url, "kie", token, documented_body("task_someone_else"))
    assert other.status_code == 409 and other.json()["result"] == "callback for another task"
    assert post(url, "kie", token, b"{not json").status_code == 400
    assert post(url, "kie", token, b"[1, 2]").status_code == 400
    assert post(url, "kie", token, b"{" + b" " * MAX_BODY_BYTES + b"}").status_code == 413
    assert inbox.payload("kie", "task_mine") is None
    assert httpx.get(f"{url}/health").json() == {"ok": True}


def test_a_delivery_before_the_task_id_is_bound_binds_it(receiver: tuple[str, SqlCallbackInbox]) -> None:
    url, inbox = receiver
    token = inbox.open("kie")  # the worker died between createTask and bind
    assert post(url, "kie", token, documented_body("task_early")).status_code == 200
    assert inbox.payload("kie", "task_early") is not None
    inbox.bind(token, "task_other")  # a late bind never rebinds
    assert inbox.payload("kie", "task_other") is None


def test_a_kie_task_finishes_by_its_callback_without_polling(receiver: tuple[str, SqlCallbackInbox],
                                                           make_kie_sandbox: Any) -> None:
    url, inbox = receiver
    sandbox = make_kie_sandbox()
    http = httpx.Client(timeout=30)
    # polling would first look after 20 s: the callback (through the sandbox's POST) arrives long before
    p = KieProvider(config("kie", base_url=f"{sandbox.url}/p/kie"), KEY, http,
                    callbacks=Callbacks(inbox, url), poll_start_s=20.0)
    result = p.generate(ImageRequest("a mug", "1K", "1:1"))
    acc = sandbox.ledger()["by_provider"]["kie"]
    assert acc["requests"] == 1 and acc["generate_requests"] == 1  # createTask only: no recordInfo
    stored = inbox.payload("kie", str(result.remote_id))
    (cap,) = captures(provider="kie", kind="callback")
    assert stored is not None and shape_problems(stored, cap.body_with(IMAGE_URL="https://x.test/i.png")) == []
    http.close()


@pytest.fixture
def make_kie_sandbox() -> Iterator[Any]:
    from pipeline.sandbox.server import start_sandbox

    started: list[Any] = []

    def make() -> Any:
        server = start_sandbox({"providers": {"kie": {"protocol": "kie",
                                                      "price_per_image": {"1K": "0.09", "2K": "0.09"}}}})
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
