"""Jinja2 templates for prompts and output keys: sandboxed, immutable, strict about undefined variables.

The environment is template_limits.BoundedEnvironment (Jinja's `ImmutableSandboxedEnvironment` with a budget
of memory, loop iterations and time per render) with `StrictUndefined` and no autoescape. Beyond that:
- nondeterministic helpers are removed (the `random` filter, `lipsum`), so a prompt renders the same every
  time (the cache key depends on it); `cycler` and `joiner` go too (stateful, no use in a prompt);
- output is streamed and rendering stops with an error as soon as it passes the caller's length limit: a
  rendered text is either whole or refused, never shortened.
Every failure (syntax, undefined variable, sandbox violation, anything a template raises) is an InputError.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError

from pipeline.errors import InputError
from pipeline.manifest.template_limits import (
    MAX_EXPONENT,
    MAX_INT_ARGUMENT,
    MAX_INT_BITS,
    MAX_LOOP_ITERATIONS,
    MAX_RENDER_S,
    MAX_VALUE_CHARS,
    BoundedEnvironment,
)

__all__ = ["MAX_EXPONENT", "MAX_INT_ARGUMENT", "MAX_INT_BITS", "MAX_LOOP_ITERATIONS", "MAX_PROMPT_CHARS",
           "MAX_RENDER_S", "MAX_VALUE_CHARS", "TemplateRenderer"]

#: longest rendered prompt, in characters (OpenAI's image APIs take at most 32,000; Gemini more): a longer
#: one is refused at validate and submit, never shortened
MAX_PROMPT_CHARS = 32_000
#: compiled templates kept (most manifests have one or two; CSV prompts can have one per row)
CACHE_SIZE = 512
_MARKERS = ("{{", "{%", "{#")


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
        self._env = BoundedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=_printable)
        for name in ("lipsum", "cycler", "joiner"):
            self._env.globals.pop(name, None)
        self._env.filters.pop("random", None)
        self._cache: dict[str, Template] = {}

    def compile(self, source: str, *, what: str, where: str) -> Template:
        cached = self._cache.get(source)
        if cached is not None:
            return cached
        try:
            self._env.begin()  # constants are folded at compile time: that spends the budget too
            template = self._env.from_string(source)
        except TemplateSyntaxError as e:
            raise InputError(f"{what} template syntax error: {e.message} (template line {e.lineno})",
                             where=where) from None
        except (TemplateError, RecursionError, MemoryError, ValueError, OverflowError) as e:
            raise InputError(f"{what} template cannot be compiled: {type(e).__name__}: {e}", where=where) from None
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
            limit = 2 * max_chars + 1024  # surrounding whitespace is stripped below
            self._env.begin()
            try:
                for chunk in template.generate(dict(context)):
                    size += len(chunk)
                    if size > limit:  # refused whole: a prompt is never sent shortened
                        raise InputError(f"rendered {what} is longer than {max_chars} characters (it reaches "
                                         f"{size:,} characters before the rest is even rendered)", where=where)
                    parts.append(chunk)
            except InputError:
                raise
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
