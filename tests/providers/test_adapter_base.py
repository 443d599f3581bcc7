"""HttpAdapter: the one place a provider call's HTTP happens (answer size cap, wall-clock deadline, key scrubbing,
transport-error translation) and the output guard on downloads."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from pipeline.errors import InputError, ProviderError, ProviderTimeout, ProviderUnavailable
from pipeline.providers.adapter import HttpAdapter
from tests.providers.provider_wire import KEY, Recorder, config


class SlowStream(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        for _ in range(5):
            time.sleep(0.05)
            yield b"x" * 10


def adapter(rec: Recorder, **kw: object) -> HttpAdapter:
    return HttpAdapter(config("google"), KEY, rec.client(), **kw)  # type: ignore[arg-type]


def test_answer_over_the_cap_is_cut_off_as_maybe_billed() -> None:
    rec = Recorder([httpx.Response(200, content=b"x" * 2000)])
    with pytest.raises(ProviderUnavailable) as info:
        adapter(rec).request("POST", "https://provider.test/x", max_bytes=1000)
    assert info.value.error_class == "malformed" and info.value.maybe_billed


def test_wall_clock_deadline_between_chunks() -> None:
    rec = Recorder([httpx.Response(200, stream=SlowStream())])
    with pytest.raises(ProviderTimeout) as info:
        adapter(rec).request("GET", "https://provider.test/x", deadline=time.monotonic() + 0.08)
    assert info.value.maybe_billed
    ok = adapter(Recorder([httpx.Response(200, stream=SlowStream())])).request("GET", "https://provider.test/x")
    assert ok.content == b"x" * 50


def test_transport_errors_are_translated_and_keys_scrubbed() -> None:
    rec = Recorder([httpx.ConnectError("refused")])
    a = adapter(rec)
    with pytest.raises(ProviderError) as info, a.scrubbing():
        try:
            a.request("GET", "https://provider.test/x")
        except ProviderError as e:
            e.message += f" key={KEY}"
            raise
    assert info.value.error_class == "connect" and KEY not in info.value.message


def test_download_on_another_host_passes_the_output_guard() -> None:
    seen: list[str] = []

    def guard(url: str) -> None:
        seen.append(url)
        if "evil" in url:
            raise InputError("refused address")

    rec = Recorder([httpx.Response(200, content=b"img", headers={"content-type": "image/png"})])
    a = adapter(rec, output_guard=guard)
    assert a.download("https://provider.test/own.png") == (b"img", "image/png")  # the provider's host: trusted
    assert a.download("https://cdn.example.com/a.png")[0] == b"img"
    with pytest.raises(ProviderUnavailable) as info:
        a.download("https://evil.example.com/a.png")
    assert "refused" in info.value.message and info.value.error_class == "download"
    assert seen == ["https://cdn.example.com/a.png", "https://evil.example.com/a.png"]
