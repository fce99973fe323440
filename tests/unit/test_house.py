"""The engine's shape: no two modules of ``app/`` import each other (imports inside functions
counted too: a function-level import is how a circle hides), and no module is over 400 lines
(a file read at once). import-linter keeps the layers; this keeps what its contracts cannot see.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

import app

APP = Path(app.__file__).parent
MAX_LINES = 400


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # No cache: it would be written into the working directory and could outlive a change.
    return grimp.build_graph("app", include_external_packages=False, cache_dir=None)


def mutual_imports(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """Every pair of modules that import each other, each pair once, sorted."""
    pairs = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if module in graph.find_modules_directly_imported_by(imported):
                pairs.add(tuple(sorted((module, imported))))
    return sorted(pairs)


def where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    lines = graph.get_import_details(importer=importer, imported=imported)
    return ", ".join(f"{importer} line {d['line_number']}" for d in lines)


def test_no_two_modules_of_app_import_each_other(graph):
    found = [f"{a} <-> {b} ({where(graph, a, b)}; {where(graph, b, a)})"
             for a, b in mutual_imports(graph)]
    assert not found, "modules of app/ that import each other:\n" + "\n".join(found)


def test_a_pair_importing_each_other_is_found_once():
    graph = grimp.ImportGraph()
    graph.add_import(importer="app.x", imported="app.y", line_number=3, line_contents="import app.y")
    graph.add_import(importer="app.y", imported="app.z", line_number=3, line_contents="import app.z")
    assert mutual_imports(graph) == []
    graph.add_import(importer="app.y", imported="app.x", line_number=40,
                     line_contents="    from app.x import thing")
    assert mutual_imports(graph) == [("app.x", "app.y")]


def test_the_graph_holds_imports_made_inside_functions(graph):
    # app/ops/cli/run.py imports the Flower credentials inside run(), nowhere else.
    assert "app.ops.cli.flower" in graph.find_modules_directly_imported_by("app.ops.cli.run")


def module_sizes() -> dict[str, int]:
    """Each module of app/ (``app/run/runner.py``) -> its number of lines."""
    sizes = {str(path.relative_to(APP.parent)): len(path.read_text().splitlines())
             for path in sorted(APP.rglob("*.py"))}
    assert sizes, f"no module found under {APP}"
    return sizes


def test_no_module_of_app_is_over_400_lines():
    too_long = [f"{path}: {n} lines" for path, n in module_sizes().items() if n > MAX_LINES]
    assert not too_long, f"over {MAX_LINES} lines:\n" + "\n".join(too_long)

