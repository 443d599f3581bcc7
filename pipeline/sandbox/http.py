"""Small HTTP helpers shared by the protocol modules."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from pipeline.clock import utcnow

if TYPE_CHECKING:
    from pipeline.sandbox.ledger import Ledger
    from pipeline.sandbox.state import Endpoint

#: seconds a reference download may take (connect and each read)
FETCH_TIMEOUT_S = 10.0
#: largest reference the sandbox downloads; a bigger answer counts as not downloaded
MAX_FETCH_BYTES = 64 * 1024 * 1024


async def fetch_urls(urls: Sequence[str], *, max_bytes: int = MAX_FETCH_BYTES) -> list[bytes | None]:
    """Download reference URLs as a provider does (redirects followed): each one's body, or None where it did not
    answer 200, could not be reached or was larger than `max_bytes`."""
    out: list[bytes | None] = []
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True) as client:
        for url in urls:
            try:
                async with client.stream("GET", url) as resp:
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            break
                    ok = resp.status_code == 200 and len(body) <= max_bytes
            except httpx.HTTPError:
                ok = False
            out.append(bytes(body) if ok else None)
    return out


def provider_name(request: Request) -> str | None:
    """The provider name from a `/p/{provider_name}/...` prefix, None without one."""
    name = request.path_params.get("provider_name")
    return str(name) if name else None


def base_url(request: Request) -> str:
    """Absolute URL of the sandbox root as the client reached it, with any /p/{name} prefix."""
    root = str(request.base_url).rstrip("/")
    name = provider_name(request)
    return f"{root}/p/{name}" if name else root


def root_url(request: Request) -> str:
    """Absolute URL of the sandbox root, without a provider prefix."""
    return str(request.base_url).rstrip("/")


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None, media_type: str = "application/json"
) -> Response:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return Response(text, status_code=status, headers=headers, media_type=media_type)


def counted(
    ledger: Ledger,
    ep: Endpoint,
    status: int,
    body: Any = None,
    *,
    generate: bool = False,
    headers: dict[str, str] | None = None,
    media_type: str | None = "application/json",
    content: bytes | str | None = None,
) -> Response:
    """An answer of the simulated provider `ep`, counted in the ledger (`generate`: it asked for an image): `body`
    as JSON, or `content` as it is. Every protocol answers through here."""
    ledger.request(ep.name, ep.protocol, status, generate=generate)
    if content is not None:
        return Response(content, status_code=status, headers=headers, media_type=media_type)
    return json_response(body, status, headers=headers, media_type=media_type or "application/json")


async def read_json(request: Request) -> Any:
    """The request body as JSON; raises ValueError when it is not JSON."""
    raw = await request.body()
    if not raw:
        return {}
    return json.loads(raw)


def bearer_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    return None


def rfc3339(moment: datetime | None = None) -> str:
    """Google / Replicate style timestamp: 2025-12-10T18:27:01.407650Z."""
    return (moment or utcnow()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token(length: int = 22) -> str:
    """A random URL-safe id, like Gemini's responseId."""
    return secrets.token_urlsafe(length)[:length]
