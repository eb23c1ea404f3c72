"""The `mmu` command starts without the simulators: a model-only command imports neither cocotb nor Amaranth.

Each command runs in a fresh interpreter under ``python -X importtime``, whose
stderr names every module imported; the check is on those names.  The last test
shows the check sees Amaranth when a command does need it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import pytest

HEAVY = ("cocotb", "cocotb_tools", "amaranth")
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.M)


def imported(args: list[str], cwd) -> set[str]:
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli.main", *args], capture_output=True,
                         text=True, cwd=cwd)
    assert run.returncode == 0, run.stderr[-2000:]
    names = set(IMPORT_LINE.findall(run.stderr))
    assert "model.config" in names  # the parse found the import lines (importlib.import_module logs none)
    return names


def heavy(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in HEAVY}


@pytest.mark.parametrize("args", [["run", "--list"], ["quiz", "translate", "-s", "3"], ["free", "small-malloc"],
                                  ["config", "--preset", "fifo4"], ["--help"]], ids=" ".join)
def test_model_only_commands_import_no_simulator(args, tmp_path):
    assert heavy(imported(args, tmp_path)) == set()


def test_verilog_does_import_amaranth(tmp_path):
    """The same check on a command that elaborates the design: Amaranth shows up, so the check can fail."""
    names = imported(["verilog", "--out", str(tmp_path / "mmu.v"), "--preset", "tiny_m52"], tmp_path)
    assert "amaranth" in heavy(names) and "cocotb" not in heavy(names)


def test_version_is_the_installed_package_version(tmp_path):
    run = subprocess.run([sys.executable, "-m", "cli.main", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0
    assert run.stdout == f"mmu {metadata.version('mmu-cosim')}\n"


def test_the_command_table_names_each_module_that_registers_a_subcommand():
    """``cli.main.COMMANDS`` (which module a command line imports) agrees with what the modules register."""
    import argparse
    import importlib

    from cli.main import COMMANDS

    registered = {}
    for module in dict.fromkeys(COMMANDS.values()):
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        registered.update(dict.fromkeys(sub.choices, module))
    assert registered == COMMANDS
