"""The shape of the package: no import cycle between the parts of pipeline/, and `pipeline validate` stays light.

A part is a sub-package (core, db, gate, ...) or a top-level module (cli, config, services, ...). Every import
counts: at module level, inside functions, under TYPE_CHECKING, relative, and `importlib.import_module` of a
literal name (which is how cli once hid its cycle with commands)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pipeline" or len(parts) < 2:
        return None
    name = parts[1]
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").exists() else None


def _imported(path: Path, package: list[str]) -> list[tuple[str, int]]:
    """Every module name `path` (in `package`, for relative imports) imports, with its line."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, node.lineno))
            out += [(f"{module}.{a.name}", node.lineno) for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            out.append((node.args[0].value, node.lineno))
    return out


def part_graph() -> dict[str, dict[str, list[str]]]:
    """part -> imported part -> where (file:line)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        src = rel.parts[0].removesuffix(".py")
        if src == "__init__":
            continue
        for module, line in _imported(path, list(path.relative_to(ROOT).parts[:-1])):
            dst = _part(module)
            if dst is not None and dst != src:
                graph[src][dst].append(f"{path.relative_to(ROOT)}:{line}")
    return graph


def _cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_parts_of_the_package_import_each_other_without_a_cycle() -> None:
    graph = part_graph()
    cycle = _cycle(graph)
    where = [f"{a} -> {b}: {', '.join(graph[a][b][:3])}" for a, b in zip(cycle or [], (cycle or [])[1:], strict=False)]
    assert cycle is None, "import cycle: " + " | ".join(where)


def test_the_scan_sees_function_level_and_importlib_imports(tmp_path: Path) -> None:
    graph = part_graph()
    assert "commands" in graph["cli"]  # cli registers the area commands
    assert "processing" in graph["services"]  # imported inside process_here only
    assert graph["core"].keys() <= {"clock", "config", "db", "errors", "gate", "logging_setup", "money",
                                    "providers", "states", "storage"}  # core knows nothing of Celery
    src = tmp_path / "x.py"
    src.write_text("import importlib\ndef f():\n    from pipeline.cli import app\n"
                   "    importlib.import_module('pipeline.services')\n")
    assert [m for m, _ in _imported(src, ["pipeline", "x"]) if m.startswith("pipeline")] == [
        "pipeline.cli", "pipeline.cli.app", "pipeline.services"]


VALIDATE = """
import sys
from typer.testing import CliRunner
from pipeline.cli import app
result = CliRunner().invoke(app, ["validate", sys.argv[1]])
assert result.exit_code == 0, result.output
print(sorted(m for m in ("celery", "kombu", "boto3", "botocore") if m in sys.modules))
"""


@pytest.mark.parametrize("manifest", ["jobs/demo-catalogue.yaml", "jobs/social-weekly.yaml"])
def test_validate_imports_neither_celery_nor_boto3(tmp_path: Path, manifest: str) -> None:
    path = ROOT / manifest
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    proc = subprocess.run([sys.executable, "-c", VALIDATE, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
