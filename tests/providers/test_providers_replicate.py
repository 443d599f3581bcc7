"""ReplicateProvider against captured Replicate bodies on httpx.MockTransport (PROVIDERS.md §6)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

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
    RateLimited,
)
from pipeline.providers.base import CallHooks, ImageRequest, Reference
from pipeline.providers.replicate import ReplicateProvider
from tests.providers.provider_wire import KEY, Recorder, assert_no_key, config, image_bytes, respond, sized

NOW = datetime(2026, 3, 1, 12, 0)
REQ = ImageRequest(prompt="a mug", resolution="1K", aspect_ratio="4:3")
PID = "gm3qorzdhgbfurvjtvhg6dckhu"
OUT = "https://replicate.delivery/xezq/out.png"


def prediction(status: str = "succeeded", output: Any = OUT, error: str | None = None) -> dict[str, Any]:
    return {
        "id": PID,
        "model": "google/nano-banana-pro",
        "version": "hidden",
        "input": {"prompt": "a mug", "resolution": "1K"},
        "logs": "",
        "output": output if status == "succeeded" else None,
        "error": error,
        "status": status,
        "data_removed": False,
        "created_at": "2025-12-01T16:19:34.765994Z",
        "metrics": {"predict_time": 9.5, "total_time": 10.1},
        "urls": {
            "get": f"https://api.replicate.com/v1/predictions/{PID}",
            "cancel": f"https://api.replicate.com/v1/predictions/{PID}/cancel",
        },
    }


class Fake:
    """A fake clock for polling: sleep advances monotonic time, nothing waits."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    def monotonic(self) -> float:
        return self.t


def routed(create: Any, polls: list[Any] | None = None, image: bytes | None = None) -> Recorder:
    """POST answers `create`; GETs of the prediction answer `polls` in turn (the last repeats); the output URL
    serves `image`."""
    polls = list(polls or [])
    png = image if image is not None else sized("4:3")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "replicate.delivery":
            return httpx.Response(200, content=png, headers={"content-type": "image/png"})
        if request.method == "POST":
            if isinstance(create, Exception):
                raise create
            return create
        nxt = polls.pop(0) if len(polls) > 1 else polls[0]
        if isinstance(nxt, Exception):
            raise nxt
        return nxt

    return Recorder([answer])


def provider(rec: Recorder, fake: Fake | None = None, **over: Any) -> ReplicateProvider:
    fake = fake or Fake()
    return ReplicateProvider(
        config("replicate", **over),
        KEY,
        rec.client(),
        clock=lambda: NOW,
        sleep=fake.sleep,
        monotonic=fake.monotonic,
    )


