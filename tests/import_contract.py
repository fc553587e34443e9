"""The package's import contract, checked on a module graph read from the source (AST).

Layers, lowest first: a module may import only from its own unit (the top-level module or
subpackage of ``dagstudy`` it belongs to) or from a unit of a lower layer. Every import counts:
module level, inside functions, and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

LAYERS: list[tuple[str, ...]] = [
    ("ideas", "urls", "stats"),
    ("model",),
    ("data",),
    ("losses",),
    ("problem",),
    ("optim", "revival"),
    ("config",),
    ("diagnostics", "memory", "packing"),
    ("trainer",),
    ("tracking",),
    ("study",),
    ("confirmation",),
    ("cli",),
]
"""Units of ``dagstudy`` by layer, lowest first; units of one layer may not import each other."""

TRAINER_UNITS = {unit for layer in LAYERS[: LAYERS.index(("trainer",)) + 1] for unit in layer}
TRAINER_FORBIDDEN = ("ray", "optuna", "mlflow", "matplotlib", "pandas")
"""Third-party packages the trainer layer (everything up to ``trainer``) never imports."""
CONFIRMATION_FORBIDDEN = ("ray", "mlflow")
"""``confirmation`` reaches these only through ``study`` and ``tracking``."""
MAX_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every module ``path`` (module ``name``) imports: ``dagstudy`` modules resolved to the
    module (``from pkg import sub`` is ``pkg.sub`` when that is a module), others by their
    top-level package."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {m if m.startswith("dagstudy") else m.split(".")[0] for m in found}


def read_graph(root: Path) -> dict[str, set[str]]:
    """``{module: imported modules}`` for every module of the package at ``root / 'dagstudy'``."""
    files = {module_name(p, root): p for p in (root / "dagstudy").rglob("*.py")}
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


def unit_of(module: str) -> str | None:
    """``dagstudy.study.driver`` -> ``study``; the package itself (its facade) -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise KeyError(unit)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up or sideways between units, and units no layer names."""
    problems = []
    for module, targets in sorted(graph.items()):
        source = unit_of(module)
        if source is None:
            continue
        try:
            mine = _layer(source)
        except KeyError:
            problems.append(f"{module}: unit {source!r} is in no layer")
            continue
        for target in sorted(t for t in targets if t.startswith("dagstudy")):
            unit = unit_of(target)
            if unit is None or unit == source:
                continue
            if _layer(unit) >= mine:
                problems.append(f"{module} imports {target} (layer of {unit!r} is not below "
                                f"{source!r})")
    return problems


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    """Trainer-layer imports of Ray/Optuna/MLflow/matplotlib/pandas; ``confirmation`` imports
    of Ray or MLflow."""
    problems = []
    for module, targets in sorted(graph.items()):
        unit = unit_of(module)
        banned = (TRAINER_FORBIDDEN if unit in TRAINER_UNITS
                  else CONFIRMATION_FORBIDDEN if unit == "confirmation" else ())
        problems += [f"{module} imports {t}" for t in sorted(targets) if t in banned]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among the package's modules (each reported once, as a path). The package
    facade (``dagstudy/__init__.py``) imports its exports lazily, on first attribute access, so
    its edges do not count."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ()) if node != "dagstudy" else ()):
            if nxt not in graph:
                continue
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found
