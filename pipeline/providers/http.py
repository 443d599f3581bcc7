"""HTTP plumbing the adapters share: the client, the transport-error translation, Retry-After parsing,
size-limited downloads and key redaction.

httpx errors become pipeline errors here and only here (called from inside each adapter). The rule that
decides "maybe billed": an error before the request was sent (connect refused, connect timeout, no free
pooled connection) cannot have been billed; an error after it was sent (read timeout, the server closing
the connection, a reset while reading) may have been, because generation may have run to the end.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx

from pipeline.config import ProviderConfig
from pipeline.errors import InputError, ProviderError, ProviderTimeout, ProviderUnavailable
from pipeline.redact import Redactor

#: connect timeout for every provider call; the read timeout is the provider's timeout_s
CONNECT_TIMEOUT_S = 10.0
#: connections per client (shared by all threads of a worker process)
POOL_SIZE = 64
#: largest image we download from a provider's output URL (a 4K PNG is well below this)
MAX_DOWNLOAD_BYTES = 80 * 1024 * 1024
#: longest provider text we put into an error message
MAX_MESSAGE_CHARS = 300
#: transport errors raised before any byte of the request reached the provider
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def make_http_client(timeout_s: float) -> httpx.Client:
    """The client a worker process shares across adapters. Redirects are not followed on API calls (a
    redirect must never carry an API key header to another host); downloads opt in per request."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S),
        limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
        follow_redirects=False,
    )


#: shortest start of a key that is still cut from the end of a shortened message
MIN_KEY_PREFIX_CHARS = 4


def redact(text: str, secret: str | None) -> str:
    """`text` with `secret` cut out wherever pipeline.redact recognises it (any 8+ character part, any case,
    URL-encoded, base64, hex; a cut-off start at the end of a shortened message)."""
    return Redactor([secret] if secret else [], mark="***", min_secret_chars=MIN_KEY_PREFIX_CHARS)(text)


def scrub(err: ProviderError, secret: str | None) -> ProviderError:
    """`err` with `secret` removed from its message (an adapter calls this on everything it raises)."""
    if secret:
        err.message = redact(err.message, secret)
        err.args = (err.message,)
    return err


def short_text(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Provider text for an error message: whitespace folded, at most `limit` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def provider_base_url(config: ProviderConfig, region: str | None) -> str:
    """The provider's base URL (the region's when it has one), without a trailing slash."""
    url = config.url_for_region(region)
    if not url:
        raise InputError("provider has no base_url", where=f"providers.{config.name}.base_url")
    return url.rstrip("/")


def translate_transport_error(exc: httpx.HTTPError, provider: str) -> ProviderError:
    """Map an httpx exception to the error tree. Raise the result `from None`: the httpx exception holds
    the request, and the request holds the key header."""
    name = type(exc).__name__
    if isinstance(exc, _NOT_SENT):
        return ProviderUnavailable(f"could not connect ({name})", provider=provider, error_class="connect")
    if isinstance(exc, httpx.WriteError | httpx.WriteTimeout):
        # the request never arrived whole, so the provider cannot have started the work
        return ProviderUnavailable(
            f"sending the request failed ({name})", provider=provider, error_class="connect"
        )
    if isinstance(exc, httpx.ReadTimeout):
        return ProviderTimeout(
            "no answer before the read timeout (the call may have been billed)",
            provider=provider,
            maybe_billed=True,
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return ProviderTimeout(
            f"connection lost before the answer ({name}; the call may have been billed)",
            provider=provider,
            maybe_billed=True,
            error_class="disconnected",
        )
    return ProviderUnavailable(f"HTTP error after sending ({name})", provider=provider, maybe_billed=True)


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Delay from `retry-after-ms`, then `retry-after` (seconds or an HTTP date); None when absent."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = (now or datetime.now(UTC).replace(tzinfo=None)).replace(tzinfo=UTC)
    return max((when - current).total_seconds(), 0.0)


def decode_data_url(url: str) -> tuple[bytes, str] | None:
    """(bytes, mime) of a `data:image/...;base64,` URL, or None when `url` is not one."""
    if not url.startswith("data:"):
        return None
    head, _, payload = url.partition(",")
    mime = head[5:].split(";")[0] or "application/octet-stream"
    if not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=True), mime
    except (binascii.Error, ValueError):
        return b"", mime


def download(
    client: httpx.Client,
    url: str,
    *,
    provider: str,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    deadline_s: float | None = None,
) -> tuple[bytes, str, int]:
    """GET an output URL at once (no auth header: the URL is a capability on another host). Returns
    (body, content type, status). Raises ProviderUnavailable on a non-200 or an oversize body; transport
    errors are translated. The caller adds the cost and maybe_billed of the generation that made the URL."""
    if not url.startswith(("https://", "http://")):
        raise ProviderUnavailable("output URL is not http(s)", provider=provider, error_class="download")
    started = time.monotonic()
    try:
        with client.stream("GET", url, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise ProviderUnavailable(
                    f"output download answered HTTP {resp.status_code}",
                    provider=provider,
                    http_status=resp.status_code,
                    error_class="download",
                )
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ProviderUnavailable("output image too large", provider=provider, error_class="download")
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise ProviderUnavailable(
                        "output image too large", provider=provider, error_class="download"
                    )
                if deadline_s is not None and time.monotonic() - started > deadline_s:
                    raise ProviderUnavailable(
                        "output download too slow", provider=provider, error_class="download"
                    )
                chunks.append(chunk)
            return b"".join(chunks), resp.headers.get("content-type", ""), resp.status_code
    except httpx.HTTPError as e:
        err = translate_transport_error(e, provider)
        raise ProviderUnavailable(
            f"output download failed: {err.message}", provider=provider, error_class="download"
        ) from None
