"""Money is Decimal. Six places in storage, cents when shown."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

ZERO = Decimal("0")
#: quantum for stored amounts (Numeric(14, 6) columns)
STORE_QUANTUM = Decimal("0.000001")
CENT = Decimal("0.01")


def usd(value: Decimal | str | int) -> Decimal:
    """Parse a money value exactly (never through float) and quantize for storage."""
    if isinstance(value, float):  # pragma: no cover - guarded by types, kept as a runtime guard
        raise TypeError("money must not be a float")
    return Decimal(value).quantize(STORE_QUANTUM, rounding=ROUND_HALF_UP)


def show(value: Decimal) -> str:
    """Render an amount as a string with at least cents: '0.134', '1.20', '0.00'."""
    q = value.quantize(STORE_QUANTUM).normalize()
    if q == q.to_integral() or -q.as_tuple().exponent < 2:  # type: ignore[operator]
        q = q.quantize(CENT)
    return f"{q:f}"
