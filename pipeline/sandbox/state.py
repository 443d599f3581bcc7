"""The sandbox's shared state: profile, ledger, per-provider limiters and RNGs, fault decisions, blobs."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import anyio.to_thread

from pipeline.clock import monotonic_s
from pipeline.sandbox.faults import Fault, draw_fault, parse_triggers
from pipeline.sandbox.files import FileStore
from pipeline.sandbox.generation import (
    BATCH_RATES,
    STANDARD_RATES,
    Generated,
    GenRequest,
    Usage,
    render_for,
    render_interim,
    usage_for,
)
from pipeline.sandbox.ledger import Ledger
from pipeline.sandbox.limits import Limiter
from pipeline.sandbox.profile import EndpointProfile, Protocol, SandboxProfile

#: protocols that one provider name may serve together (a Gemini provider has a batch API too)
_FAMILY: dict[str, str] = {
    "gemini": "gemini",
    "gemini-batch": "gemini",
    "openai": "openai",
    "aimlapi": "openai",
    "replicate": "replicate",
    "kie": "kie",
}


@dataclass
class Endpoint:
    """One provider name as the sandbox simulates it."""

    name: str
    protocol: Protocol
    profile: EndpointProfile
    limiter: Limiter
    rng: random.Random
    #: status queries (Kie's recordInfo), limited apart from new generations
    query_limiter: Limiter

    def accepts_key(self, key: str | None) -> bool:
        return self.profile.api_keys is None or (key is not None and key in self.profile.api_keys)

    def price(self, request: GenRequest, usage: Usage, *, batch: bool) -> Decimal:
        flat = (self.profile.price_per_image or {}).get(request.resolution)
        if flat is not None:
            return flat
        return usage.cost(BATCH_RATES if batch else STANDARD_RATES)


@dataclass(frozen=True)
class Decision:
    fault: Fault | None
    extra_latency_s: float = 0.0
    interim_image: bool = False


class SandboxState:
    def __init__(self, profile: SandboxProfile, clock: Callable[[], float] = monotonic_s) -> None:
        self.profile = profile
        self.ledger = Ledger()
        self.files = FileStore()
        self._clock = clock
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}
        #: how often each (provider, request fingerprint) was seen, for `[sandbox:FAULTxN]`
        self._seen: Counter[tuple[str, str]] = Counter()

    def endpoint(self, name: str | None, protocol: Protocol) -> Endpoint | None:
        """The simulated provider for a request; None when that name is configured for another protocol."""
        name = name or protocol
        with self._lock:
            ep = self._endpoints.get(name)
            if ep is None:
                prof = self.profile.endpoint(name, protocol)
                seed = None if self.profile.seed is None else f"{self.profile.seed}:{name}"
                ep = Endpoint(
                    name=name,
                    protocol=prof.protocol or protocol,
                    profile=prof,
                    limiter=Limiter(prof.rpm, prof.rpd, prof.bucket_s, self._clock),
                    rng=random.Random(seed),
                    query_limiter=Limiter(prof.query_rps * 60, None, 1.0, self._clock),
                )
                self._endpoints[name] = ep
        if _FAMILY[ep.protocol] != _FAMILY[protocol]:
            return None
        return ep

    def reset(self) -> None:
        """Clear the ledger, the rate-limit state and the `xN` trigger counters."""
        self.ledger.reset()
        with self._lock:
            endpoints = list(self._endpoints.values())
            self._seen.clear()
        for ep in endpoints:
            ep.limiter.reset()
            ep.query_limiter.reset()

    def decide(self, ep: Endpoint, prompt: str, fingerprint: str) -> Decision:
        """The fault for this request: a prompt trigger first, else one random draw by the profile's rates."""
        trig = parse_triggers(prompt)
        fault = trig.fault
        if fault is None:
            fault = draw_fault(ep.rng, ep.profile.faults)
        elif trig.times is not None:
            with self._lock:
                key = (ep.name, fingerprint)
                seen = self._seen[key]
                self._seen[key] = seen + 1
            if seen >= trig.times:
                fault = None
        return Decision(fault, trig.extra_latency_s, trig.interim_image)

    def latency_s(self, ep: Endpoint, decision: Decision) -> float:
        lat = ep.profile.latency
        delay = ep.rng.uniform(lat.min_s, lat.max_s) + decision.extra_latency_s
        if decision.fault is Fault.HANG:
            delay += ep.profile.hang_s
        return delay

    async def generate(
        self,
        ep: Endpoint,
        request: GenRequest,
        decision: Decision,
        *,
        batch: bool = False,
        latency: bool = True,
    ) -> Generated:
        """Simulate the model: wait the drawn latency, then render (in a worker thread) unless blocked.
        Error faults (decision.fault.is_error) are the caller's to answer before this."""
        if latency:
            delay = self.latency_s(ep, decision)
            if delay > 0:
                await asyncio.sleep(delay)
        fault = decision.fault
        usage = usage_for(request)
        if fault in (Fault.BLOCK_PROMPT, Fault.BLOCK_IMAGE, Fault.REFUSE):
            return Generated(request, fault, usage)
        image = await anyio.to_thread.run_sync(render_for, request, fault)
        interim = await anyio.to_thread.run_sync(render_interim, request) if decision.interim_image else None
        cost = ep.price(request, usage, batch=batch)
        return Generated(request, fault, usage, image=image, interim=interim, cost_usd=cost)

    def charge(self, ep: Endpoint, generated: list[Generated]) -> None:
        billed = [g for g in generated if g.billed]
        if billed:
            self.ledger.bill(ep.name, ep.protocol, len(billed), sum((g.cost_usd for g in billed), Decimal(0)))
