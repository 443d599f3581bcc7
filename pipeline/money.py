"""Money is Decimal. Six places in storage, cents when shown."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

ZERO = Decimal("0")
#: quantum for stored amounts (Numeric(14, 6) columns)
STORE_QUANTUM = Decimal("0.000001")
CENT = Decimal("0.01")
#: the largest amount a Numeric(14, 6) column holds (8 digits before the point, 6 after)
MAX_STORED_USD = Decimal("99999999.999999")


def storable_problem(value: Decimal) -> str | None:
    """Why `value` cannot be stored as money the same way on Postgres and SQLite, or None when it can: not a
    finite number, negative zero aside, beyond Numeric(14, 6), or more than 6 decimal places (Postgres would
    round them, SQLite keep them)."""
    if not value.is_finite():
        return f"{value} is not a finite amount"
    if abs(value) > MAX_STORED_USD:
        return f"{value} is more than the largest amount stored ({MAX_STORED_USD})"
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        return f"{value} has more than 6 decimal places"
    return None


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
