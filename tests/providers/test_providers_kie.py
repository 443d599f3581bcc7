"""KieProvider's behaviour over a stand-in for api.kie.ai (httpx.MockTransport) on a fake clock: the growing
poll interval, the deadline, resume without a second task, passing faults, downloads, failure codes."""

from __future__ import annotations

import itertools
from decimal import Decimal

import httpx
import pytest

from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
)
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.kie_wire import CREATE_PATH, RECORD_PATH
from tests.providers.kie_helpers import (
    FakeTime,
    KieStub,
    capture,
    ok_created,
    pending,
    provider,
    reply,
    succeeded,
)
from tests.providers.provider_wire import KEY, assert_no_key, image_bytes, sized

REQ = ImageRequest("a mug on marble", "1K", "1:1")
TASK = "task_nano-banana-pro_1765178625768"


def failed(code: str, msg: str) -> httpx.Response:
    return reply(capture("record-info.fail-500"), replace={"failCode": code, "failMsg": msg})


def test_polls_with_a_growing_interval_up_to_ten_seconds() -> None:
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, *[pending()] * 6, succeeded())
    clock = FakeTime()
    saved: list[str] = []
    result = provider(stub, clock).generate(REQ, CallHooks(submitted=saved.append))
    assert saved == [TASK] and result.remote_id == TASK
    assert clock.sleeps == [2.0, 3.0, 4.5, 6.75, 10.0, 10.0, 10.0]
    assert len(stub.sent(CREATE_PATH)) == 1 and len(stub.sent(RECORD_PATH)) == 7


def test_the_deadline_is_a_maybe_billed_timeout_with_the_task_id_and_one_create() -> None:
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, pending("queuing"))
    clock = FakeTime()
    saved: list[str] = []
    with pytest.raises(ProviderTimeout) as info:
        provider(stub, clock, timeout_s=60).generate(REQ, CallHooks(submitted=saved.append))
    err = info.value
    assert err.maybe_billed and err.remote_id == TASK == saved[0] and err.error_class == "timeout"
    assert sum(clock.sleeps) == pytest.approx(60.0)
    assert len(stub.sent(CREATE_PATH)) == 1
    assert_no_key(err)


def test_resume_polls_the_same_task_and_never_creates() -> None:
    stub = KieStub().on(RECORD_PATH, pending(), succeeded())
    result = provider(stub).resume(TASK, REQ)
    assert result.remote_id == TASK and result.data == stub.image
    assert not stub.sent(CREATE_PATH) and [r.url.params["taskId"] for r in stub.sent(RECORD_PATH)] == [TASK] * 2


def test_passing_poll_faults_are_waited_out() -> None:
    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    stub = KieStub().on(CREATE_PATH, ok_created()).on(
        RECORD_PATH, dropped, reply(capture("create-task.error-500.http-200")),
        reply(capture("create-task.error-455.http-status")), httpx.Response(502, text="<html>bad gateway</html>"),
        reply(capture("record-info.error-429")), succeeded())
    clock = FakeTime()
    assert provider(stub, clock).generate(REQ).remote_id == TASK
    assert len(stub.sent(RECORD_PATH)) == 6 and 10.0 in clock.sleeps  # the 429 waits Kie's 10 s window


def test_create_read_timeout_is_maybe_billed_without_an_id() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    saved: list[str] = []
    with pytest.raises(ProviderTimeout) as info:
        provider(KieStub().on(CREATE_PATH, slow)).generate(REQ, CallHooks(submitted=saved.append))
    assert info.value.maybe_billed and info.value.remote_id is None and saved == []


def test_create_answer_without_task_id_is_malformed_and_maybe_billed() -> None:
    stub = KieStub().on(CREATE_PATH, httpx.Response(200, json={"code": 200, "msg": "success", "data": {}}))
    with pytest.raises(ProviderUnavailable) as info:
        provider(stub).generate(REQ)
    assert info.value.error_class == "malformed" and info.value.maybe_billed


def test_a_download_that_fails_is_tried_again_before_giving_up() -> None:
    png = sized("1:1", "1K")
    answers = [httpx.Response(503), httpx.Response(503), httpx.Response(200, content=png)]

    def cdn(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, succeeded())
    transport = httpx.MockTransport(lambda r: cdn(r) if r.url.host == "tempfile.test" else stub(r))
    p = provider(stub)
    p._client = httpx.Client(transport=transport)
    assert p.generate(REQ).data == png


def test_a_download_that_keeps_failing_keeps_the_task_id_and_the_cost() -> None:
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, succeeded())
    transport = httpx.MockTransport(lambda r: httpx.Response(404) if r.url.host == "tempfile.test" else stub(r))
    p = provider(stub)
    p._client = httpx.Client(transport=transport)
    with pytest.raises(ProviderUnavailable) as info:
        p.generate(REQ)
    err = info.value
    assert err.error_class == "download" and err.remote_id == TASK and err.maybe_billed
    assert err.cost_usd == Decimal("0.09")


