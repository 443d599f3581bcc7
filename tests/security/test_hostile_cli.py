"""Every hostile invocation of issue 13 that must be refused, run as a user would: `pipeline ...` in a subprocess,
in a fresh working directory. Each must exit 2 with a message naming the place, print no traceback, and create
nothing (no database, no output directory, no spool: the directory holds exactly what the test put there).

Every hostile manifest is also validated in-process (CliRunner), and the database-limit ones are submitted on
Postgres and SQLite in tests/security/test_db_limits.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.security.cli import Ran, assert_clean_refusal, run_cli, tree

BIG = "x" * 1_000_000
HEAD = "job: hostile\nproviders: [sandbox]\n"


def _manifest(body: str, prompt: str = "Photo of {{ title }}") -> str:
    return HEAD + f"prompt: {json.dumps(prompt)}\n" + body


def _alias_fanout() -> str:
    lines = [f'  - {{id: i0, title: &big "{"y" * 1_000_000}"}}'] + [f"  - {{id: i{i}, title: *big}}" for i in
                                                                     range(1, 30)]
    return _manifest("items:\n" + "\n".join(lines) + "\n", prompt="{{ id }}")


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    expect: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: symbolic links to make: path -> target
    links: dict[str, str] = field(default_factory=dict)


def _m(name: str, text: str, *expect: str, files: dict[str, str | bytes] | None = None,
       links: dict[str, str] | None = None) -> list[Case]:
    """A hostile manifest: refused by `submit` in a subprocess (and by `validate`, in-process, below)."""
    all_files: dict[str, str | bytes] = {"m.yaml": text, **(files or {})}
    return [Case(name, ("submit", "m.yaml"), expect, all_files, links=links or {})]


NO_AWS = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent", "AWS_ACCESS_KEY_ID": "",
          "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
OK = _manifest("items:\n  - {id: a, title: mug}\n")

CASES: list[Case] = [
    # 2. no silent truncation: over the documented maximum, refused naming the item
    *_m("prompt-1mb-variable", _manifest(f'items:\n  - {{id: a, title: "{BIG}"}}\n'),
        "m.yaml:5 (item a)", "longer than 32000 characters"),
    *_m("prompt-range-string", _manifest("items:\n  - {id: a}\n", prompt="{{ range(100000)|list|string }}"),
        "(item a)", "longer than 32000 characters"),
    # 6. bounded templates and documents
    *_m("jinja-namespace-doubling", _manifest("items:\n  - {id: a}\n", prompt=(
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
        "{{ ns.s|length }}")), "(item a)", "more than 2,000,000"),
    *_m("jinja-nested-loops", _manifest("items:\n  - {id: a}\n", prompt=(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x")),
        "(item a)", "more than 1,000,000 iterations"),
    *_m("jinja-format-width", _manifest("items:\n  - {id: a}\n", prompt="{{ '{:>999999999}'.format('x') }}"),
        "(item a)", "more than 2,000,000"),
    *_m("jinja-printf-precision", _manifest("items:\n  - {id: a}\n", prompt="{{ '%.999999999f' % 1.0 }}"),
        "(item a)", "more than 2,000,000"),
    *_m("yaml-1mb-alias-fanout", _alias_fanout(), "m.yaml:5", "characters of text with its aliases"),
    # 3. what Postgres cannot store, refused in the manifest layer for both databases
    *_m("money-overflow", HEAD + "budget: {max_usd: 123456789}\nprompt: x\nitems: [{id: a}]\n",
        "m.yaml:3", "largest amount stored"),
    *_m("money-decimals", HEAD + "budget: {max_usd: 1.0000001}\nprompt: x\nitems: [{id: a}]\n",
        "m.yaml:3", "6 decimal places"),
    *_m("max-price-overflow", HEAD + "max_price: 1e+9\nprompt: x\nitems: [{id: a}]\n", "m.yaml:3"),
    *_m("nul-in-yaml", _manifest('items:\n  - {id: a, title: "mug\\0cup"}\n'), "m.yaml:5 (item a)", "NUL"),
    *_m("nul-in-csv", _manifest("items_from: items.csv\n"), "items.csv:2 (item a)", "NUL",
        files={"items.csv": "id,title\na,mug\x00cup\n"}),
    *_m("nul-in-jsonl", _manifest("items_from: items.jsonl\n"), "items.jsonl:1 (item a)", "NUL",
        files={"items.jsonl": '{"id": "a", "title": "mug\\u0000"}\n'}),
    *_m("nul-in-description", HEAD + 'description: "a\\0b"\nprompt: x\nitems: [{id: a}]\n', "m.yaml:3", "NUL"),
    *_m("lone-surrogate-jsonl", _manifest("items_from: items.jsonl\n"), "items.jsonl:1 (item a)", "surrogate",
        files={"items.jsonl": '{"id": "a", "title": "\\ud800"}\n'}),
    # rough edges
    *_m("number-overflows-to-inf-yaml", _manifest("items:\n  - {id: a, title: 1.0e+999}\n"),
        "m.yaml:5 (item a)", "infinity"),
    *_m("number-overflows-to-inf-jsonl", _manifest("items_from: items.jsonl\n"), "items.jsonl:1", "infinity",
        files={"items.jsonl": '{"id": "a", "title": 1e999}\n'}),
    *_m("nan", _manifest("items:\n  - {id: a, title: .nan}\n"), "m.yaml:5", "nan"),
    *_m("bidi-override-id", _manifest('items:\n  - {id: "inv\\u202Egnp.exe", title: mug}\n'),
        "m.yaml:5", "U+202E"),
    *_m("control-id", _manifest('items:\n  - {id: "a\\x07b", title: mug}\n'), "m.yaml:5", "control"),
    *_m("zero-width-tag", _manifest('items:\n  - {id: a, title: mug, tags: ["x\\u200By"]}\n'), "m.yaml:5",
        "U+200B"),
    *_m("jsonl-duplicate-key", _manifest("items_from: items.jsonl\n"), "items.jsonl:1", "duplicate key 'title'",
        files={"items.jsonl": '{"id": "a", "title": "mug", "title": "cup"}\n'}),
    *_m("unknown-region", HEAD + "region: MARS\nprompt: x\nitems: [{id: a}]\n", "m.yaml:3",
        "region 'MARS' is not a region"),
    *_m("deadline-passed", HEAD + "deadline: '2001-01-01T00:00:00'\nprompt: x\nitems: [{id: a}]\n", "m.yaml:3",
        "already passed"),
    *_m("deadline-overflow", HEAD + "deadline: 99999999999d\nprompt: x\nitems: [{id: a}]\n", "m.yaml:3",
        "too far"),
    *_m("deadline-zero", HEAD + "deadline: 0s\nprompt: x\nitems: [{id: a}]\n", "m.yaml:3", "future"),
    *_m("output-key-in-cache", _manifest("output: {key: '_cache/{{ id }}.png'}\nitems:\n  - {id: a, title: x}\n"),
        "(item a)", "_cache"),
    *_m("reference-dev-zero", _manifest("items:\n  - {id: a, title: x, references: [zero.png]}\n"),
        "(item a)", "reference 'zero.png'", links={"zero.png": "/dev/zero"}),
    *_m("reference-fifo-outside", _manifest("items:\n  - {id: a, title: x, references: [/dev/zero]}\n"),
        "(item a)", "reference '/dev/zero'"),
    # 1. the storage location is checked before anything is paid
    *_m("output-link-outside", OK, "storage_url", "'link' leads outside it", files={"outside/x": ""},
        links={"output/link": "../outside"}),
    *_m("output-cache-link", OK, "storage_url", "_cache is a symbolic link", files={"outside/x": ""},
        links={"output/_cache": "../outside"}),
    Case("prompt-1mb-variable-validate", ("validate", "m.yaml"), ("m.yaml:5 (item a)", "longer than 32000"),
         {"m.yaml": _manifest(f'items:\n  - {{id: a, title: "{BIG}"}}\n')}),
    Case("output-link-outside-validate", ("validate", "m.yaml"), ("'link' leads outside it",),
         {"m.yaml": OK, "outside/x": ""}, links={"output/link": "../outside"}),
    Case("output-link-outside-run", ("run", "m.yaml"), ("'link' leads outside it",), {"m.yaml": OK, "outside/x": ""},
         links={"output/link": "../outside"}),
    Case("output-link-outside-worker", ("worker",), ("'link' leads outside it",), {"outside/x": ""},
         links={"output/link": "/"}),
    # configuration and arguments
    Case("status-missing-job-no-db", ("status", "nojob"), ("no database at .pipeline/pipeline.db",)),
    Case("report-missing-job-no-db", ("report", "nojob"), ("no database",)),
    Case("cancel-no-db", ("cancel", "nojob"), ("no database",)),
    Case("ftp-storage", ("run", "m.yaml"), ("unsupported storage URL",), {"m.yaml": OK},
         env={"PIPELINE_STORAGE_URL": "ftp://host/x"}),
    Case("s3-no-credentials", ("run", "m.yaml"), ("no usable AWS credentials",), {"m.yaml": OK},
         env={"PIPELINE_STORAGE_URL": "s3://no-such-bucket-13", **NO_AWS}),
    Case("s3-unknown-profile", ("run", "m.yaml"), ("AWS settings", "cannot set up the S3 client"), {"m.yaml": OK},
         env={"PIPELINE_STORAGE_URL": "s3://no-such-bucket-13", **NO_AWS, "AWS_PROFILE": "no-such-profile-13"}),
    Case("database-garbage", ("run", "m.yaml"), ("PIPELINE_DATABASE_URL", "not a database URL"), {"m.yaml": OK},
         env={"PIPELINE_DATABASE_URL": "garbage"}),
    Case("database-mysql", ("status", "x"), ("unsupported database 'mysql'",),
         env={"PIPELINE_DATABASE_URL": "mysql://u:p@localhost/db"}),
    Case("database-memory", ("run", "m.yaml"), ("in-memory SQLite",), {"m.yaml": OK},
         env={"PIPELINE_DATABASE_URL": "sqlite:///:memory:"}),
    Case("database-missing-directory", ("run", "m.yaml"), ("does not exist: missing/dir",), {"m.yaml": OK},
         env={"PIPELINE_DATABASE_URL": "sqlite:///missing/dir/p.db"}),
    Case("config-dev-zero", ("validate", "m.yaml", "--config", "/dev/zero"), ("/dev/zero", "not a regular file"),
         {"m.yaml": OK}),
    Case("config-money-overflow", ("validate", "m.yaml"), ("budget.daily_usd", "largest amount"),
         {"m.yaml": OK, "pipeline.yaml": "budget: {daily_usd: 1e+12}\n"}),
    Case("sandbox-port", ("sandbox", "--port", "99999"), ("--port", "65535")),
    Case("sandbox-profile-dev-zero", ("sandbox", "--profile", "/dev/zero"), ("not a regular file",)),
    Case("sandbox-profile-huge", ("sandbox", "--profile", "huge.yaml"), ("more than 1000000",),
         {"huge.yaml": "seed: 1\n" + "#" * 3_000_000 + "\n"}),
    Case("report-csv-missing-directory", ("report", "--csv", "no/such/dir/r.csv"), ("--csv", "does not exist"),),
    Case("report-html-file-as-directory", ("report", "x", "--html", "m.yaml/r.html"), ("--html",), {"m.yaml": OK}),
]


def _prepare(root: Path, case: Case) -> None:
    for rel, content in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    for rel, target in case.links.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Ran, set[str], set[str]]]]:
    """Every case run once, four at a time: (what it printed, the tree before, the tree after)."""
    base = tmp_path_factory.mktemp("hostile")

    def one(case: Case) -> tuple[str, tuple[Ran, set[str], set[str]]]:
        root = base / case.name
        root.mkdir()
        _prepare(root, case)
        before = tree(root)
        ran = run_cli(root, *case.args, env=case.env, timeout=120)
        return case.name, (ran, before, tree(root))

    with ThreadPoolExecutor(max_workers=4) as pool:
        yield dict(pool.map(one, CASES))


def test_case_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.timeout(900)  # the first test waits for the whole matrix (about 50 commands, four at a time)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_refused_cleanly_and_nothing_created(case: Case, outcomes: dict[str, tuple[Ran, set[str], set[str]]]) -> None:
    ran, before, after = outcomes[case.name]
    assert_clean_refusal(ran, *case.expect)
    assert after == before, f"created: {sorted(after - before)}"


@pytest.mark.parametrize("case", [c for c in CASES if c.args[0] == "submit"], ids=lambda c: c.name)
def test_validate_in_process_refuses_the_same(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same manifests through `validate` in this process (CliRunner): exit 2, the same place."""
    _prepare(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["validate", "m.yaml"])
    assert res.exit_code == 2, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    flat = " ".join(res.output.split())
    assert all(part in flat for part in case.expect), res.output

