"""The Jinja2 environment templates render in: sandboxed, immutable, and bounded in memory and time.

A template is user input that runs. Jinja's sandbox stops it from reaching Python's internals; this module stops
it from eating the machine. Every render (and compile: Jinja folds constants at compile time) has a budget:

- no single value (string or list) longer than MAX_VALUE_CHARS: checked BEFORE the operations that amplify
  their inputs build it (`*`, `+`, `~`, `%`, `str.format` widths and precisions, `center`/`ljust`/`rjust`/
  `zfill`/`expandtabs`/`replace`/`join`, the `indent`, `center`, `replace`, `join` and `format` filters);
- at most MAX_WORK_CHARS characters made in all by such operations, captured blocks and macro bodies
  (`{% set %}...{% endset %}`) and loop bodies;
- at most MAX_LOOP_ITERATIONS iterations of all `{% for %}` loops together (nested loops multiply);
- at most MAX_RENDER_S seconds of wall-clock time, checked at every loop iteration, call and filter;
- integer arguments of calls and filters at most MAX_INT_ARGUMENT, exponents at most MAX_EXPONENT, products
  and powers at most MAX_INT_BITS bits.
Passing a limit raises jinja2's SecurityError; the renderer turns it into an InputError naming the item.
"""

from __future__ import annotations

import functools
import operator
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: longest string or list a template may build, in characters (items)
MAX_VALUE_CHARS = 2_000_000
#: characters a render may make in all through string-building operations
MAX_WORK_CHARS = 20_000_000
#: loop iterations in one render, all loops together
MAX_LOOP_ITERATIONS = 1_000_000
#: wall-clock time of one render (or compile), in seconds
MAX_RENDER_S = 5.0
#: largest integer argument a template may pass to a call or filter (the sandbox's own range() limit)
MAX_INT_ARGUMENT = 100_000
#: largest exponent in `a ** b`
MAX_EXPONENT = 256
#: largest integer a product or power may make, in bits
MAX_INT_BITS = 100_000
#: how often (iterations) a loop checks the clock
_CLOCK_EVERY = 256
#: width / precision / count digits inside a printf-style or format() spec
_DIGITS = re.compile(r"\d+")
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_LOOP_GUARD = "__pipeline_loop_guard"


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict | set | frozenset) else 0


def _ints(values: Iterable[Any]) -> int:
    return sum(abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool))


def _text_len(values: Iterable[Any]) -> int:
    """Characters of the values as text (what formatting or joining them makes)."""
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in values)


