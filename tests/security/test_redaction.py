"""Key redaction in provider error texts, including the case the secrets scan found: a provider message that
quotes the key is shortened (short_text, 300 characters) before redaction, so the cut could leave the first
part of the key at the end of the message."""

from __future__ import annotations

import pytest

from pipeline.errors import ProviderUnavailable
from pipeline.providers.http import MAX_MESSAGE_CHARS, redact, scrub, short_text

KEY = "sk-SENTINEL-0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("offset", range(MAX_MESSAGE_CHARS - len(KEY) - 5, MAX_MESSAGE_CHARS + 2))
def test_a_key_cut_by_shortening_is_redacted(offset: int) -> None:
    message = short_text("x" * offset + KEY + " and more text after it " * 5)
    err = scrub(ProviderUnavailable(message, provider="p"), KEY)
    assert "SENTINEL" not in err.message and "SENTINEL" not in str(err)
    assert KEY[:4] not in err.message


def test_whole_keys_and_unrelated_text() -> None:
    assert redact(f"a {KEY} b {KEY}", KEY) == "a *** b ***"
    assert redact("nothing secret here...", KEY) == "nothing secret here..."
    assert redact("ends with sk-...", KEY) == "ends with sk-..."  # three characters: too short to mean the key
    assert redact("no key configured", None) == "no key configured"
