"""Turning pydantic's ValidationError into one InputError that names the place (file:line, item id)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.errors import InputError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

#: every key a manifest knows, for "did you mean" hints
_KNOWN_KEYS = (
    "job", "providers", "mode", "defaults", "budget", "output", "prompt", "items", "items_from", "schedule",
    "region", "deadline", "max_price", "failover", "data_policy", "tags", "description", "resolution",
    "aspect_ratio", "format", "max_usd", "key", "cron", "timezone", "id", "references", "output_key", "notify",
    "webhook_url", "webhook_url_env", "on",
)


def validate(model: type[M], data: Any, *, place: Callable[[Loc], str], scope: str = "") -> M:
    """`model.model_validate(data)`, raising InputError at `place(loc)` of the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise_validation(e, place=place, scope=scope)
    except (TypeError, ValueError, RecursionError) as e:  # a validator tripping over odd input
        raise InputError(f"invalid {scope or 'value'}: {e}", where=place(())) from None


def raise_validation(err: ValidationError, *, place: Callable[[Loc], str], scope: str = "") -> NoReturn:
    errors = err.errors(include_url=False)
    first = errors[0]
    loc: Loc = tuple(first["loc"])
    message = describe(first, scope=scope)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    raise InputError(message, where=place(loc)) from None


def describe(error: Any, *, scope: str = "") -> str:
    loc: Loc = tuple(error["loc"])
    dotted = ".".join(str(p) for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        parent = ".".join(str(p) for p in loc[:-1])
        hint = _did_you_mean(key, _KNOWN_KEYS)
        if parent:
            return f"unknown key {key!r} in {parent}{hint}"
        return f"unknown {scope + ' ' if scope else ''}key {key!r}{hint}"
    if kind == "missing":
        return f"missing required key {dotted!r}"
    msg = str(error["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif "input" in error and kind != "model_type":
        msg += f" (got {_short(error['input'])})"
    if not dotted or (len(loc) == 1 and msg.startswith(str(loc[0]))):
        return msg
    return f"{dotted}: {msg}"


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
