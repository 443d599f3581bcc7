"""Profiles: YAML loading, validation errors as InputError, defaults."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.errors import InputError
from pipeline.sandbox.profile import DEFAULT_BUCKET_S, SandboxProfile, load_profile


def test_yaml_profile(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "seed: 3\n"
        "batch_delay_s: 0.5\n"
        "protocols:\n"
        "  gemini: {rpm: 60, bucket_s: 1, latency: {min_s: 0.1, max_s: 0.2}, faults: {http_503: 0.1}}\n"
        "providers:\n"
        "  kie: {protocol: openai, price_per_image: {1K: 0.09, 4K: '0.12'}}\n"
    )
    profile = load_profile(path)
    assert profile.seed == 3 and profile.batch_delay_s == 0.5
    assert profile.protocols["gemini"].rpm == 60
    assert profile.protocols["gemini"].faults.http_503 == 0.1
    assert profile.providers["kie"].price_per_image == {"1K": Decimal("0.09"), "4K": Decimal("0.12")}
    assert profile.endpoint("kie", "openai").protocol == "openai"
    assert profile.endpoint("unknown", "gemini").rpm == 60
    assert profile.endpoint("unknown", "openai").rpm is None


def test_defaults():
    profile = load_profile(None)
    ep = profile.endpoint("gemini", "gemini")
    assert ep.rpm is None and ep.bucket_s == DEFAULT_BUCKET_S and ep.api_keys is None
    assert profile.batch_delay_s == 2.0


@pytest.mark.parametrize(
    "data",
    [
        {"protocols": {"gemini": {"rpmm": 1}}},
        {"protocols": {"grpc": {}}},
        {"protocols": {"gemini": {"faults": {"http_500": 0.7, "http_503": 0.7}}}},
        {"protocols": {"gemini": {"latency": {"min_s": 2, "max_s": 1}}}},
        {"providers": {"x": {"price_per_image": {"8K": "1"}}}},
        {"surprise": 1},
    ],
)
def test_invalid_profiles_are_input_errors(data):
    with pytest.raises(InputError):
        load_profile(data)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("protocols: [unclosed\n")
    with pytest.raises(InputError) as info:
        load_profile(path)
    assert info.value.where == f"{path}:2"  # the YAML error names its line
    with pytest.raises(InputError):
        load_profile(tmp_path / "missing.yaml")


def test_profile_object_passes_through():
    profile = SandboxProfile(seed=1)
    assert load_profile(profile) is profile
