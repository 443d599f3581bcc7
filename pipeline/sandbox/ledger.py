"""What the sandbox answered and billed, in total and per provider name. Thread safe.

`requests` counts every API request (generation, polls, uploads; not /_sandbox/* nor output downloads),
`generate_requests` only those that ask for images. `billed_images` counts images made and charged:
blocked prompts/images, refusals and error answers are not billed.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline.money import ZERO


@dataclass
class _Account:
    protocol: str
    requests: int = 0
    generate_requests: int = 0
    billed_images: int = 0
    billed_usd: Decimal = ZERO
    by_status: Counter[str] = field(default_factory=Counter)

    def add(self, other: _Account) -> None:
        self.requests += other.requests
        self.generate_requests += other.generate_requests
        self.billed_images += other.billed_images
        self.billed_usd += other.billed_usd
        self.by_status.update(other.by_status)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "generate_requests": self.generate_requests,
            "billed_images": self.billed_images,
            "by_status": dict(sorted(self.by_status.items())),
            "billed_usd": f"{self.billed_usd:f}",
        }


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}

    def _account(self, provider: str, protocol: str) -> _Account:
        acc = self._accounts.get(provider)
        if acc is None:
            acc = self._accounts[provider] = _Account(protocol=protocol)
        return acc

    def request(self, provider: str, protocol: str, status: int, *, generate: bool = False) -> None:
        """Count one answered API request."""
        with self._lock:
            acc = self._account(provider, protocol)
            acc.requests += 1
            acc.generate_requests += int(generate)
            acc.by_status[str(status)] += 1

    def bill(self, provider: str, protocol: str, images: int, usd: Decimal) -> None:
        """Charge images made (at answer time for sync calls, at completion for batches and predictions)."""
        with self._lock:
            acc = self._account(provider, protocol)
            acc.billed_images += images
            acc.billed_usd += usd

    def reset(self) -> None:
        with self._lock:
            self._accounts.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            total = _Account(protocol="")
            by_provider: dict[str, Any] = {}
            for name, acc in sorted(self._accounts.items()):
                total.add(acc)
                by_provider[name] = {"protocol": acc.protocol, **acc.to_json()}
        return {**total.to_json(), "by_provider": by_provider}
