"""The house rules of issue 24, checked by walking the package's own source (the repository root is the package):
every file at most 400 lines, every function at most 80 lines and 8 parameters, and lower layers never importing
the front ends (docs/DESIGN.md §1). Each failure lists every violation, so one run shows all that is left."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent  # the repository root: the package ``comcloak``
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8  # self/cls not counted; positional-only, positional and keyword-only; not *args/**kwargs
# Not the package's source: tests, environments, build outputs and the measured results kept beside the benchmarks.
SKIPPED_FOLDERS = {"tests", ".venv", "venv", "build", "dist", "__pycache__", "comcloak-demo", ".git"}
SKIPPED_PATHS = {Path("bench/results")}
# The lower layers and the front ends they must never import, not even lazily inside a function.
LOWER_LAYERS = ("codecs", "models", "attacks", "export", "kernels", "engine")
FRONT_ENDS = ("comcloak.cli", "comcloak.serve", "comcloak.evaluation")


def source_files() -> Iterator[Path]:
    """Every ``.py`` file of the package (scripts/ and bench/*.py included), relative to :data:`ROOT`, sorted."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT)
        subfolders[:] = sorted(name for name in subfolders
                               if name not in SKIPPED_FOLDERS and not name.startswith(".")
                               and not name.endswith(".egg-info") and relative / name not in SKIPPED_PATHS)
        found += [relative / name for name in files if name.endswith(".py")]
    return iter(sorted(found))


def parse(path: Path) -> ast.Module:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=str(path))


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Positional-only, positional and keyword-only parameters, less a leading ``self`` or ``cls``."""
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    count = len(positional) + len(arguments.kwonlyargs)
    return count - 1 if positional and positional[0].arg in ("self", "cls") else count


def layout_violations(path: Path) -> list[str]:
    """What in ``path`` breaks the size rules, one line each (``path:line name: what``)."""
    lines = (ROOT / path).read_text(encoding="utf-8").count("\n")
    problems = [f"{path}: {lines} lines (> {MAX_FILE_LINES})"] if lines > MAX_FILE_LINES else []
    functions = [node for node in ast.walk(parse(path)) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(functions, key=lambda function: function.lineno):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
            problems.append(f"{path}:{node.lineno} {node.name}: {length} lines (> {MAX_FUNCTION_LINES})")
        if (count := parameter_count(node)) > MAX_PARAMETERS:
            problems.append(f"{path}:{node.lineno} {node.name}: {count} parameters (> {MAX_PARAMETERS})")
    return problems


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, at any depth, relative imports resolved against the package
    (``from comcloak import cli`` gives ``comcloak.cli``)."""
    package = ["comcloak", *path.parent.parts]
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def test_the_walk_sees_the_whole_package() -> None:
    files = set(source_files())
    assert {Path("engine/archive.py"), Path("serve/app.py"), Path("cli/main.py"), Path("__init__.py")} <= files
    assert any(path.parts[0] == "scripts" for path in files) and Path("bench/serve.py") in files
    assert not any(path.parts[0] == "tests" or path.parts[:2] == ("bench", "results") for path in files)


def test_files_and_functions_stay_small() -> None:
    """Issue 24: files <= 400 lines, functions <= 80 lines and <= 8 parameters (self/cls not counted)."""
    problems = [problem for path in source_files() for problem in layout_violations(path)]
    assert not problems, f"{len(problems)} violations of the size rules:\n" + "\n".join(problems)


def test_lower_layers_never_import_the_front_ends() -> None:
    """codecs, models, attacks, export, kernels and engine never import comcloak.cli, .serve or .evaluation."""
    problems = [f"{path}:{line} imports {module}"
                for path in source_files() if path.parts[0] in LOWER_LAYERS
                for line, module in imported_modules(path)
                if any(module == front or module.startswith(front + ".") for front in FRONT_ENDS)]
    assert not problems, "lower layers import a front end:\n" + "\n".join(problems)


@pytest.mark.parametrize(("source", "expected"), [
    ("def f(self, a, /, b, *args, c, **kwargs): pass", 3),
    ("def f(cls, a, b, c, d, e, f, g, h): pass", 8),
    ("def f(a, b, c, d, e, f, g, h, i): pass", 9),
])
def test_parameters_are_counted_as_the_rule_says(source: str, expected: int) -> None:
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef) and parameter_count(function) == expected
