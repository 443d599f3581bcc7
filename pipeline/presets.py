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

#: largest reference AIML gets inline as a base64 data URL; its docs give no size limit for base64 inputs,
#: so this keeps one JSON request with 14 references near 100 MB at most. Larger references need a URL AIML
#: can fetch (a presigned storage URL), refused at validate time until the storage seam can presign
AIML_MAX_INLINE_REFERENCE_BYTES = 5 * 1024 * 1024

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
        # no `regions`: the Gemini Developer API is served from one global endpoint; Google documents no
        # regional (EU) host for it and points data-residency needs to Vertex AI
        # (https://firebase.google.com/docs/ai-logic/locations, read 2026-11-29)
    },
    # Google's Flex tier: the same synchronous generateContent with `serviceTier: "flex"` (python-genai
    # models.py _GenerateContentConfig_to_mldev; https://ai.google.dev/gemini-api/docs/flex-inference):
    # 50% of the standard rates, 1-15 min target latency, best effort (requests may be shed)
    "google-flex": {
        "kind": "gemini",
        "service_tier": "flex",
        "base_url": "https://generativelanguage.googleapis.com",
        "api_key_env": "GEMINI_API_KEY",
        "model": MODEL,
        "limits": {"rpm": 300, "rpd": 1000, "concurrency": 32},
        "prices": {"1K": "0.067", "2K": "0.067", "4K": "0.12", "input_image": "0.0006"},
        "prices_date": PRICES_DATE,
        "data_policy": "official",
        "cost_from_usage": True,
        "timeout_s": 1200,
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
    # Kie.ai's Market task API (docs.kie.ai/market/google/nano-banana-pro): createTask, then recordInfo or a
    # callback. "20 new generation requests per 10 seconds" per account: rpm 120 counted over 10 s windows.
    # An attempt polls for timeout_s (default 180 s); then the next attempt resumes the same task, so a slow task
    # is followed for up to worker.max_attempts x timeout_s (the docs: "stop after 10-15 minutes").
    "kie": {
        "kind": "kie",
        "base_url": "https://api.kie.ai",
        "upload_base_url": "https://kieai.redpandaai.co",
        "api_key_env": "KIE_API_KEY",
        "model": "nano-banana-pro",
        "limits": {"rpm": 120, "window_s": 10, "rpd": 100000, "concurrency": 16},
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
    # AIML API's documented JSON dialect (docs.aimlapi.com image-models/google/gemini-3-pro-image-preview and
    # -edit): one endpoint for both, edits by model name, references as image_urls (URLs or base64)
    "aimlapi": {
        "kind": "openai-images",
        "base_url": "https://api.aimlapi.com",
        "api_key_env": "AIMLAPI_API_KEY",
        "model": "google/nano-banana-pro",
        "images": {
            "edits_path": None,
            "edits_encoding": "json",
            "edit_model": "google/nano-banana-pro-edit",
            "reference_field": "image_urls",
            "max_references": 14,
            "max_inline_reference_bytes": AIML_MAX_INLINE_REFERENCE_BYTES,
            "size_field": None,
            "aspect_ratio_field": "aspect_ratio",
            "resolution_field": "resolution",
            "count_field": "num_images",
            "response_format_field": None,
            "output_format_field": None,
        },
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
