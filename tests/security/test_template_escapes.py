"""Jinja2 sandbox escapes, more attack strings than tests/manifest/test_templates.py (and the bad corpus):
attribute walks to __class__/__globals__/__builtins__ through every syntax Jinja offers (dots, subscripts, the
attr filter, escaped names, format strings, loop and macro objects, includes and imports), in the prompt, the
output key template and an item's own prompt. Each must fail validation with a clear InputError that names the
item, says what went wrong, and leaks nothing of the interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.manifest import validate_manifest

ATTACKS = [
    "{{ self.__init__.__globals__ }}",
    "{{ self.__dict__ }}",
    "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "{{ cycler.__init__.__globals__.os.system('id') }}",
    "{{ namespace.__init__.__globals__['__builtins__']['eval']('1') }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ ''['__class__'] }}",
    "{{ title['__class__']['__mro__'] }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ ''|attr('__cla' ~ 'ss__') }}",
    "{{ (title|attr('__class__')|attr('__base__')|attr('__subclasses__'))() }}",
    "{{ ()|attr('__class__') }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__()[40]('/etc/passwd').read() }}",
    "{{ dict.mro() }}",
    "{{ title.__getattribute__('__class__') }}",
    "{{ title.format_map }}",
    "{{ '{0.__class__.__mro__}'.format(title) }}",
    "{{ '{0.__globals__}'.format(lipsum) }}",
    "{{ '%s' % title.__class__ }}",
    "{{ title.__len__() }}",
    "{{ loop.__class__ }}",
    "{% for x in [1] %}{{ loop.__init__.__globals__ }}{% endfor %}",
    "{% macro m() %}{% endmacro %}{{ m.__globals__ }}",
    "{% macro m() %}{% endmacro %}{{ m._func.__globals__ }}",
    "{{ range.__class__ }}",
    "{{ __builtins__ }}",
    "{{ __import__('os') }}",
    "{{ import('os') }}",
    "{{ getattr(title, '__class__') }}",
    "{{ config.__class__.__init__.__globals__ }}",
    "{{ url_for.__globals__ }}",
    "{{ get_flashed_messages.__globals__ }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os }}",
    "{% extends '/etc/passwd' %}",
    "{% from 'os' import system %}",
    "{% set x = title.__class__ %}{{ x }}",
    "{% set f = ''.join %}{{ f.__self__.__class__ }}",
    "{{ (1).__class__.__subclasses__() }}",
    "{{ title.encode.__self__.__class__ }}",
    "{{ [].pop.__self__ }}",
    "{{ {}.__class__.fromkeys }}",
    "{{ title|map(attribute='__class__')|list }}",
    "{{ [title]|map(attribute='__class__.__mro__')|list }}",
    "{{ [title]|selectattr('__class__')|list }}",
    "{{ [title]|sort(attribute='__class__')|first }}",
    "{{ [title]|groupby('__class__')|list }}",
    "{{ title|format(title.__class__) }}",
]


def _manifest(tmp_path: Path, where: str, attack: str) -> Path:
    quoted = '"' + attack.replace("\\", "\\\\").replace('"', '\\"') + '"'
    prompt, key, own = '"Photo of {{ title }}"', '"out/{{ id }}.png"', ""
    if where == "prompt":
        prompt = quoted
    elif where == "output key":
        key = quoted
    else:
        own = f", prompt: {quoted}"
    path = tmp_path / "m.yaml"
    path.write_text(f"job: t\nproviders: [sandbox]\nprompt: {prompt}\noutput: {{key: {key}}}\n"
                    f"items:\n  - {{id: sku-9, title: mug{own}}}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("where", ["prompt", "output key", "item prompt"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_escape_attempts_fail_with_a_clear_error(tmp_path: Path, attack: str, where: str) -> None:
    with pytest.raises(InputError) as info:
        validate_manifest(_manifest(tmp_path, where, attack))
    e = info.value
    assert e.where is not None and ("sku-9" in e.where or "m.yaml:" in e.where), e.where
    text = str(e)
    assert len(e.message) > 10 and "Traceback" not in text
    # nothing of the interpreter came back: no class reprs, module objects, function addresses, file contents
    for leak in ("<class", "<module", "<function", "<built-in", "<bound", " at 0x", "root:x:0:0", "__globals__ = {"):
        assert leak not in text, text
