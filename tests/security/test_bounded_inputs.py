"""Issue 13, class 6 (input side): bounded memory and CPU for documents, templates, references and profiles.

Templates and documents run in a child process whose address space is capped at 1 GB: every hostile input must
end in an InputError (no MemoryError, no traceback) within the documented bound (template_limits.MAX_RENDER_S,
5 s, plus start-up). The worker's re-read of a reference applies submit's limits: /dev/zero, a FIFO, a directory
or an oversize file fail the item at once, with no maybe-billed attempt and nothing paid.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image
from sqlalchemy import select

from pipeline.clock import utcnow
from pipeline.config import load_settings
from pipeline.core.process import Outcome, process_item
from pipeline.db.models import Attempt, Item
from pipeline.errors import InputError
from pipeline.manifest.template_limits import MAX_RENDER_S
from pipeline.references import MAX_REFERENCE_BYTES
from pipeline.runtime import open_runtime
from pipeline.sandbox.profile import MAX_PROFILE_BYTES, load_profile
from pipeline.sandbox.server import start_sandbox
from pipeline.services import load, submit

#: address space of the child that renders hostile templates
LIMIT_BYTES = 1 << 30

TEMPLATES = {
    "namespace-doubling-concat": "{% set ns = namespace(s='x') %}{% for i in range(80) %}{% set ns.s = ns.s ~ ns.s %}"
                                 "{% endfor %}{{ ns.s|length }}",
    "namespace-doubling-plus": "{% set ns = namespace(s=['x']) %}{% for i in range(80) %}{% set ns.s = ns.s + ns.s %}"
                               "{% endfor %}{{ ns.s|length }}",
    "nested-range-loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested-loops-with-work": "{% for i in range(100000) %}{% set x = range(100000)|map('string')|join %}"
                              "{% endfor %}",
    "format-width": "{{ '{:>999999999}'.format('x') }}",
    "format-precision": "{{ '{:.99999999f}'.format(1.0) }}",
    "printf-width": "{{ '%999999999s' % 'x' }}",
    "format-filter": "{{ '%999999999s'|format('x') }}",
    "replace-amplifies": "{{ big.replace('y', big) }}",
    "replace-filter": "{{ big|replace('y', big) }}",
    "captured-block": "{% set x %}{% for i in range(100000) %}{{ big }}{% endfor %}{% endset %}{{ x|length }}",
    "join-separator": "{{ range(100000)|join(big) }}",
    "str-join": "{{ big.join(range(100000)|map('string')) }}",
    "map-center": "{{ range(100000)|map('center', 100000)|join }}",
    "expandtabs": "{{ ('\\t' * 30000).expandtabs(100000) }}",
    "macro-fork-bomb": "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "sum-of-lists": "{{ [[1]] * 100000|sum(start=[]) }}",
    "tojson-of-list": "{{ (big|list)|tojson|length }}",
    "recursive-loop": "{% for i in range(100000) recursive %}{{ loop(range(100000)) }}{% endfor %}",
}

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from pipeline.errors import InputError
    from pipeline.manifest.templates import TemplateRenderer
    out = {{}}
    for name, src in json.loads(sys.stdin.read()).items():
        t = time.monotonic()
        try:
            TemplateRenderer().render(src, {{"title": "mug", "big": "y" * 1_000_000}}, what="prompt", where="x")
            outcome = "rendered"
        except InputError as e:
            outcome = "refused: " + e.message
        except BaseException as e:
            outcome = "CRASHED " + type(e).__name__
        out[name] = [outcome, time.monotonic() - t]
    print(json.dumps(out))
""")


