"""Building blocks for core tests: settings for a database URL, item specs without a manifest, and a
runtime whose sandbox provider points at a real sandbox over HTTP."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import load_settings
from pipeline.core.submit import JobSpec
from pipeline.runtime import Runtime, open_runtime


@dataclass(frozen=True)
class Spec:
    key: str
    prompt: str
    resolution: str = "1K"
    aspect_ratio: str = "1:1"
    output_format: str = "png"
    index: int = 0
    references: tuple[Any, ...] = ()
    tags: tuple[str, ...] = ()
    output_key: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def cache_key(self) -> str:
        body = {"model": "gemini-3-pro-image-preview", "prompt": self.prompt, "resolution": self.resolution,
                "aspect_ratio": self.aspect_ratio, "format": self.output_format, "references": []}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256((self.cache_key + self.out_key).encode()).hexdigest()

    @property
    def out_key(self) -> str:
        return self.output_key or f"test/{self.key}.png"


def specs(n: int, prompt: str = "a red apple {i}", **kw: Any) -> list[Spec]:
    return [Spec(key=f"item-{i:03d}", prompt=prompt.format(i=i), index=i, output_key=f"test/item-{i:03d}.png", **kw)
            for i in range(n)]


def job(name: str = "test-job", providers: list[str] | None = None, **kw: Any) -> JobSpec:
    return JobSpec(name=name, providers=providers or ["sandbox"], **kw)


def settings_for(tmp: Path, db_url: str, sandbox_url: str, **extra: Any) -> Any:
    cfg: dict[str, Any] = {
        "database_url": db_url,
        "storage_url": f"file://{tmp / 'out'}",
        "providers": {"sandbox": {"base_url": sandbox_url}},
        "worker": {"lease_s": 5, "max_attempts": 3, "backoff_base_s": 0.05, "backoff_cap_s": 0.2,
                   "concurrency": 8},
    }
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    path = tmp / "pipeline.yaml"
    import yaml

    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg, default=str))))
    return load_settings(path, env={})


def runtime(settings: Any) -> Runtime:
    return open_runtime(settings)
