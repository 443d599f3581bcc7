"""Sandboxed Jinja2: escapes, undefined variables, resource limits -> InputError naming the item."""

from __future__ import annotations

import time

import pytest

from pipeline.errors import InputError
from pipeline.manifest import MAX_PROMPT_CHARS, load_manifest, validate_manifest
from pipeline.manifest.templates import TemplateRenderer

from .conftest import WriteManifest


def _one_item(prompt: str) -> str:
    escaped = prompt.replace("\\", "\\\\").replace('"', '\\"')
    return f'job: t\nproviders: [sandbox]\nitems:\n  - {{id: sku-9, title: mug, prompt: "{escaped}"}}\n'


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__.os }}",
    "{{ title.__class__.__base__.__subclasses__() }}",
    "{{ range.__self__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ (title|attr('__class__')).__mro__ }}",
    "{{ request.application.__globals__ }}",
    "{{ config.items() }}",
    "{% set x = [].append %}{{ x(1) }}",
    "{{ {}.update(a=1) }}",
    "{{ lipsum.__globals__ }}",
    "{{ title | random }}",
    "{{ 'a'.format.__globals__ }}",
]


@pytest.mark.parametrize("prompt", ESCAPES)
def test_sandbox_escapes_are_input_errors(write_manifest: WriteManifest, prompt: str) -> None:
    with pytest.raises(InputError) as info:
        validate_manifest(write_manifest(_one_item(prompt)))
    assert info.value.where is not None and info.value.where.endswith("(item sku-9)")


BOMBS = [
    "{{ 'x' * 1000000000 }}",
    "{{ ['x'] * 1000000000 }}",
    "{{ 9 ** 99999999 }}",
    "{{ ((9 ** 200) ** 200) ** 200 }}",
    "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 'x'.center(width=1000000000) }}",
    "{% for i in range(1000000) %}x{% endfor %}",
    "{% for i in range(99999) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ 1 / 0 }}",
    "{{ title + 1 }}",
]


@pytest.mark.parametrize("prompt", BOMBS)
def test_resource_bombs_fail_fast(write_manifest: WriteManifest, prompt: str) -> None:
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        validate_manifest(write_manifest(_one_item(prompt)))
    assert time.monotonic() - started < 2.0
    assert info.value.where is not None and "(item sku-9)" in info.value.where


def test_undefined_variable_names_variable_and_item(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        'job: t\nproviders: [sandbox]\nprompt: "{{ title }} in {{ colour }}"\n'
        "items:\n  - {id: a, title: mug, colour: red}\n  - {id: b, title: cup}\n"
    )
    with pytest.raises(InputError) as info:
        validate_manifest(path)
    assert info.value.where == f"{path}:6 (item b)"
    assert "'colour' is undefined" in info.value.message
    assert "title" in info.value.message  # the variables that do exist are listed


def test_undefined_attribute_is_an_error(write_manifest: WriteManifest) -> None:
    with pytest.raises(InputError, match="has no attribute"):
        validate_manifest(write_manifest(_one_item("{{ title.nothing_here }}")))


def test_prompt_limits(write_manifest: WriteManifest) -> None:
    with pytest.raises(InputError, match="renders empty"):
        validate_manifest(write_manifest(_one_item("{{ '' }}   ")))
    long_prompt = "{{ title }}" + "y" * MAX_PROMPT_CHARS
    with pytest.raises(InputError, match="longer than 32000"):
        validate_manifest(write_manifest(_one_item(long_prompt)))
    ok = "{{ title }} " + "y" * (MAX_PROMPT_CHARS - 4)
    assert len(validate_manifest(write_manifest(_one_item(ok))).items[0].prompt) == MAX_PROMPT_CHARS


def test_syntax_error_in_job_prompt_names_its_line(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        'job: t\nproviders: [sandbox]\n\nprompt: "{% if title %}no end"\nitems:\n  - {id: a}\n'
    )
    with pytest.raises(InputError, match="syntax error") as info:
        load_manifest(path)
    assert info.value.where == f"{path}:4"


def test_filters_loops_and_conditionals_work(write_manifest: WriteManifest) -> None:
    prompt = (
        "{{ title | title }}{% for f in features %}, {{ f }}{% endfor %}"
        "{% if index == 0 %} (first){% endif %}"
    )
    path = write_manifest(
        f'job: t\nproviders: [sandbox]\nprompt: "{prompt}"\n'
        "items:\n  - {id: a, title: steel mug, features: [light, strong]}\n"
    )
    assert validate_manifest(path).items[0].prompt == "Steel Mug, light, strong (first)"


def test_renderer_is_deterministic_and_strips() -> None:
    renderer = TemplateRenderer()
    out = {
        renderer.render("  {{ a }}-{{ b }}\n", {"a": 1, "b": "x"}, what="prompt", where="w") for _ in range(5)
    }
    assert out == {"1-x"}
    assert renderer.render("no markers {here}", {}, what="prompt", where="w") == "no markers {here}"