def _child(code: str, stdin: str = "", timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(600)
def test_hostile_templates_are_refused_within_the_bound_without_memory_errors() -> None:
    res = _child(CHILD.format(limit=LIMIT_BYTES), json.dumps(TEMPLATES))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    outcomes = json.loads(res.stdout)
    for name, (outcome, seconds) in outcomes.items():
        assert outcome.startswith("refused: "), (name, outcome)
        assert seconds < MAX_RENDER_S + 2.0, (name, seconds)
    print("template figures:", {k: f"{v[1]:.2f}s" for k, v in outcomes.items()})


def test_an_ordinary_template_renders_under_the_budget() -> None:
    from pipeline.manifest.templates import TemplateRenderer

    src = ("{{ title|title }}{% for f in features %}, {{ f|upper }}{% endfor %} "
           "{{ '%05.1f'|format(3.14159) }} {{ '{:>8}'.format(sku) }} {{ (notes ~ ' ')[:10] }}")
    out = TemplateRenderer().render(src, {"title": "steel mug", "features": ["light", "strong"], "sku": "A1",
                                          "notes": "n" * 500_000}, what="prompt", where="x")
    assert out == "Steel Mug, LIGHT, STRONG 003.1       A1 nnnnnnnnnn"


@pytest.mark.timeout(300)
def test_a_big_string_reused_through_aliases_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    lines = ["job: alias", "providers: [sandbox]", "prompt: '{{ id }}'", "items:",
             f'  - {{id: i0, title: &big "{"y" * 1_000_000}"}}']
    lines += [f"  - {{id: i{i}, title: *big}}" for i in range(1, 3000)]
    (tmp_path / "m.yaml").write_text("\n".join(lines) + "\n")
    code = textwrap.dedent(f"""
        import resource, time
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_BYTES}, {LIMIT_BYTES}))
        from pathlib import Path
        from pipeline.errors import InputError
        from pipeline.manifest import validate_manifest
        t = time.monotonic()
        try:
            validate_manifest(Path({str(tmp_path / 'm.yaml')!r}))
            print("accepted")
        except InputError as e:
            print("refused", str(e), round(time.monotonic() - t, 2))
    """)
    res = _child(code)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.stdout.startswith("refused") and "m.yaml:5" in res.stdout and "aliases" in res.stdout, res.stdout
    assert float(res.stdout.split()[-1]) < 10.0


def test_sandbox_profiles_are_read_capped(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("seed: 1\n" + "#" * (MAX_PROFILE_BYTES + 10) + "\n")
    with pytest.raises(InputError, match=f"more than {MAX_PROFILE_BYTES}"):
        load_profile(huge)
    with pytest.raises(InputError, match="not a regular file"):
        load_profile("/dev/zero")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)))
    with pytest.raises(InputError, match="alias"):
        load_profile(bomb)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("replacement", ["dev-zero", "fifo", "directory", "oversize"])
def test_the_worker_rereads_references_under_submit_limits(tmp_path: Path, replacement: str) -> None:
    ref = tmp_path / "ref.png"
    ref.write_bytes(_png())
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"job": "refs", "providers": ["sandbox"], "prompt": "p {{ id }}",
                                                     "items": [{"id": "a", "references": ["ref.png"]}]}))
    sandbox = start_sandbox({"protocols": {"gemini": {"latency": {"min_s": 0.01, "max_s": 0.02}}}})
    try:
        cfg = tmp_path / "pipeline.yaml"
        cfg.write_text(yaml.safe_dump({"database_url": f"sqlite:///{tmp_path / 'p.db'}",
                                       "storage_url": f"file://{tmp_path / 'out'}",
                                       "providers": {"sandbox": {"base_url": sandbox.url}}}))
        settings = load_settings(cfg, env={})
        loaded = load(tmp_path / "m.yaml", settings)
        rt = open_runtime(settings)
        try:
            res = submit(rt, loaded, utcnow())
            ref.unlink()  # after submit, the file is swapped for something hostile
            if replacement == "dev-zero":
                ref.symlink_to("/dev/zero")
            elif replacement == "fifo":
                os.mkfifo(ref)
            elif replacement == "directory":
                ref.mkdir()
            else:
                with ref.open("wb") as f:
                    f.truncate(MAX_REFERENCE_BYTES + 1)
            with rt.sessions() as s:
                item_id = int(s.scalar(select(Item.id).where(Item.job_id == res.job_id)) or 0)
            assert process_item(rt.ctx, item_id) == Outcome.FAILED
            with rt.sessions() as s:
                item = s.get_one(Item, item_id)
                attempts = list(s.scalars(select(Attempt).where(Attempt.item_id == item_id)))
        finally:
            rt.close()
        billed = sandbox.ledger()["billed_images"]
    finally:
        sandbox.stop()
    assert item.state == "failed" and item.failure_reason and "ref.png" in item.failure_reason
    assert [a.maybe_billed for a in attempts] == [False] and billed == 0