def _format_bound(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound of len(fmt.format(*args, **kwargs)): every number in a spec may be a width or precision,
    and a nested `{}` in a spec takes an integer argument."""
    bound = len(fmt)
    try:
        for _text, _field, spec, _conv in string.Formatter().parse(fmt):
            if spec:
                bound += sum(int(d) for d in _DIGITS.findall(spec)) + 1
    except ValueError:
        return bound  # a malformed format raises when it is applied
    values = (*args, *kwargs.values())
    if any(isinstance(v, dict) for v in values):
        values = (*values, *(x for v in values if isinstance(v, dict) for x in v.values()))
    return bound + _text_len(values) + _ints(values)


def _printf_bound(fmt: str, args: Any) -> int:
    """An upper bound of len(fmt % args)."""
    values = args if isinstance(args, tuple) else (args,)
    if isinstance(args, dict):
        values = tuple(args.values())
    bound = len(fmt) + _text_len(values) + 24 * len(values)
    for m in _PRINTF_SPEC.finditer(fmt):
        for group in m.groups():
            if group == "*":
                bound += _ints(values)
            elif group:
                bound += int(group)
    return bound


def _str_method_bound(s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """An upper bound of the length of `s.<name>(*args, **kwargs)` for the methods that can amplify."""
    n = len(s)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        return max(n, width if isinstance(width, int) else 0)
    if name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        return n + s.count("\t") * (tab if isinstance(tab, int) else 0)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = n + 1 if args[0] == "" else s.count(args[0])
        return n + hits * max(len(args[1]) - len(args[0]), 0)
    if name in ("format", "format_map"):
        if name == "format_map" and args and isinstance(args[0], dict):
            return _format_bound(s, (), dict(args[0]))
        return _format_bound(s, args, kwargs)
    return None


class _Budget:
    """What one render may still spend."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.work = 0
        self.iterations = 0
        self.steps = 0
        self.deadline = time.monotonic() + MAX_RENDER_S

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"the template takes longer than {MAX_RENDER_S:g} s to render")

    def tick(self) -> None:
        """A cheap step: the clock is read every _CLOCK_EVERY steps."""
        self.steps += 1
        if self.steps % _CLOCK_EVERY == 0:
            self.clock()

    def value(self, size: int, what: str = "a value") -> None:
        """Refuse making `what` of `size` characters; count it as work."""
        if size > MAX_VALUE_CHARS:
            raise SecurityError(f"{what} would be {size:,} characters long, more than {MAX_VALUE_CHARS:,}")
        self.work += size
        if self.work > MAX_WORK_CHARS:
            raise SecurityError(f"the template builds more than {MAX_WORK_CHARS:,} characters of text")

    def iterate(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.iterations += 1
            if self.iterations > MAX_LOOP_ITERATIONS:
                raise SecurityError(f"the template's loops run more than {MAX_LOOP_ITERATIONS:,} iterations")
            if self.iterations % _CLOCK_EVERY == 0:
                self.clock()
            yield item


class _CodeGenerator(CodeGenerator):
    """`a ~ b` goes through the environment's bounded join instead of Jinja's plain str_join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.str_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


#: filters whose result can be much larger than their input (or costly to make): bounded before they run
_BOUNDED_FILTERS = frozenset({"center", "indent", "replace", "format", "wordwrap", "join", "sum"})


def _filter_bound(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    value = args[0] if args else ""
    rest = args[1:]
    if name == "center":
        width = rest[0] if rest else kwargs.get("width", 80)
        return max(_size(value), width if isinstance(width, int) else 0)
    if name == "indent" and isinstance(value, str):
        width = rest[0] if rest else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else (width if isinstance(width, int) else 0)
        return len(value) + (value.count("\n") + 1) * per_line
    if name == "replace" and isinstance(value, str) and len(rest) >= 2:
        return _str_method_bound(value, "replace", tuple(str(a) for a in rest[:2]), {})
    if name == "format" and isinstance(value, str):
        return _printf_bound(value, tuple(rest) if rest else dict(kwargs))
    if name == "wordwrap" and isinstance(value, str):
        return 2 * len(value) + 1
    return None


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the budget above. One per renderer; not shared between threads."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.budget = _Budget()
        self.filters = {name: self._guarded_filter(name, fn) for name, fn in self.filters.items()}
        self.filters[_LOOP_GUARD] = self._loop_guard

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """Refuse at once. Jinja's sandbox returns an Undefined here, which `map(attribute='__class__')`, `sort`
        and `groupby` would print as "Undefined" without any error."""
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    # -- the budget's entry points ---------------------------------------------------------------------------
    def begin(self) -> None:
        """A new render (or compile) starts: a fresh budget."""
        self.budget.start()

    def concat(self, parts: Iterable[Any]) -> str:
        """Joins output buffers (captured blocks, macro bodies): bounded."""
        return self._join(parts, "a captured block")

    def str_concat(self, parts: Iterable[Any]) -> str:
        return self._join((str(p) for p in parts), "a `~` concatenation")

    def _join(self, parts: Iterable[Any], what: str) -> str:
        collected: list[str] = []
        total = 0
        for part in parts:
            total += len(part)
            if total > MAX_VALUE_CHARS:
                self.budget.value(total, what)
            collected.append(part)
        self.budget.value(total, what)
        return "".join(collected)

    def _loop_guard(self, iterable: Iterable[Any]) -> Iterator[Any]:
        return self.budget.iterate(iterable)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Every `{% for %}` iterates through the loop guard (counted iterations, the clock checked), applied as a
        filter: a direct call, cheaper than a sandboxed one."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_GUARD, [], [], None, None, lineno=loop.lineno)
        return tree

    # -- calls, filters and operators --------------------------------------------------------------------------
    def _guarded_filter(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0
        budget = self.budget

        if name not in _BOUNDED_FILTERS:
            @functools.wraps(fn)
            def plain(*args: Any, **kwargs: Any) -> Any:
                """A filter whose result is at most a few times its input: checked after, cheaply."""
                budget.tick()
                if kwargs or len(args) > skip + 1:
                    _check_int_args(args[skip + 1:], kwargs.values())
                result = fn(*args, **kwargs)
                if isinstance(result, str | list | tuple) and len(result) > 256:
                    budget.value(len(result), f"the `{name}` filter's result")
                return result

            return plain

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            budget.clock()
            values = args[skip:]
            _check_int_args(values[1:], kwargs.values())
            if name == "sum" and not isinstance(kwargs.get("start", values[2] if len(values) > 2 else 0), int | float):
                raise SecurityError("the `sum` filter adds numbers only")
            bound: int | None
            if name == "join" and values:
                items = list(values[0]) if not isinstance(values[0], str) else values[0]
                sep = values[1] if len(values) > 1 else kwargs.get("d", "")
                bound = _text_len(items) + max(len(items) - 1, 0) * len(str(sep))
                self.budget.value(bound, "the `join` filter's result")
                args = (*args[: len(args) - len(values)], items, *values[1:])
            else:
                bound = _filter_bound(name, tuple(values), kwargs)
                if bound is not None:
                    self.budget.value(bound, f"the `{name}` filter's result")
            result = fn(*args, **kwargs)
            if bound is None and isinstance(result, str | list | tuple):
                self.budget.value(len(result), f"the `{name}` filter's result")
            return result

        return guarded

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > MAX_INT_BITS:
                raise SecurityError("power result is too large")
            return operator.pow(left, right)
        if operator_ == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                self.budget.value(len(left) + len(right), "a `+` result")
            return operator.add(left, right)
        if operator_ == "%":
            if isinstance(left, str):
                self.budget.value(_printf_bound(left, right), "a `%` formatted string")
            return operator.mod(left, right)
        if isinstance(left, int) and isinstance(right, int) and (
            left.bit_length() + right.bit_length() > MAX_INT_BITS
        ):
            raise SecurityError("product is too large")
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int) and not isinstance(times, bool):
                self.budget.value(len(seq) * max(times, 0), "a repetition")
        return operator.mul(left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.budget.clock()
        _check_int_args(args, kwargs.values())
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name == "join" and args:
                items = [str(x) for x in __self.budget.iterate(args[0])]
                __self.budget.value(sum(map(len, items)) + max(len(items) - 1, 0) * len(owner), "a `join` result")
                args = (items, *args[1:])
            else:
                bound = _str_method_bound(owner, name, args, kwargs)
                if bound is not None:
                    __self.budget.value(bound, f"the result of `{name}`")
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str | list | tuple):
            __self.budget.value(len(result), "a call's result")
        return result


def _check_int_args(*groups: Iterable[Any]) -> None:
    for group in groups:
        for value in group:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
                raise SecurityError(f"integer argument {value} is too large")
