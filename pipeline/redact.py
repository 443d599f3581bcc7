"""Secret redaction and bounded text: the one place that recognises a configured key inside any text.

A key (a configured `api_key_env` value) is recognised in a text as:
- any run of MIN_RUN_CHARS (8) or more characters that is a part of the key, in any letter case (a provider
  echoing "sk-abcdef12..." or an upper-cased header is caught, not only the whole key);
- the same in the key's URL-encoded forms (`quote`, `quote_plus`), its base64 forms (standard and URL-safe, at
  each of the three byte alignments, so the key inside a longer encoded value such as a Basic auth header is
  caught too) and its hex form;
- at the very end of a shortened text ("...", see providers.http.short_text), a cut-off start of the key of
  MIN_TAIL_CHARS (4) or more characters.
Keys shorter than MIN_RUN_CHARS are matched whole. Each recognised run becomes one mark ("[redacted]" by
default). This over-approximates (a run stitched from two parts of a key is also cut), never under.

`install(secrets)` makes the process' keys known (the CLI's logging set-up and `open_runtime` call it); the
database columns that hold provider text (failure reasons, attempt error details) pass every value through
`bounded(text, limit)`: redacted with the installed keys, NUL characters replaced (Postgres refuses them in
text; SQLite would keep them), cut to a documented length.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

#: shortest part of a key that is recognised and cut out (a full key is typically 32-64 characters)
MIN_RUN_CHARS = 8
#: shortest cut-off start of a key recognised at the end of a shortened ("...") text
MIN_TAIL_CHARS = 4
#: keys shorter than this are not treated as secrets (redacting them would mangle ordinary text)
MIN_SECRET_CHARS = 4
#: what a recognised key is replaced with by default
MARK = "[redacted]"
#: longest failure reason stored (items.failure_reason), in characters; longer ones end in "..."
MAX_REASON_CHARS = 1000
#: longest error detail stored (attempts.error_detail), in characters
MAX_DETAIL_CHARS = 2000
_ELLIPSIS = "..."
_NUL = re.compile("\x00")


def _fold(text: str) -> str:
    """Lower-case `text` without changing its length (so positions stay valid for the original)."""
    if text.isascii():
        return text.lower()
    return "".join(lc if len(lc := c.lower()) == 1 else c for c in text)


def encoded_forms(secret: str) -> set[str]:
    """The spellings of `secret` recognised besides itself: URL-encoded, base64 (3 alignments, 2 alphabets), hex."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    raw = secret.encode("utf-8")
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            enc = encode(b"\0" * pad + raw).decode("ascii")
            # the first group holds pad bytes, a last partial group depends on what follows the key: drop both
            start = 4 if pad else 0
            end = len(enc) - (4 if (pad + len(raw)) % 3 else 0)
            forms.add(enc[start:end].rstrip("="))
    forms.add(raw.hex())
    return {f for f in forms if f}


class Redactor:
    """Replaces every recognised part of the given secrets with `mark`. Immutable; cheap to call on short text."""

    def __init__(self, secrets: Iterable[str], *, mark: str = MARK, min_secret_chars: int = MIN_SECRET_CHARS) -> None:
        self.mark = mark
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= min_secret_chars}, key=len, reverse=True))
        grams: dict[int, set[str]] = {}
        for secret in self._secrets:
            for form in encoded_forms(secret):
                folded = _fold(form)
                n = min(MIN_RUN_CHARS, len(folded))
                if n < min_secret_chars:
                    continue
                bucket = grams.setdefault(n, set())
                bucket.update(folded[i:i + n] for i in range(len(folded) - n + 1))
        self._grams = sorted(grams.items(), reverse=True)
        self._prefixes = tuple(_fold(s) for s in self._secrets)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        if not self._secrets or not text:
            return text
        folded = _fold(text)
        covered = bytearray(len(text))
        for n, bucket in self._grams:
            for i in range(len(folded) - n + 1):
                if folded[i:i + n] in bucket:
                    covered[i:i + n] = b"\x01" * n
        if any(covered):
            out: list[str] = []
            i = 0
            while i < len(text):
                if covered[i]:
                    j = i
                    while j < len(text) and covered[j]:
                        j += 1
                    out.append(self.mark)
                    i = j
                else:
                    j = covered.find(b"\x01", i)
                    j = len(text) if j < 0 else j
                    out.append(text[i:j])
                    i = j
            text = "".join(out)
        return self._cut_tail(text)

    def _cut_tail(self, text: str) -> str:
        """A text shortened with "..." may end in the first characters of a key (cut before redaction)."""
        body, ellipsis = (text[:-3], _ELLIPSIS) if text.endswith(_ELLIPSIS) else (text, "")
        folded = _fold(body[-MIN_RUN_CHARS * 8:])
        for prefix in self._prefixes:
            for n in range(min(len(prefix), MIN_RUN_CHARS * 8) - 1, MIN_TAIL_CHARS - 1, -1):
                if folded.endswith(prefix[:n]):
                    return body[:-n] + self.mark + ellipsis
        return text


_lock = threading.Lock()
_installed = Redactor(())


def install(secrets: Iterable[str]) -> Redactor:
    """Make `secrets` the process' known keys (for `bounded` and `redact_known`). Returns the redactor."""
    global _installed
    redactor = Redactor(secrets)
    with _lock:
        _installed = redactor
    return redactor


def installed() -> Redactor:
    return _installed


def redact_known(text: str) -> str:
    """`text` with the installed keys cut out."""
    return _installed(text)


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters; a cut text ends in "..."."""
    return text if len(text) <= limit else text[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS


def bounded(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """What may be stored and shown of a provider's or an error's text: keys cut out (before shortening, so a
    cut cannot leave half a key), NUL replaced by U+FFFD, at most `limit` characters."""
    text = _NUL.sub("\ufffd", _installed(text))
    return shorten(text, limit)
