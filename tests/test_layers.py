"""The layer rules of docs/reference.md ("Layout"), checked on the source tree with ``ast``.

- ``model/`` is the golden model: it imports nothing from ``hw/``, ``sim/``, ``cli/``,
  ``replay/`` nor Amaranth or cocotb (so it runs, and is taught, without a simulator);
- ``hw/`` imports only ``model.config`` and ``model.x86`` of the project (the design
  never depends on the model's behaviour, nor on simulation code);
- the simulator-agnostic part of ``sim/`` (scoreboard, DRAM, transactions, coverage,
  ports) imports no cocotb, so the Amaranth-simulator bench (``pysim``, which imports
  no cocotb either) feeds the same scoreboard;
- no module file name is repeated in two top-level packages (``__init__.py`` aside);
- ``bench/`` scripts use package APIs: no ``sys.path`` edits, and of the other
  scripts only the public helper module ``benchlib``.

Every import statement counts, also one inside a function: a lazy import still
ties the layers together.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hw", "model", "sim", "replay", "cli")
SIM_AGNOSTIC = ("scoreboard", "dram", "transactions", "coverage", "ports", "pysim")


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; ``from a import b`` gives ``a.b`` as well."""
    tree = ast.parse(path.read_text(), str(path))
    here = path.relative_to(ROOT).with_suffix("").parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here[:len(here) - node.level]
                base = ".".join([*parent, base] if base else parent)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def violations(package: str, allowed) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{line}: imports {name}"
            for p in modules(package) for line, name in imports(p) if not allowed(name)]


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_import_parser_sees_each_kind_of_import(tmp_path):
    """The checks below are only as good as ``imports``: plain, from, relative and function-local imports."""
    f = ROOT / "sim" / "scoreboard.py"
    names = {n for _, n in imports(f)}
    assert "model.reference.ref_mmu.COUNTERS" in names and "sim.coverage" in names
    probe = ROOT / "hw" / "_probe_for_test.py"
    try:
        probe.write_text("from . import tlb\nfrom .layouts import FlagsLayout\ndef f():\n    import cocotb\n")
        names = {n for _, n in imports(probe)}
    finally:
        probe.unlink()
    assert {"hw.tlb", "hw.layouts.FlagsLayout", "cocotb"} <= names


def test_model_imports_no_hardware_simulation_cli_or_trace_code():
    forbidden = {"hw", "sim", "cli", "replay", "amaranth", "cocotb", "cocotb_tools"}
    assert violations("model", lambda n: top(n) not in forbidden) == []


def test_hw_imports_only_model_config_and_model_x86_of_the_project():
    def allowed(n):
        if top(n) in {"sim", "cli", "replay", "cocotb", "cocotb_tools"}:
            return False
        return top(n) != "model" or n == "model" or n.startswith(("model.config", "model.x86"))
    assert violations("hw", allowed) == []


@pytest.mark.parametrize("name", SIM_AGNOSTIC)
def test_the_simulator_agnostic_side_of_sim_imports_no_cocotb(name):
    path = ROOT / "sim" / f"{name}.py"
    assert [n for _, n in imports(path) if top(n) in {"cocotb", "cocotb_tools"}] == []


def test_no_module_name_in_two_top_level_packages():
    where = defaultdict(set)
    for package in PACKAGES:
        for p in modules(package):
            if p.name != "__init__.py":
                where[p.name].add(package)
    assert {name: sorted(pkgs) for name, pkgs in where.items() if len(pkgs) > 1} == {}


def test_bench_scripts_are_thin_over_package_apis():
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")}
    problems = []
    for p in sorted((ROOT / "bench").glob("*.py")):
        text = p.read_text()
        if "sys.path" in text:
            problems.append(f"{p.name}: edits sys.path")
        for line, name in imports(p):
            if top(name) in scripts and top(name) != "benchlib":
                problems.append(f"{p.name}:{line}: imports the bench script {name}")
    assert problems == []
