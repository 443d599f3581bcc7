"""KieProvider against the sandbox over loopback HTTP: task, poll and download, references by Kie's upload API
and by presigned S3 URL (moto) which the sandbox fetches, timeout then resume without a second create, every
error class whether Kie puts it in the HTTP status or in an HTTP 200 envelope, recordInfo's documented 10 queries
a second, cost equal to the ledger."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.errors import (
    AuthError,
    BadImage,
    ContentBlocked,
    DailyQuotaExceeded,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pipeline.providers.base import SIZES, CallHooks, ImageRequest, Reference
from pipeline.providers.images import validate_image
from pipeline.providers.kie import KieProvider
from pipeline.providers.kie_refs import KieUploads, PresignedReferences
from pipeline.storage.factory import open_storage
from tests.providers.corpus import shape_problems
from tests.providers.kie_helpers import capture
from tests.providers.provider_wire import KEY, config, expect_error, image_bytes


def kie(sandbox: Any, http: httpx.Client, name: str = "kie", **over: Any) -> KieProvider:
    base = f"{sandbox.url}/p/{name}"
    refs = KieUploads(http, base, KEY, provider="kie")
    return KieProvider(config("kie", base_url=base, **over), KEY, http, references=refs, poll_start_s=0.1)


def account(sandbox: Any, name: str = "kie") -> dict[str, Any]:
    empty = {"billed_images": 0, "billed_usd": "0", "generate_requests": 0, "requests": 0, "by_status": {}}
    return dict(sandbox.ledger()["by_provider"].get(name, empty))


def ref(w: int, h: int) -> Reference:
    data = image_bytes(w, h)
    return Reference(data=data, mime_type="image/png", sha256=hashlib.sha256(data).hexdigest())


def fail(p: KieProvider, prompt: str) -> ProviderError:
    return expect_error(p, ImageRequest(prompt, "1K", "1:1"))


def test_success_saves_the_task_id_and_costs_what_the_ledger_bills(sandbox: Any, http: httpx.Client) -> None:
    saved: list[str] = []
    result = kie(sandbox, http).generate(ImageRequest("a mug", "2K", "16:9"), CallHooks(submitted=saved.append))
    assert saved == [result.remote_id] and result.remote_id and result.remote_id.startswith("task_")
    assert validate_image(result.data, result.mime_type, "2K", "16:9") == SIZES["16:9"]["2K"]
    acc = account(sandbox)
    assert (result.cost_usd, acc["billed_images"], Decimal(acc["billed_usd"])) == (Decimal("0.09"), 1, Decimal("0.09"))
    assert acc["generate_requests"] == 1


def test_references_go_through_kies_upload_api(sandbox: Any, http: httpx.Client) -> None:
    refs = (ref(40, 50), ref(64, 64))
    result = kie(sandbox, http).generate(ImageRequest("use the product", "1K", "4:5", "jpeg", refs))
    assert result.mime_type == "image/jpeg" and validate_image(result.data, "image/jpeg", "1K", "4:5")
    assert account(sandbox)["requests"] >= 2 + 1  # two uploads, one task, its polls


def test_references_by_presigned_s3_url_are_fetched_by_the_provider(sandbox: Any, http: httpx.Client,
                                                                    s3_bucket: tuple[str, str],
                                                                    s3_env: dict[str, str]) -> None:
    storage = open_storage(f"s3://{s3_bucket[1]}/p", env=s3_env)
    presigned = PresignedReferences(storage, 600, provider="kie")
    p = KieProvider(config("kie", base_url=f"{sandbox.url}/p/kie"), KEY, http, references=presigned,
                    poll_start_s=0.1)
    r = ref(80, 64)
    result = p.generate(ImageRequest("the product on marble", "1K", "5:4", references=(r,)))
    assert validate_image(result.data, result.mime_type, "1K", "5:4")
    assert storage.exists(f"provider-references/{r.sha256}.png")
    again = presigned.url_for(r)
    assert again == presigned.url_for(r) and http.get(again).content == r.data  # reused, and it works


def test_hang_times_out_with_the_task_id_then_resume_pays_once(sandbox: Any, http: httpx.Client) -> None:
    saved: list[str] = []
    req = ImageRequest("mug [sandbox:hang]", "1K", "1:1")
    with pytest.raises(ProviderTimeout) as info:
        kie(sandbox, http, timeout_s=1.0).generate(req, CallHooks(submitted=saved.append))
    err = info.value
    assert err.maybe_billed and err.remote_id and saved == [err.remote_id]
    result = kie(sandbox, http, timeout_s=15.0).resume(err.remote_id, req)
    assert result.remote_id == err.remote_id and result.data
    acc = account(sandbox)
    assert acc["generate_requests"] == 1 and acc["billed_images"] == 1


ERRORS = [
    ("[sandbox:auth]", AuthError, False),
    ("[sandbox:no-credit]", QuotaExhausted, False),
    ("[sandbox:429]", RateLimited, False),
    ("[sandbox:429-daily]", DailyQuotaExceeded, False),
    ("[sandbox:500]", ProviderUnavailable, False),
    ("[sandbox:503]", ProviderUnavailable, False),
    ("[sandbox:block-prompt]", ContentBlocked, False),
    ("[sandbox:block-image]", ContentBlocked, False),
    ("[sandbox:refuse]", ProviderUnavailable, False),
    ("[sandbox:malformed]", BadImage, True),
    ("[sandbox:truncated]", BadImage, True),
    ("[sandbox:wrong-size]", BadImage, True),
]


@pytest.mark.parametrize("name", ["kie", "kie-200"])
@pytest.mark.parametrize(("trigger", "cls", "billed"), ERRORS)
def test_every_error_class_in_either_transport(sandbox: Any, http: httpx.Client, name: str, trigger: str,
                                               cls: type, billed: bool) -> None:
    err = fail(kie(sandbox, http, name), f"mug {trigger}")
    assert type(err) is cls, (err, err.message)
    if cls is RateLimited:
        assert err.retry_after_s == 10.0
    acc = account(sandbox, name)
    assert acc["billed_images"] == int(billed) and err.maybe_billed == billed
    if billed:
        assert err.cost_usd == Decimal("0.09") == Decimal(acc["billed_usd"])
    if name == "kie-200":  # every error came inside an HTTP 200 envelope
        assert set(acc["by_status"]) == {"200"}


def test_the_real_limit(sandbox: Any, http: httpx.Client) -> None:
    p = kie(sandbox, http, "kie-tight")
    assert p.generate(ImageRequest("one", "1K", "1:1")).data
    err = fail(p, "two")
    assert isinstance(err, RateLimited) and err.http_status == 429 and err.retry_after_s == 10.0


def test_record_info_is_limited_to_ten_queries_a_second_and_a_poller_waits_it_out(
        sandbox: Any, http: httpx.Client) -> None:
    p = kie(sandbox, http)
    task = p.generate(ImageRequest("mug", "1K", "1:1"), CallHooks()).remote_id
    url, headers = f"{sandbox.url}/p/kie/api/v1/jobs/recordInfo", {"Authorization": f"Bearer {KEY}"}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:  # one burst, faster than any refill
        answers = list(pool.map(lambda _: http.get(url, params={"taskId": task}, headers=headers), range(40)))
    elapsed = time.monotonic() - started
    ok = sum(a.status_code == 200 for a in answers)
    limited = [a for a in answers if a.status_code == 429]
    assert ok + len(limited) == 40 and limited  # 10 a second, as Kie documents
    assert ok <= 10 + 10 * elapsed + 1
    documented = capture("record-info.error-429")
    assert limited[0].status_code == documented.status and shape_problems(limited[0].json(), documented.body) == []
    assert limited[0].json()["msg"] == documented.body["msg"]
    # a poller that runs into the limit waits it out: the task still ends in one image, paid once
    for _ in range(10):
        http.get(url, params={"taskId": task}, headers=headers)
    assert p.generate(ImageRequest("cup", "1K", "1:1"), CallHooks()).data
    assert account(sandbox)["billed_images"] == 2 and account(sandbox)["generate_requests"] == 2


def test_a_wrong_key(sandbox: Any, http: httpx.Client) -> None:
    err = fail(kie(sandbox, http, "kie-keyed"), "mug")
    assert isinstance(err, AuthError) and err.http_status == 401
