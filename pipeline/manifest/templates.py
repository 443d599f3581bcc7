"""Jinja2 templates for prompts and output keys: sandboxed, immutable, strict about undefined variables.

The environment is `ImmutableSandboxedEnvironment` with `StrictUndefined` and no autoescape. Beyond that:
- nondeterministic helpers are removed (the `random` filter, `lipsum`), so a prompt renders the same every
  time (the cache key depends on it); `cycler` and `joiner` go too (stateful, no use in a prompt);
- `*` and `**` are intercepted so `'x' * 10**9` or `9 ** 10**8` are refused instead of eating memory or
  CPU, and calls with an integer argument above MAX_INT_ARGUMENT (`'x'.ljust(10**9)`) are refused;
- output is streamed and rendering stops as soon as it passes the caller's length limit.
Every failure (syntax, undefined variable, sandbox violation, anything a template raises) is an InputError.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.errors import InputError

#: longest rendered prompt, in characters
MAX_PROMPT_CHARS = 32_000
#: largest integer argument a template may pass to a call (the sandbox's own range() limit)
MAX_INT_ARGUMENT = 100_000
#: largest exponent in `a ** b`
MAX_EXPONENT = 256
#: largest integer a product or power may make, in bits
MAX_INT_BITS = 100_000
#: compiled templates kept (most manifests have one or two; CSV prompts can have one per row)
CACHE_SIZE = 512
_MARKERS = ("{{", "{%", "{#")


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > MAX_INT_BITS:
                raise SecurityError("power result is too large")
            return operator.pow(left, right)
        if isinstance(left, int) and isinstance(right, int) and (
            left.bit_length() + right.bit_length() > MAX_INT_BITS
        ):
            raise SecurityError("product is too large")
        for seq, times in ((left, right), (right, left)):
            if (isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
                    and len(seq) * times > MAX_PROMPT_CHARS):
                raise SecurityError("repetition result is too large")
        return operator.mul(left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
                raise SecurityError(f"integer argument {value} is too large")
        return super().call(__context, __obj, *args, **kwargs)


    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """Refuse at once. Jinja's sandbox returns an Undefined here, which `map(attribute='__class__')`, `sort`
        and `groupby` would print as "Undefined" without any error."""
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")


#: how deep `_printable` looks into printed lists and mappings
_PRINT_DEPTH = 8


def _printable(value: Any, depth: int = 0) -> Any:
    """What `{{ ... }}` may print (the environment's finalize): anything but functions, methods, classes and
    modules, also inside lists and mappings. `{{ title.upper }}` (the call forgotten) would print a memory
    address, so the prompt, and the cache key made from it, would differ from run to run; an undefined
    variable inside a list would print as "Undefined"."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the variable
    if isinstance(value, types.ModuleType | type) or callable(value):
        raise SecurityError(f"a template cannot print a {type(value).__name__} (a call missing its ()?)")
    if depth < _PRINT_DEPTH:
        if isinstance(value, Mapping):
            for k, v in value.items():
                _printable(k, depth + 1)
                _printable(v, depth + 1)
        elif isinstance(value, list | tuple | set | frozenset):
            for v in value:
                _printable(v, depth + 1)
    return value


class TemplateRenderer:
    """Compiles (with a small cache) and renders templates; one per expansion, not shared between threads."""

    def __init__(self) -> None:
        self._env = _Environment(undefined=StrictUndefined, autoescape=False, finalize=_printable)
        for name in ("lipsum", "cycler", "joiner"):
            self._env.globals.pop(name, None)
        self._env.filters.pop("random", None)
        self._cache: dict[str, Template] = {}

    def compile(self, source: str, *, what: str, where: str) -> Template:
        cached = self._cache.get(source)
        if cached is not None:
            return cached
        try:
            template = self._env.from_string(source)
        except TemplateSyntaxError as e:
            raise InputError(f"{what} template syntax error: {e.message} (template line {e.lineno})",
                             where=where) from None
        except (TemplateError, RecursionError, MemoryError, ValueError) as e:
            raise InputError(f"{what} template cannot be compiled: {e}", where=where) from None
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[source] = template
        return template

    def render(self, source: str, context: Mapping[str, Any], *, what: str, where: str,
               max_chars: int = MAX_PROMPT_CHARS) -> str:
        """Render `source` with `context`; the result is stripped of surrounding whitespace."""
        if not any(m in source for m in _MARKERS):
            text = source
        else:
            template = self.compile(source, what=what, where=where)
            parts: list[str] = []
            size = 0
            try:
                for chunk in template.generate(dict(context)):
                    size += len(chunk)
                    if size > 2 * max_chars + 1024:  # surrounding whitespace is stripped below
                        break
                    parts.append(chunk)
            except UndefinedError as e:
                raise InputError(f"{what} template: undefined variable: {e.message}{_available(context)}",
                                 where=where) from None
            except SecurityError as e:
                raise InputError(f"{what} template: not allowed: {e.message}", where=where) from None
            except TemplateError as e:
                raise InputError(f"{what} template: {e.message or type(e).__name__}", where=where) from None
            except Exception as e:  # a template can raise anything Python can (1/0, 'a' + 1, recursion)
                raise InputError(f"{what} template failed: {type(e).__name__}: {e}", where=where) from None
            text = "".join(parts)
        text = text.strip()
        if len(text) > max_chars:
            raise InputError(f"rendered {what} is longer than {max_chars} characters", where=where)
        return text


def _available(context: Mapping[str, Any]) -> str:
    names = sorted(k for k in context if isinstance(k, str))
    shown = ", ".join(names[:25]) + (", ..." if len(names) > 25 else "")
    return f" (variables: {shown})"
