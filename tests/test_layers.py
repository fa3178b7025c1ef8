"""The layers form a straight stack (DESIGN.md): cli → flows → stages → pipeline / storage.

Read from the source with `ast`, every import counts, those inside functions too:
only flows/ imports Prefect; common/ imports nothing but the standard library; storage/ imports
nothing of ours but common/; pipeline/ does not import
storage/ (nor anything above it); stages/ imports no Prefect and nothing above it; nothing
but the CLI itself imports cli/ (the public API, embcache/, may not). Imports between our modules, deferred ones included, form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("common", "storage", "pipeline", "stages", "flows", "cli", "embcache")   # folder = embcache.<folder>
ABOVE = {                     # what each layer must not import (ours), besides prefect outside flows
    "common": {"storage", "pipeline", "stages", "flows", "cli", "embcache"},
    "storage": {"pipeline", "stages", "flows", "cli", "embcache"},
    "pipeline": {"storage", "stages", "flows", "cli", "embcache"},
    "stages": {"flows", "cli", "embcache"},
    "flows": {"cli", "embcache"},
    "cli": set(),             # the top: it may use the public API (embcache.__version__, Store)
    "embcache": {"cli"},
}


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts          # stages/bert.py -> embcache.stages.bert
    return ".".join(["embcache"] + ([] if folder == "embcache" else [folder]) + [p for p in rest if p != "__init__"])


def module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "embcache":
        return None
    folder = parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "embcache"
    rest = parts[2:] if folder != "embcache" else parts[1:]
    base = ROOT.joinpath(folder, *rest)
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.exists()), None)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module imported, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    top_level = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:        # `from . import x`: the module x when it is one, else the package
                sub = f"{mod}.{a.name}"
                found.append((sub if module_file(sub) else mod, id(node) in top_level))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "embcache":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "embcache"


def sources():
    for layer in LAYERS:
        yield from ((layer, p) for p in sorted((ROOT / layer).rglob("*.py")))


def test_every_layer_imports_only_the_layers_below_it():
    bad = []
    for layer, path in sources():
        for mod, _ in imports(path):
            if mod.split(".")[0] in ("prefect", "prefect_dask") and layer != "flows":
                bad.append(f"{path.relative_to(ROOT)} imports {mod} (only flows/ imports Prefect)")
            if mod.split(".")[0] in LAYERS[:-1]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod} as a top-level package (use embcache.{mod})")
            target = layer_of(mod)
            if target and target != layer and target in ABOVE[layer]:
                bad.append(f"{path.relative_to(ROOT)} ({layer}/) imports {mod} ({target}/)")
    assert not bad, "\n".join(sorted(set(bad)))


def test_imports_form_no_cycle():
    """Deferred imports (inside a function) count too: a cycle hidden in a function is still a cycle."""
    ours = {module_name(p): p for _, p in sources()}
    graph = {m: sorted({t for t, _ in imports(p) if t in ours and t != m}) for m, p in ours.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_the_checker_sees_a_violation(tmp_path):
    """The rules above are not vacuous: the checker reads relative imports as the layers they reach."""
    fake = ROOT / "pipeline" / "configs.py"
    assert ("embcache.pipeline.errors", True) in imports(fake)
    assert layer_of("embcache.storage.table") == "storage" and "storage" in ABOVE["pipeline"]


def test_common_is_standard_library_only():
    """common/ is the bottom every layer shares: no third-party package, nothing of ours."""
    import sys
    bad = [f"{p.relative_to(ROOT)} imports {mod}" for p in sorted((ROOT / "common").rglob("*.py"))
           for mod, _ in imports(p)
           if mod.split(".")[0] not in sys.stdlib_module_names and not mod.startswith("embcache.common")
           and mod != "__future__"]
    assert not bad, "\n".join(bad)