def fail(call: Callable[[], Any]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call()
    assert_no_key(info.value)
    assert info.value.provider == "replicate"
    return info.value


def posts(rec: Recorder) -> int:
    return sum(r.method == "POST" for r in rec.requests)


def test_sync_success_wire_and_cost() -> None:
    rec = routed(respond(201, prediction()))
    seen: list[str] = []
    ref = Reference(data=image_bytes(4, 4), mime_type="image/png", sha256="r")
    req = ImageRequest("a mug", "1K", "4:3", output_format="jpeg", references=(ref,))
    result = provider(rec).generate(req, CallHooks(submitted=seen.append))
    assert seen == [PID] and result.remote_id == PID
    assert (result.cost_usd, result.cost_source) == (Decimal("0.036"), "price_table")
    create = rec.requests[0]
    assert create.url == "https://provider.test/v1/models/google/nano-banana-pro/predictions"
    assert create.headers["prefer"] == "wait=60" and create.headers["authorization"] == f"Bearer {KEY}"
    inp = rec.json_body(0)["input"]
    assert inp["prompt"] == "a mug" and inp["aspect_ratio"] == "4:3" and inp["resolution"] == "1K"
    assert inp["output_format"] == "jpg" and inp["image_input"][0].startswith("data:image/png;base64,")
    assert "authorization" not in rec.requests[1].headers  # the output download does not carry the key


def test_unfinished_prediction_is_polled_by_id_saved_first() -> None:
    events: list[str] = []
    rec = routed(
        respond(201, prediction("starting")),
        [respond(200, prediction("processing")), respond(200, prediction("succeeded"))],
    )
    fake = Fake()
    orig = fake.sleep
    fake.sleep = lambda s: (events.append("sleep"), orig(s))  # type: ignore[method-assign]
    result = provider(rec, fake).generate(REQ, CallHooks(submitted=lambda rid: events.append(f"saved {rid}")))
    assert result.remote_id == PID and events[0] == f"saved {PID}"
    assert posts(rec) == 1
    assert [str(r.url) for r in rec.requests if r.method == "GET"][:2] == [
        f"https://provider.test/v1/predictions/{PID}"
    ] * 2
    assert all(1.0 <= s <= 2.0 for s in fake.sleeps)


def test_timeout_carries_remote_id_and_never_creates_twice() -> None:
    rec = routed(respond(201, prediction("starting")), [respond(200, prediction("processing"))])
    fake = Fake()
    saved: list[str] = []
    err = fail(lambda: provider(rec, fake, timeout_s=10).generate(REQ, CallHooks(submitted=saved.append)))
    assert type(err) is ProviderTimeout and err.maybe_billed and err.remote_id == PID
    assert saved == [PID] and posts(rec) == 1
    assert 9.0 <= fake.t <= 10.0 + 1e-9


def test_resume_polls_without_creating() -> None:
    rec = routed(respond(500, {}), [respond(200, prediction("processing")), respond(200, prediction())])
    result = provider(rec).resume(PID, REQ)
    assert result.remote_id == PID and posts(rec) == 0


def test_poll_survives_passing_faults() -> None:
    rec = routed(
        respond(201, prediction("starting")),
        [
            respond(503, {"detail": "unavailable", "status": 503}),
            httpx.ConnectError("refused"),
            respond(429, {"detail": "Request was throttled.", "status": 429, "retry_after": 1}),
            respond(200, prediction()),
        ],
    )
    assert provider(rec).generate(REQ).data and posts(rec) == 1


def test_poll_404_means_the_prediction_is_lost() -> None:
    rec = routed(
        respond(201, prediction("starting")), [respond(404, {"detail": "Not found.", "status": 404})]
    )
    err = fail(lambda: provider(rec).generate(REQ))
    assert type(err) is ProviderUnavailable and err.remote_id is None and err.maybe_billed


@pytest.mark.parametrize(
    "error",
    [
        "The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
        "NSFW content detected",
        "Blocked by safety filter",
    ],
)
def test_failed_with_safety_text_is_blocked(error: str) -> None:
    rec = routed(respond(201, prediction("failed", error=error)))
    err = fail(lambda: provider(rec).generate(REQ))
    assert type(err) is ContentBlocked and err.message == f"image blocked: {error}" and not err.retryable


def test_failed_without_image_is_a_refusal() -> None:
    error = "Prediction failed: the model returned no image. Please try again with a different prompt."
    err = fail(lambda: provider(routed(respond(201, prediction("failed", error=error)))).generate(REQ))
    assert type(err) is ContentBlocked and err.message == f"no image: {error}"


def test_failed_other_and_canceled_are_retryable() -> None:
    err = fail(
        lambda: provider(routed(respond(201, prediction("failed", error="CUDA out of memory")))).generate(REQ)
    )
    assert type(err) is ProviderUnavailable and err.error_class == "prediction_failed"
    err = fail(lambda: provider(routed(respond(201, prediction("canceled")))).generate(REQ))
    assert type(err) is ProviderUnavailable and err.error_class == "canceled"


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (
            {
                "detail": "Request was throttled. Your rate limit resets in ~30s.",
                "status": 429,
                "retry_after": 5,
            },
            {},
            5.0,
        ),
        ({"detail": "Request was throttled. Your rate limit resets in ~30s."}, {}, 30.0),
        ({"detail": "throttled"}, {"retry-after": "12"}, 12.0),
        ({"detail": "throttled"}, {}, None),
    ],
)
def test_429_on_create(body: dict[str, Any], headers: dict[str, str], expected: float | None) -> None:
    rec = routed(respond(429, body, headers=headers))
    saved: list[str] = []
    err = fail(lambda: provider(rec).generate(REQ, CallHooks(submitted=saved.append)))
    assert type(err) is RateLimited and err.retry_after_s == expected and saved == []


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthError),
        (403, AuthError),
        (402, QuotaExhausted),
        (422, InvalidRequest),
        (400, InvalidRequest),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
    ],
)
def test_create_status_classes(status: int, cls: type) -> None:
    body = {"type": "about:blank", "title": "err", "status": status, "detail": f"detail {status} for {KEY}"}
    err = fail(lambda: provider(routed(respond(status, body))).generate(REQ))
    assert type(err) is cls and err.http_status == status


def test_create_read_timeout_has_no_id_but_is_maybe_billed() -> None:
    saved: list[str] = []
    err = fail(
        lambda: provider(routed(httpx.ReadTimeout("slow"))).generate(REQ, CallHooks(submitted=saved.append))
    )
    assert type(err) is ProviderTimeout and err.maybe_billed and err.remote_id is None and saved == []


def test_failed_download_keeps_remote_id_for_resume() -> None:
    calls = {"n": 0}
    png = sized("4:3")

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "replicate.delivery":
            calls["n"] += 1
            return httpx.Response(503 if calls["n"] == 1 else 200, content=png)
        return respond(201, prediction()) if request.method == "POST" else respond(200, prediction())

    rec = Recorder([answer])
    p = provider(rec)
    err = fail(lambda: p.generate(REQ))
    assert type(err) is ProviderUnavailable and err.remote_id == PID and err.cost_usd == Decimal("0.036")
    assert p.resume(PID, REQ).data == png and posts(rec) == 1


def test_bad_image_is_billed_and_not_resumable() -> None:
    err = fail(lambda: provider(routed(respond(201, prediction()), image=b"not an image")).generate(REQ))
    assert (
        type(err) is BadImage
        and err.maybe_billed
        and err.remote_id is None
        and err.cost_usd == Decimal("0.036")
    )
