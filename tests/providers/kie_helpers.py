"""Helpers for the Kie.ai adapter tests: a fake clock that sleeps instantly, a path router standing in for
api.kie.ai (answers taken from the capture corpus) and the adapter built on both."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from pipeline.providers.kie import CallbackInbox, Callbacks, KieProvider
from pipeline.providers.kie_refs import ReferenceHost
from tests.providers.corpus import Capture, captures
from tests.providers.provider_wire import KEY, config, sized

#: where the result image lives in the tests (substituted for {{IMAGE_URL}} in the captures)
IMAGE_URL = "https://tempfile.test/result/out.png"
NOW = datetime(2026, 11, 29, 12, 0, 0)


@functools.cache
def square_1k() -> bytes:
    return sized("1:1", "1K")


def kie_captures(kind: str | None = None) -> list[Capture]:
    return captures(provider="kie", kind=kind)


def capture(name: str) -> Capture:
    found = [c for c in kie_captures() if c.path.stem == name]
    assert found, name
    return found[0]


def body(c: Capture) -> Any:
    return c.body_with(IMAGE_URL=IMAGE_URL)


@dataclass
class FakeTime:
    """monotonic() and sleep(): sleeping moves the clock at once and is recorded."""

    t: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


@dataclass
class KieStub:
    """Routes requests by path. Each route answers from its queue; the last answer repeats."""

    routes: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    image: bytes = field(default_factory=lambda: square_1k())

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if request.url.host == "tempfile.test":
            return httpx.Response(200, content=self.image, headers={"content-type": "image/png"})
        queue = self.routes.get(request.url.path)
        assert queue, f"unexpected request {request.method} {request.url}"
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request) if callable(answer) else answer

    def on(self, path: str, *answers: Answer) -> KieStub:
        self.routes.setdefault(path, []).extend(answers)
        return self

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def sent(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]

    def json_sent(self, path: str, i: int = 0) -> Any:
        return json.loads(self.sent(path)[i].content)


def reply(c: Capture, status: int | None = None, *, replace: dict[str, Any] | None = None) -> httpx.Response:
    """The capture's documented answer (its status, its body with placeholders filled, `replace` merged into
    `data` when given)."""
    b = copy.deepcopy(body(c))
    if replace and isinstance(b, dict) and isinstance(b.get("data"), dict):
        b["data"].update(replace)
    return httpx.Response(status if status is not None else int(c.status or 200), json=b, headers=dict(c.headers))


def ok_created(task_id: str = "task_nano-banana-pro_1765178625768") -> httpx.Response:
    return reply(capture("create-task.ok"), replace={"taskId": task_id})


def succeeded(task_id: str = "task_nano-banana-pro_1765178625768") -> httpx.Response:
    return reply(capture("record-info.success"), replace={"taskId": task_id})


def pending(state: str = "generating", task_id: str = "task_nano-banana-pro_1765178625768") -> httpx.Response:
    return reply(capture(f"record-info.{state}"), replace={"taskId": task_id})


def provider(stub: KieStub, clock: FakeTime | None = None, *, references: ReferenceHost | None = None,
             inbox: CallbackInbox | None = None, **over: Any) -> KieProvider:
    clock = clock or FakeTime()
    cfg = config("kie", **over)
    callbacks = Callbacks(inbox, "https://hooks.test/pipeline") if inbox is not None else None
    return KieProvider(cfg, KEY, stub.client(), clock=lambda: NOW,
                       references=references, callbacks=callbacks, sleep=clock.sleep, monotonic=clock.monotonic)
