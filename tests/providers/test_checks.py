"""The manifest-time checks, one registry by provider kind: each kind's refusal, their order, and jobs none concern."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Settings, load_settings
from pipeline.presets import AIML_MAX_INLINE_REFERENCE_BYTES
from pipeline.providers.checks import CHECKS, ItemAsk, manifest_refusal

BIG = AIML_MAX_INLINE_REFERENCE_BYTES + 1


def settings(tmp_path: Path, **cfg: Any) -> Settings:
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'db'}", **cfg}))
    return load_settings(tmp_path / "pipeline.yaml", env={})


def test_every_kind_with_manifest_time_limits_has_one_check() -> None:
    assert [kind for kind, _ in CHECKS] == ["kie", "openai-images"]


def test_refusals_name_the_item_provider_and_fix(tmp_path: Path) -> None:
    files = settings(tmp_path, providers={"kie": {"upload_base_url": None}})
    kie = manifest_refusal(files, ["kie"], [ItemAsk("a", "1K", "1:1", (10,))])
    assert kie and kie.startswith("provider 'kie' (Kie.ai) takes references only as URLs") and "s3://" in kie
    aiml = manifest_refusal(files, ["aimlapi"], [ItemAsk("a", "1K", "1:1"), ItemAsk("b", "1K", "1:1", (BIG,))])
    assert aiml and aiml.startswith("item b: provider aimlapi gets references inline") and "s3://" in aiml
    four_k = manifest_refusal(files, ["laozhang-openai"], [ItemAsk("c", "4K", "1:1")])
    assert four_k and four_k.startswith("item c: provider laozhang-openai speaks OpenAI's images API")


def test_checks_run_in_registry_order_whatever_the_job_lists(tmp_path: Path) -> None:
    files = settings(tmp_path, providers={"kie": {"upload_base_url": None}})
    items = [ItemAsk("a", "1K", "1:1", (BIG,))]
    both = manifest_refusal(files, ["aimlapi", "kie"], items)
    assert both and both.startswith("provider 'kie' (Kie.ai)")


def test_s3_storage_satisfies_both_and_other_kinds_are_not_concerned(tmp_path: Path) -> None:
    s3 = settings(tmp_path, storage_url="s3://bucket/prefix", providers={"kie": {"upload_base_url": None}})
    items = [ItemAsk("a", "4K", "21:9", (10, BIG))]
    assert manifest_refusal(s3, ["kie", "aimlapi"], items) is None
    assert manifest_refusal(settings(tmp_path), ["google", "replicate", "laozhang"], items) is None
