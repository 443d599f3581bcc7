"""items_from: CSV and JSONL, with line numbers in every error."""

from __future__ import annotations

import pytest

from pipeline.errors import InputError
from pipeline.manifest import load_manifest, validate_manifest

from .conftest import HEADER, WriteManifest


def _csv_manifest(write_manifest: WriteManifest, csv: str | bytes, name: str = "items.csv") -> str:
    return str(write_manifest(HEADER + f"items_from: {name}\n", files={name: csv}))


def test_csv_basics(write_manifest: WriteManifest) -> None:
    csv = (
        "\ufeffid,title,resolution,references,tags,note\r\n"
        "a,mug,,,,\r\n"
        "b,cup,4K, r1.png | r2.png ,x|y|,  spaced  \r\n"
    )
    m = load_manifest(_csv_manifest(write_manifest, csv))  # type: ignore[arg-type]
    a, b = m.items
    assert (a.id, a.resolution, a.references, a.tags, a.vars) == (
        "a",
        None,
        (),
        None,
        {"title": "mug", "note": ""},
    )
    assert (b.resolution, b.references, b.tags) == ("4K", ("r1.png", "r2.png"), ("x", "y"))
    assert b.vars["note"] == "  spaced  "  # template variables keep their text as written
    assert a.where.endswith("items.csv:2") and b.where.endswith("items.csv:3")


def test_csv_lines_after_multiline_cells_and_blank_rows(write_manifest: WriteManifest) -> None:
    csv = 'id,title,resolution\na,"two\nlines",1K\n\n,,\nb,cup,1K\nc,plate,5K\n'
    with pytest.raises(InputError) as info:
        load_manifest(_csv_manifest(write_manifest, csv))  # type: ignore[arg-type]
    assert info.value.where is not None and info.value.where.endswith("items.csv:7 (item c)")


@pytest.mark.parametrize(
    ("csv", "where", "message"),
    [
        ("", "items.csv", "empty CSV"),
        ("title,color\nmug,red\n", "items.csv:1", "no 'id' column"),
        ("id,title,title\na,b,c\n", "items.csv:1", "repeats column title"),
        ("id,,title\na,b,c\n", "items.csv:1", "empty column name"),
        ("id,title\na,mug\nb,cup,extra\n", "items.csv:3 (item b)", "3 cells"),
        ('id,title\na,"never closed\n', "items.csv:", "CSV error"),
        ("id,title\n,nameless\n", "items.csv:2", "id"),
        ("id,title,job\na,b,c\n", "items.csv:2 (item a)", "'job' is reserved"),
        (
            "id,title,references\na,b," + "|".join(f"r{i}.png" for i in range(15)) + "\n",
            "items.csv:2 (item a)",
            "at most 14",
        ),
    ],
)
def test_csv_errors(write_manifest: WriteManifest, csv: str, where: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_manifest(_csv_manifest(write_manifest, csv))  # type: ignore[arg-type]
    assert info.value.where is not None and where in info.value.where
    assert message in info.value.message


def test_csv_non_utf8_names_the_file_and_line(write_manifest: WriteManifest) -> None:
    path = _csv_manifest(write_manifest, b"id,title\na,mug\nb,caf\xe9\n")
    with pytest.raises(InputError, match="not valid UTF-8") as info:
        load_manifest(path)  # type: ignore[arg-type]
    assert info.value.where is not None and info.value.where.endswith("items.csv:3")


def test_csv_missing_column_names_row_and_item(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        'job: t\nproviders: [sandbox]\nprompt: "{{ title }} in {{ color }}"\nitems_from: d.csv\n',
        files={"d.csv": "id,title,color\na,mug,red\nb,cup\n"},
    )
    with pytest.raises(InputError, match="'color' is undefined") as info:
        validate_manifest(path)
    assert info.value.where is not None and info.value.where.endswith("d.csv:3 (item b)")


def test_jsonl(write_manifest: WriteManifest) -> None:
    lines = (
        '{"id": "a", "title": "mug", "sizes": [1, 2], "meta": {"k": "v"}}\n'
        "\n"
        '{"id": 7, "title": "cup", "references": ["r.png"], "tags": "solo"}\n'
    )
    path = write_manifest(HEADER + "items_from: i.jsonl\n", files={"i.jsonl": lines})
    a, b = load_manifest(path).items
    assert a.vars == {"title": "mug", "sizes": [1, 2], "meta": {"k": "v"}}
    assert (b.id, b.references, b.tags) == ("7", ("r.png",), ("solo",))
    assert b.where.endswith("i.jsonl:3")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "an item is a mapping"),
        ('{"id": "x", "title": NaN}', "NaN"),
        ('{"id": "x"', "invalid JSON"),
        ('{"id": "x", "resolution": "8K"}', "resolution"),
        ("[" * 100_000 + "]" * 100_000, "JSON"),
    ],
)
def test_jsonl_errors(write_manifest: WriteManifest, line: str, message: str) -> None:
    path = write_manifest(
        HEADER + "items_from: i.jsonl\n", files={"i.jsonl": '{"id": "ok", "title": "t"}\n' + line}
    )
    with pytest.raises(InputError, match=message) as info:
        load_manifest(path)
    assert info.value.where is not None and "i.jsonl:2" in info.value.where


def test_unsupported_items_file(write_manifest: WriteManifest) -> None:
    path = write_manifest(HEADER + "items_from: items.xlsx\n", files={"items.xlsx": "x"})
    with pytest.raises(InputError, match=r"\.csv or \.jsonl"):
        load_manifest(path)


def test_items_and_items_from_are_concatenated(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        HEADER + "items_from: d.csv\nitems:\n  - {id: y1, title: a}\n",
        files={"d.csv": "id,title\nc1,b\nc2,c\n"},
    )
    assert [i.id for i in load_manifest(path).items] == ["y1", "c1", "c2"]


def test_duplicate_id_across_yaml_and_csv_names_both(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        HEADER + "items:\n  - {id: dup, title: a}\nitems_from: d.csv\n",
        files={"d.csv": "id,title\nok,b\ndup,c\n"},
    )
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert info.value.where is not None and info.value.where.endswith("d.csv:3 (item dup)")
    assert f"{path}:5" in info.value.message


def test_items_from_symlink_out_of_the_tree_is_refused(
    write_manifest: WriteManifest, tmp_path_factory
) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path_factory.mktemp("outside") / "secret.csv"
    outside.write_text("id,title\na,b\n")
    path = write_manifest(HEADER + "items_from: link.csv\n")
    (path.parent / "link.csv").symlink_to(outside)
    with pytest.raises(InputError, match="leaves the manifest's directory"):
        load_manifest(path)
