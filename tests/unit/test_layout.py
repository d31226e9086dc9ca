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
