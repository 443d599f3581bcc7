"""Kie.ai's Market task API for nano-banana-pro (docs.kie.ai/market/google/nano-banana-pro; wire: kie_wire).

One createTask per generate() call, never two. The task id goes to `hooks.submitted` as soon as the answer names
it, before any wait, so a crash or a timeout leaves it on the attempt and the next attempt calls `resume(id)`,
which polls the same task instead of paying for another. References become URLs first (kie_refs).

Waiting: recordInfo is polled with a growing interval (2 s, x1.5, up to 10 s: the docs advise 2-3 s at first and
5-10 s after 30 s) until `config.timeout_s` (the docs: stop after 10-15 minutes), then ProviderTimeout
(maybe billed, with the task id). With a public base URL (`public_base_url`), the task carries a callBackUrl with
an unguessable per-task token; `pipeline callbacks` stores what Kie posts there and the wait looks for it every
second, polling only as the fallback (up to every 30 s). A delivery for another task id is ignored.

Success: the first result URL is downloaded at once (it expires), size-limited, and checked like every image.
Kie bills per task at its price table; cost from `prices`. A download that keeps failing raises
ProviderUnavailable("download", maybe billed, with the task id).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig
from pipeline.errors import (
    BadImage,
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from pipeline.providers.base import CallHooks, ImageRequest, ImageResult
from pipeline.providers.http import (
    CONNECT_TIMEOUT_S,
    MAX_MESSAGE_CHARS,
    download,
    provider_base_url,
    scrub,
    translate_transport_error,
)
from pipeline.providers.images import image_mime, validate_image
from pipeline.providers.kie_refs import ReferenceHost
from pipeline.providers.kie_wire import (
    CREATE_PATH,
    RECORD_PATH,
    Record,
    envelope_code,
    envelope_error,
    fail_error,
    parse_record,
    task_body,
)
from pipeline.providers.pricing import PRICE_TABLE, require_price, table_cost

#: first wait before polling a new task, growth per poll, and the longest wait between polls
POLL_START_S = 2.0
POLL_GROWTH = 1.5
POLL_MAX_S = 10.0
#: with callbacks, polling is the fallback: the longest wait between polls, and how often the inbox is read
POLL_MAX_WITH_CALLBACKS_S = 30.0
INBOX_CHECK_S = 1.0
#: read timeouts of the API calls (createTask answers at once; the task runs after)
CREATE_TIMEOUT_S = 60.0
POLL_TIMEOUT_S = 30.0
#: downloads of a finished task's image before giving up (the URL stays valid; a new task would be paid again)
DOWNLOAD_TRIES = 3


class CallbackInbox(Protocol):
    """Where delivered callbacks wait for the adapter (pipeline.callbacks.SqlCallbackInbox)."""

    def open(self, provider: str) -> str:
        """A new unguessable token for one task's callback URL, registered before the task is created."""
        ...

    def bind(self, token: str, remote_id: str) -> None:
        """Record which task the token belongs to."""
        ...

    def payload(self, provider: str, remote_id: str) -> dict[str, Any] | None:
        """The body delivered for that task, if any."""
        ...


