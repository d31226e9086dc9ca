"""Prefect runs a deployment's entrypoint by path (``flows/run_flow.py``), with ``flows/`` first on the import
path: a module there named like a top-level package would shadow it in every flow run."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_flow_module_shadows_a_top_level_package():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    flow_modules = {p.stem for p in (ROOT / "flows").glob("*.py")}
    assert packages and flow_modules
    assert not packages & flow_modules, f"flows/ modules shadow packages: {sorted(packages & flow_modules)}"


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's components)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others():
    """import-linter's contracts hold packages to their layers and subpackages to no cycle; this holds
    every module of every package (the command line, process supervision, the flows, the service,
    monitoring, validation and the domain core) to no cycle at all (function-level imports count)."""
    import grimp

    roots = ("cli", "ops", "flows", "serving", "monitoring", "validation", "pipelines")
    graph = grimp.build_graph(*roots)
    assert _cycles(graph, set(graph.modules)) == []


def test_no_two_test_modules_share_a_name():
    """The test folders are not packages, so pytest imports each module by its file name: two modules of one
    name in different tiers make it refuse to collect the second ("import file mismatch")."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert names and sorted({n for n in names if names.count(n) > 1}) == []