def test_a_bad_image_is_billed() -> None:
    stub = KieStub(image=image_bytes(300, 500)).on(CREATE_PATH, ok_created()).on(RECORD_PATH, succeeded())
    with pytest.raises(BadImage) as info:
        provider(stub).generate(REQ)
    assert info.value.maybe_billed and info.value.cost_usd == Decimal("0.09")


def test_success_without_result_urls_is_malformed_and_billed() -> None:
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, httpx.Response(
        200, json={"code": 200, "msg": "success", "data": {"taskId": TASK, "state": "success", "resultJson": "{"}}))
    with pytest.raises(ProviderUnavailable) as info:
        provider(stub).generate(REQ)
    assert info.value.error_class == "malformed" and info.value.cost_usd == Decimal("0.09")


@pytest.mark.parametrize(("code", "msg", "cls", "error_class"), [
    ("500", "Internal server error", ProviderUnavailable, "task_failed"),
    ("501", "Generation failed", ProviderUnavailable, "task_failed"),
    ("455", "maintenance", ProviderUnavailable, "task_failed"),
    ("505", "feature disabled", ProviderUnavailable, "task_failed"),
    ("422", "Invalid prompt: prompt contains prohibited content", ContentBlocked, "content_blocked"),
    ("422", "image_input[0] could not be downloaded", InvalidRequest, "invalid_request"),
    ("", "something went wrong", InvalidRequest, "invalid_request"),  # no code: not known to pass, terminal
    ("402", "credits", QuotaExhausted, "insufficient_quota"),
    ("401", "key", AuthError, "auth"),
])
def test_a_failed_task_is_retried_only_for_a_transient_code(code: str, msg: str, cls: type,
                                                            error_class: str) -> None:
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, failed(code, msg))
    with pytest.raises(ProviderError) as info:
        provider(stub).generate(REQ)
    err = info.value
    assert type(err) is cls and err.error_class == error_class and msg[:20] in err.message
    assert err.retryable == (error_class == "task_failed" or cls in (QuotaExhausted, AuthError))


def test_references_without_a_host_fail_before_anything_is_sent() -> None:
    stub = KieStub()
    ref = Reference(data=image_bytes(8, 8), mime_type="image/png", sha256="r")
    with pytest.raises(InvalidRequest, match="S3 storage or upload_base_url"):
        provider(stub).generate(ImageRequest("x", "1K", "1:1", references=(ref,)))
    assert stub.requests == []


def test_the_key_never_leaks_from_an_error_body() -> None:
    stub = KieStub().on(CREATE_PATH, httpx.Response(401, json={"code": 401, "msg": f"bad key {KEY}"}))
    with pytest.raises(AuthError) as info:
        provider(stub).generate(REQ)
    assert_no_key(info.value)
    assert "***" in info.value.message


def test_with_callbacks_the_inbox_is_read_every_second_and_polling_slows_to_30s() -> None:
    class EmptyInbox:
        reads = 0

        def open(self, provider: str) -> str:
            return "t" * 43

        def bind(self, token: str, remote_id: str) -> None:
            pass

        def payload(self, provider: str, remote_id: str) -> None:
            EmptyInbox.reads += 1

    clock = FakeTime()
    polled_at: list[float] = []
    answers = [pending()] * 9 + [succeeded()]

    def record(request: httpx.Request) -> httpx.Response:
        polled_at.append(clock.t)
        return answers.pop(0)

    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, record)
    provider(stub, clock, inbox=EmptyInbox(), timeout_s=600).generate(REQ)
    assert max(clock.sleeps) <= 1.0 and EmptyInbox.reads >= len(clock.sleeps)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(polled_at)]
    assert gaps == [3.0, 4.5, 6.75, 10.12, 15.19, 22.78, 30.0, 30.0, 30.0]  # the fallback, up to 30 s


def test_a_short_deadline_still_looks_once_at_the_deadline() -> None:
    stub = KieStub().on(CREATE_PATH, ok_created()).on(RECORD_PATH, succeeded())
    clock = FakeTime()
    assert provider(stub, clock, timeout_s=1.0).generate(REQ).remote_id == TASK
    assert clock.sleeps == [1.0] and len(stub.sent(RECORD_PATH)) == 1


def test_resume_looks_at_once() -> None:
    stub = KieStub().on(RECORD_PATH, succeeded())
    clock = FakeTime()
    provider(stub, clock).resume(TASK, REQ)
    assert clock.sleeps == []
