"""The provider sandbox: a simulator of Gemini (generateContent and batch), OpenAI Images and Replicate.

An ASGI app (starlette) served by uvicorn, faithful to ../shared/PROVIDERS.md so that the official SDKs
pointed at it work. Images are real (Pillow), of the exact size for ratio and resolution, and the same
request always gives the same bytes. Limits, latency, faults and prices come from a `SandboxProfile`
(profile.py); prompt triggers such as `[sandbox:503]` force a fault (the list is in faults.py).

Modules: profile (config), faults (triggers and draws), limits (token bucket, daily counter), ledger,
generation (normalized request, usage, price), render (Pillow), files (in-memory blobs), state (shared
state), http (helpers); protocols: gemini_wire + gemini, gemini_batch + gemini_files, openai_images,
replicate; app (routes, /p/{name}/ prefixes, /_sandbox admin), server (uvicorn runner).
"""

from pipeline.sandbox.app import build_app
from pipeline.sandbox.profile import EndpointProfile, FaultRates, Latency, SandboxProfile, load_profile
from pipeline.sandbox.server import SandboxServer, serve_forever, start_sandbox

__all__ = [
    "EndpointProfile",
    "FaultRates",
    "Latency",
    "SandboxProfile",
    "SandboxServer",
    "build_app",
    "load_profile",
    "serve_forever",
    "start_sandbox",
]