@dataclass(frozen=True)
class Callbacks:
    inbox: CallbackInbox
    #: public base URL of `pipeline callbacks`; the task's URL is <base>/callbacks/<provider>/<token>
    base_url: str

    def url(self, provider: str, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/callbacks/{quote(provider, safe='')}/{token}"


class KieProvider:
    """nano-banana-pro (or config.model) on Kie.ai's Market API. `sleep` and `monotonic` are injectable so tests
    of the wait do not wait; the client is the caller's."""

    def __init__(self, config: ProviderConfig, api_key: str | None, client: httpx.Client, *,
                 region: str | None = None, clock: Clock = utcnow, references: ReferenceHost | None = None,
                 callbacks: Callbacks | None = None, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic, poll_start_s: float = POLL_START_S,
                 poll_max_s: float | None = None) -> None:
        self.name = config.name
        self.config = config
        self._key = api_key
        self._client = client
        self._clock = clock
        self._refs = references
        self._callbacks = callbacks
        self._sleep = sleep
        self._monotonic = monotonic
        self.poll_start_s = poll_start_s
        self.poll_max_s = poll_max_s or (POLL_MAX_WITH_CALLBACKS_S if callbacks else POLL_MAX_S)
        self.base_url = provider_base_url(config, region)

    def __repr__(self) -> str:
        return f"KieProvider(name={self.name!r}, url={self.base_url!r})"

    # --- the seam ----------------------------------------------------------------------------------------

    def generate(self, request: ImageRequest, hooks: CallHooks | None = None) -> ImageResult:
        """Create one task and see it to the end (or to config.timeout_s). Never creates twice."""
        try:
            require_price(self.config, request.resolution, usage_ok=False)
            deadline = self._monotonic() + self.config.timeout_s
            urls = self._reference_urls(request)
            token = self._callbacks.inbox.open(self.name) if self._callbacks else None
            callback_url = self._callbacks.url(self.name, token) if self._callbacks and token else None
            body = task_body(request.prompt, request.aspect_ratio, request.resolution, request.output_format,
                             urls, model=self.config.model, callback_url=callback_url)
            task_id = self._create(body)
            (hooks or CallHooks()).submitted(task_id)
            if self._callbacks and token:
                self._callbacks.inbox.bind(token, task_id)
            return self._wait(task_id, request, deadline, first_poll_s=self.poll_start_s)
        except ProviderError as e:
            raise scrub(e, self._key) from None

    def resume(self, remote_id: str, request: ImageRequest) -> ImageResult:
        """Wait for an existing task (an earlier attempt's) and download its image: no new task."""
        try:
            require_price(self.config, request.resolution, usage_ok=False)
            # the task has been running since an earlier attempt: look at once
            return self._wait(remote_id, request, self._monotonic() + self.config.timeout_s, first_poll_s=0.0)
        except ProviderError as e:
            raise scrub(e, self._key) from None

    def close(self) -> None:
        """The client belongs to the caller; nothing to release here."""

    # --- calls -------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def _reference_urls(self, request: ImageRequest) -> list[str]:
        if not request.references:
            return []
        if self._refs is None:  # `pipeline validate` refuses such jobs; a config changed since submission
            raise InvalidRequest("references need S3 storage or upload_base_url for Kie.ai", provider=self.name)
        return [self._refs.url_for(ref) for ref in request.references]

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _create(self, body: dict[str, Any]) -> str:
        headers = {**self._headers(), "Content-Type": "application/json"}
        try:
            resp = self._client.post(f"{self.base_url}{CREATE_PATH}", content=json.dumps(body), headers=headers,
                                     timeout=httpx.Timeout(CREATE_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        except httpx.HTTPError as e:
            raise translate_transport_error(e, self.name) from None
        payload = self._json(resp)
        err = envelope_error(resp.status_code, payload, provider=self.name, headers=resp.headers,
                             now=self._clock(), text=resp.text[:MAX_MESSAGE_CHARS])
        if err is not None:
            raise err
        data = payload.get("data") if isinstance(payload, Mapping) else None
        task_id = data.get("taskId") if isinstance(data, Mapping) else None
        if not isinstance(task_id, str) or not task_id:
            # created (and maybe billed) but we cannot name it: nothing to resume
            raise ProviderUnavailable("createTask answer has no taskId", provider=self.name, http_status=200,
                                      error_class="malformed", maybe_billed=True)
        return task_id

    def _poll(self, task_id: str) -> Record | float:
        """The task, or the seconds to wait before asking again (a passing fault)."""
        try:
            resp = self._client.get(f"{self.base_url}{RECORD_PATH}", params={"taskId": task_id},
                                    headers=self._headers(),
                                    timeout=httpx.Timeout(POLL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        except httpx.HTTPError:
            return self.poll_start_s
        payload = self._json(resp)
        err = envelope_error(resp.status_code, payload, provider=self.name, headers=resp.headers,
                             now=self._clock(), text=resp.text[:MAX_MESSAGE_CHARS])
        if err is None:
            record = parse_record(payload)
            return record if record is not None else self.poll_start_s  # a 200 without a task: ask again
        if isinstance(err, RateLimited | ProviderUnavailable):
            return max(err.retry_after_s or 0.0, self.poll_start_s)
        if envelope_code(resp.status_code, payload) == 404:  # gone: the next attempt must create anew
            raise ProviderUnavailable(f"task {task_id} not found", provider=self.name, http_status=resp.status_code,
                                      error_class="task_lost", maybe_billed=True)
        raise err

    def _delivered(self, task_id: str) -> Record | None:
        if self._callbacks is None:
            return None
        record = parse_record(self._callbacks.inbox.payload(self.name, task_id))
        if record is None or not record.finished or record.task_id not in ("", task_id):
            return None
        return record

    def _wait(self, task_id: str, request: ImageRequest, deadline: float, *, first_poll_s: float) -> ImageResult:
        """Poll (and read the inbox) until the task ends; the last poll is at the deadline itself."""
        interval = self.poll_start_s
        next_poll = min(self._monotonic() + first_poll_s, deadline)
        while True:
            now = self._monotonic()
            record = self._delivered(task_id)
            if record is None and now >= next_poll:
                got = self._poll(task_id)
                if isinstance(got, Record):
                    record = got
                    interval = min(interval * POLL_GROWTH, self.poll_max_s)
                    next_poll = min(now + interval, deadline)
                else:
                    next_poll = min(now + got, deadline)
            if record is not None and record.finished:
                return self._finish(task_id, record, request)
            if now >= deadline:
                raise ProviderTimeout(f"task {task_id} unfinished after {self.config.timeout_s:g}s "
                                      "(may still be billed)", provider=self.name, maybe_billed=True,
                                      remote_id=task_id)
            step = max(next_poll - now, 0.0)
            if self._callbacks is not None:
                step = min(step, INBOX_CHECK_S)
            self._sleep(step)

    def _finish(self, task_id: str, record: Record, request: ImageRequest) -> ImageResult:
        if record.state == "fail":
            raise fail_error(record, provider=self.name, now=self._clock())
        cost = table_cost(self.config, request.resolution, len(request.references))
        assert cost is not None  # require_price checked it
        billed: dict[str, Any] = {"provider": self.name, "http_status": 200, "maybe_billed": True, "cost_usd": cost}
        if not record.result_urls:
            raise ProviderUnavailable(f"task succeeded without a result URL ({record.malformed})",
                                      error_class="malformed", **billed)
        data, ctype = self._download(record.result_urls[0], task_id, billed)
        mime = ctype.split(";")[0].strip()
        try:
            validate_image(data, mime, request.resolution, request.aspect_ratio, policy="ratio", provider=self.name)
        except BadImage as e:
            raise BadImage(e.message, **billed) from None
        return ImageResult(data=data, mime_type=image_mime(data) or mime, cost_usd=cost, cost_source=PRICE_TABLE,
                           usage={"taskId": task_id, **record.extra}, remote_id=task_id)

    def _download(self, url: str, task_id: str, billed: dict[str, Any]) -> tuple[bytes, str]:
        last = ""
        for attempt in range(DOWNLOAD_TRIES):
            try:
                data, ctype, _ = download(self._client, url, provider=self.name, deadline_s=self.config.timeout_s)
                return data, ctype
            except ProviderUnavailable as e:
                last = e.message
                if attempt + 1 < DOWNLOAD_TRIES:
                    self._sleep(self.poll_start_s * (attempt + 1))
        raise ProviderUnavailable(last, error_class="download", remote_id=task_id, **billed)
