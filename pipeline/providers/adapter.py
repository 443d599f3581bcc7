"""The base of every HTTP provider adapter: one constructor, one key-scrubbing wrapper and one `request`
method through which every byte of a provider call goes.

`request` is the single place a call's HTTP happens, so the limits every call needs live here once:
- transport errors become pipeline errors (pipeline.providers.http.translate_transport_error);
- the answer body is streamed and capped at `max_bytes` (MAX_ANSWER_BYTES by default): an endless or
  oversized answer is cut off instead of filling the worker's memory;
- an optional wall-clock `deadline` (a time.monotonic() value) bounds the whole call, checked between
  chunks, on top of httpx's per-read timeout; `call_deadline()` gives the adapters the usual one
  (config.timeout_s plus the connect timeout and a margin for downloads).
Downloads of output URLs (`download`) go through the shared size-limited helper with the same deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypedDict

import httpx

from pipeline.clock import Clock, utcnow
from pipeline.config import ProviderConfig
from pipeline.errors import InputError, ProviderError, ProviderTimeout, ProviderUnavailable
from pipeline.providers.http import (
    CONNECT_TIMEOUT_S,
    MAX_DOWNLOAD_BYTES,
    download,
    provider_base_url,
    scrub,
    translate_transport_error,
)

#: largest answer body read from a provider API call (a 4K PNG in base64 is about 40 MB; a batch's inline
#: results can be larger, so the batch client passes its own cap)
MAX_ANSWER_BYTES = 128 * 1024 * 1024
#: checks a URL before it is downloaded; raises InputError to refuse it
OutputGuard = Callable[[str], None]
#: extra wall-clock time a call may take beyond config.timeout_s (connect, answer transfer, a download)
DEADLINE_MARGIN_S = 30.0


class AdapterOptions(TypedDict, total=False):
    """What every HTTP adapter takes besides its config, key and client (HttpAdapter.__init__'s keywords): an
    adapter with options of its own passes these on as `**options: Unpack[AdapterOptions]`."""

    #: a regional endpoint of the config (`regions:`)
    region: str | None
    clock: Clock
    output_guard: OutputGuard | None


class HttpAdapter:
    """Shared state and plumbing of the HTTP adapters. The client is injected and owned by the caller."""

    def __init__(
        self,
        config: ProviderConfig,
        api_key: str | None,
        client: httpx.Client,
        *,
        region: str | None = None,
        clock: Clock = utcnow,
        output_guard: OutputGuard | None = None,
    ) -> None:
        self.name = config.name
        #: checks a URL the provider answered with before it is downloaded (addresses, as for references);
        #: URLs on the provider's own host are trusted. None (tests, the sandbox) checks nothing.
        self._output_guard = output_guard
        self.config = config
        self._key = api_key
        self._client = client
        self._clock = clock
        self.base_url = provider_base_url(config, region)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.base_url!r})"

    def close(self) -> None:
        """The client belongs to the caller; nothing to release here."""

    # --- errors ------------------------------------------------------------------------------------------

    @contextmanager
    def scrubbing(self) -> Iterator[None]:
        """Every ProviderError leaving the block has the API key removed from its message."""
        try:
            yield
        except ProviderError as e:
            raise scrub(e, self._key) from None

    # --- the one HTTP call -------------------------------------------------------------------------------

    def call_deadline(self, extra_s: float = 0.0) -> float:
        """The usual wall-clock deadline of one call started now (time.monotonic())."""
        return time.monotonic() + self.config.timeout_s + CONNECT_TIMEOUT_S + DEADLINE_MARGIN_S + extra_s

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float | None = None,
        deadline: float | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send one request and read its whole answer (any status). Raises ProviderError on transport
        errors, an answer over `max_bytes` or one still arriving at `deadline`; both of those may have been
        billed. `timeout_s` is the read timeout (config.timeout_s by default)."""
        read_s = self.config.timeout_s if timeout_s is None else timeout_s
        timeout = httpx.Timeout(read_s, connect=CONNECT_TIMEOUT_S)
        try:
            with self._client.stream(method, url, headers=dict(headers or {}), timeout=timeout, **kw) as resp:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise self._oversize(resp.status_code, max_bytes)
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise self._oversize(resp.status_code, max_bytes)
                    if deadline is not None and time.monotonic() > deadline:
                        raise ProviderTimeout(
                            "answer still arriving at the call's deadline (the call may have been billed)",
                            provider=self.name,
                            http_status=resp.status_code,
                            maybe_billed=True,
                        )
                return httpx.Response(
                    resp.status_code, headers=resp.headers, content=bytes(body), request=resp.request
                )
        except httpx.HTTPError as e:
            raise translate_transport_error(e, self.name) from None

    def _oversize(self, status: int, max_bytes: int) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"answer larger than {max_bytes} bytes",
            provider=self.name,
            http_status=status,
            error_class="malformed",
            maybe_billed=True,
        )

    def download(
        self, url: str, *, deadline: float | None = None, max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> tuple[bytes, str]:
        """GET an output URL at once, without the API key; (body, MIME type without parameters). A URL on another
        host than the provider's passes the output guard first (SSRF: the same address rules as references)."""
        if self._output_guard is not None and httpx.URL(url).host != httpx.URL(self.base_url).host:
            try:
                self._output_guard(url)
            except InputError as e:
                raise ProviderUnavailable(
                    f"output URL refused: {e}", provider=self.name, error_class="download"
                ) from None
        remaining = None if deadline is None else max(deadline - time.monotonic(), 1.0)
        data, ctype, _ = download(self._client, url, provider=self.name, max_bytes=max_bytes, deadline_s=remaining)
        return data, ctype.split(";")[0].strip()

    @staticmethod
    def json_of(resp: httpx.Response) -> Any:
        """The answer's JSON, or None when it is not JSON."""
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
