"""The package's layers (docs/architecture.md): a module imports only from its own layer or the ones below it.

The order, lowest first, is ``utils``, ``metrics``, ``data``, ``transforms``, ``networks``, ``handlers``, ``engines``,
``bundles``, ``deploy``, ``apps``, ``cli``. Every ``import``/``from ... import`` of a ``medmonai`` module counts,
function-local ones included, so a new upward import (which would become an import cycle sooner or later) fails here
and names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import medmonai

LAYERS = (
    "utils",
    "metrics",
    "data",
    "transforms",
    "networks",
    "handlers",
    "engines",
    "bundles",
    "deploy",
    "apps",
    "cli",
)
PACKAGE = Path(medmonai.__file__).parent


def _layer(module: str) -> str | None:
    """The layer of a dotted ``medmonai...`` module name (None for the top-level package: ``__version__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a medmonai module in ``path`` (relative imports resolved)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(rel.parts[:-1])  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "medmonai"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "medmonai":
                found.append((node.lineno, module))
    return found


def test_every_module_belongs_to_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", "."))}
    tops.discard("py")
    assert tops - set(LAYERS) - {"__pycache__"} == set(), "add the new sub-package to LAYERS and docs/architecture.md"


def test_no_module_imports_from_a_higher_layer():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own not in rank:
            continue  # medmonai/__init__.py: lazy access to every layer
        for line, module in _imports(path):
            target = _layer(module)
            if target is not None and target in rank and rank[target] > rank[own]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {module} ({target})")
    assert upward == [], "imports from a higher layer:\n" + "\n".join(upward)
