"""README's layout promise: ``stylize_core`` (the PyTorch core) never imports Ray or the programs in
``jobs``, not even lazily inside a function, so it runs wherever PyTorch does."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "stylize_core"


def _imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_walk_sees_imports_inside_functions() -> None:
    assert _imports("def f():\n    import ray.data\n    from jobs.common import storage\n") == {"ray.data", "jobs.common"}


def test_stylize_core_never_imports_ray_or_jobs() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 50  # the walk found the package
    found = {f"{path.relative_to(CORE)}: {name}" for path in files for name in _imports(path.read_text())
             if name.split(".")[0] in ("ray", "jobs")}
    assert not found, sorted(found)
