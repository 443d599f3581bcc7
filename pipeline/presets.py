"""Built-in provider presets: the guide's table (../shared/seed), prices dated and overridable in config.

Data only, imported by pipeline.config (which merges pipeline.yaml over it) and by the adapters' pricing; it
lives beside config, not in providers/, so that config does not depend on the adapters that depend on it.

Prices are per image in USD as strings (exact Decimal). `list` prices are Google's official ones, the basis of
"saved" in reports. Every preset can be overridden key by key in pipeline.yaml under `providers:`.
"""

from __future__ import annotations

from typing import Any

MODEL = "gemini-3-pro-image-preview"
#: date the prices below were taken from the guide and the Gemini pricing page
PRICES_DATE = "2025-12-01"

#: Google's official list price per image (standard tier); the basis of list_cost_usd / saved_usd
LIST_PRICES: dict[str, str] = {"1K": "0.134", "2K": "0.134", "4K": "0.24", "input_image": "0.0011"}

PRESETS: dict[str, dict[str, Any]] = {
    "google": {
        "kind": "gemini",
        "base_url": "https://generativelanguage.googleapis.com",
        "api_key_env": "GEMINI_API_KEY",
        "model": MODEL,
        "limits": {"rpm": 300, "rpd": 1000, "concurrency": 32},
        "prices": dict(LIST_PRICES),
        "prices_date": PRICES_DATE,
        "data_policy": "official",
        "cost_from_usage": True,
        "regions": {"EU": "https://europe-generativelanguage.googleapis.com"},
    },
    "google-batch": {
        "kind": "gemini-batch",
        "base_url": "https://generativelanguage.googleapis.com",
        "api_key_env": "GEMINI_API_KEY",
        "model": MODEL,
        "limits": {"rpm": 60, "rpd": 1000, "concurrency": 4},
        "prices": {"1K": "0.067", "2K": "0.067", "4K": "0.12", "input_image": "0.0006"},
        "prices_date": PRICES_DATE,
        "data_policy": "official",
        "cost_from_usage": True,
    },
    "kie": {
        "kind": "openai-images",
        "base_url": "https://api.kie.ai",
        "api_key_env": "KIE_API_KEY",
        "model": MODEL,
        "limits": {"rpm": 120, "rpd": 100000, "concurrency": 16},
        "prices": {"1K": "0.09", "2K": "0.09", "4K": "0.12"},
        "prices_date": PRICES_DATE,
        "data_policy": "third-party",
    },
    "laozhang": {
        "kind": "gemini",
        "base_url": "https://api.laozhang.ai",
        "api_key_env": "LAOZHANG_API_KEY",
        "auth": "bearer",
        "model": MODEL,
        "limits": {"rpm": 120, "rpd": 100000, "concurrency": 16},
        "prices": {"1K": "0.05", "2K": "0.05", "4K": "0.08"},
        "prices_date": PRICES_DATE,
        "data_policy": "third-party",
        "regions": {"CN": "https://api.laozhang.ai"},
    },
    "laozhang-openai": {
        "kind": "openai-images",
        "base_url": "https://api.laozhang.ai",
        "api_key_env": "LAOZHANG_API_KEY",
        "model": MODEL,
        "limits": {"rpm": 120, "rpd": 100000, "concurrency": 16},
        "prices": {"1K": "0.05", "2K": "0.05", "4K": "0.08"},
        "prices_date": PRICES_DATE,
        "data_policy": "third-party",
    },
    "aimlapi": {
        "kind": "openai-images",
        "base_url": "https://api.aimlapi.com",
        "api_key_env": "AIMLAPI_API_KEY",
        "model": "google/nano-banana-pro",
        "limits": {"rpm": 60, "rpd": 100000, "concurrency": 8},
        "prices": {"1K": "0.10", "2K": "0.10", "4K": "0.15"},
        "prices_date": PRICES_DATE,
        "data_policy": "third-party",
    },
    "replicate": {
        "kind": "replicate",
        "base_url": "https://api.replicate.com",
        "api_key_env": "REPLICATE_API_TOKEN",
        "model": "google/nano-banana-pro",
        "limits": {"rpm": 600, "rpd": 1000000, "concurrency": 16},
        "prices": {"1K": "0.036", "2K": "0.036", "4K": "0.05"},
        "prices_date": PRICES_DATE,
        "data_policy": "third-party",
    },
    # The project's own simulator speaking the Gemini protocol. With no base_url, `pipeline run` starts one
    # in-process on a loopback port; point base_url at `pipeline sandbox --port N` for a cluster.
    "sandbox": {
        "kind": "sandbox",
        "base_url": None,
        "api_key_env": None,
        "model": MODEL,
        "limits": {"rpm": 6000, "rpd": 1000000, "concurrency": 16},
        "prices": dict(LIST_PRICES),
        "prices_date": PRICES_DATE,
        "data_policy": "official",
        "cost_from_usage": True,
    },
    # The simulator's Gemini batch tier, at Google's batch prices; in-process when it has no base_url.
    "sandbox-batch": {
        "kind": "gemini-batch",
        "base_url": None,
        "api_key_env": None,
        "model": MODEL,
        "limits": {"rpm": 600, "rpd": 1000000, "concurrency": 4},
        "prices": {"1K": "0.067", "2K": "0.067", "4K": "0.12", "input_image": "0.0006"},
        "prices_date": PRICES_DATE,
        "data_policy": "official",
        "cost_from_usage": True,
    },
}
