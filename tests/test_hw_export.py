"""Verilog export: every configuration translates, Icarus compiles the file on its own, the
ports are those of hw/layouts.py, and `mmu verilog` writes and describes the file."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from cli import main as cli
from hw import layouts
from hw.export import write_verilog
from model.config import PRESETS, MMUConfig, Policy, TLBConfig

needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (iverilog) not installed")


def port_widths(text: str, module: str) -> dict[str, tuple[str, int]]:
    """{port: (direction, width)} of ``module`` in Yosys-written Verilog."""
    body = text[text.index(f"module {module}("):]
    body = body[:body.index("endmodule")]
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:wire\s+)?(?:\[(\d+):0\]\s+)?(\w+);", body, re.M):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    return ports


def expected_ports(cfg: MMUConfig) -> dict[str, tuple[str, int]]:
    return {
        "clk": ("input", 1), "rst": ("input", 1),
        "req__payload": ("input", layouts.request_layout(cfg).size), "req__valid": ("input", 1),
        "req__ready": ("output", 1),
        "resp__payload": ("output", layouts.response_layout(cfg).size), "resp__valid": ("output", 1),
        "resp__ready": ("input", 1),
        "ctl__payload": ("input", layouts.ctl_layout(cfg).size), "ctl__valid": ("input", 1),
        "ctl__ready": ("output", 1),
        "flags": ("input", layouts.FlagsLayout.size),
        "mem_req__payload": ("output", layouts.mem_req_layout(cfg).size), "mem_req__valid": ("output", 1),
        "mem_req__ready": ("input", 1),
        "mem_resp__payload": ("input", 64), "mem_resp__valid": ("input", 1), "mem_resp__ready": ("output", 1),
        "counters": ("output", 32 * layouts.N_COUNTERS),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each configuration written once (parent directories created by write_verilog)."""
    root = tmp_path_factory.mktemp("verilog")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = write_verilog(PRESETS[name], root / name / "sub" / "mmu.v", name="mmu_top")
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(PRESETS))
def test_ports_follow_the_layouts(name, exported):
    text = exported(name).read_text()
    assert "timescale" not in text
    assert port_widths(text, "mmu_top") == expected_ports(PRESETS[name])


@needs_iverilog
@pytest.mark.parametrize("name", list(PRESETS))
def test_icarus_compiles_the_export(name, exported, tmp_path):
    path = exported(name)
    run = subprocess.run(["iverilog", "-g2012", "-s", "mmu_top", "-o", str(tmp_path / "a.out"), str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "error" not in run.stderr.lower()


RESET_BENCH = """
`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1;
  always #5 clk = !clk;
  mmu_top dut(.clk(clk), .rst(rst), .req__valid(1'b0), .req__payload('0), .resp__ready(1'b1),
              .ctl__valid(1'b0), .ctl__payload('0), .flags(5'b00011), .mem_req__ready(1'b1),
              .mem_resp__valid(1'b0), .mem_resp__payload('0));
  initial begin
    #25 rst = 0;
    #20 $display("resp_valid=%b req_ready=%b ctl_ready=%b mem_req_valid=%b",
                 dut.resp__valid, dut.req__ready, dut.ctl__ready, dut.mem_req__valid);
    $finish;
  end
endmodule
"""


@needs_iverilog
def test_outputs_are_defined_after_reset_under_iverilog_g2012(exported, tmp_path):
    """A reset design has known outputs: no X on resp.valid, req.ready, ctl.ready or mem_req.valid
    when simulated the way cocotb's runner compiles it (iverilog -g2012), with nothing else patched."""
    tb = tmp_path / "tb.v"
    tb.write_text(RESET_BENCH)
    out = tmp_path / "a.out"
    build = subprocess.run(["iverilog", "-g2012", "-s", "tb", "-o", str(out), str(tb), str(exported("default"))],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run(["vvp", "-n", str(out)], capture_output=True, text=True)
    assert "resp_valid=0 req_ready=1 ctl_ready=1 mem_req_valid=0" in run.stdout, run.stdout


def test_cli_writes_and_describes(tmp_path, capsys):
    out = tmp_path / "build" / "deep" / "mmu.v"
    assert cli.main(["verilog", "--out", str(out), "--dtlb-entries", "64", "--dtlb-ways", "4",
                     "--policy", "fifo", "--pwc", "0"]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "module mmu_top" in out.read_text()
    assert "mmu_top" in text and "req__payload" in text and "counters" in text and "fifo" in text


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    assert cli.main(["verilog", "--out", str(tmp_path / "x.v"), "--dtlb-ways", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmu: error: ways=3") and "Traceback" not in err
    assert not (tmp_path / "x.v").exists()


def test_cli_bad_name(tmp_path, capsys):
    assert cli.main(["verilog", "--out", str(tmp_path / "x.v"), "--name", "9bad"]) == 2
    assert "--name" in capsys.readouterr().err


def test_cli_preset_with_an_override(tmp_path, capsys):
    """`--preset` names the base; an explicit option overrides one field of it, the ports follow."""
    out = tmp_path / "mmu.v"
    assert cli.main(["verilog", "--out", str(out), "--preset", "tiny_m52", "--dtlb-entries", "4"]) == 0
    want = PRESETS["tiny_m52"].replace(dtlb=TLBConfig(4, 1, Policy.LRU, 1))
    assert port_widths(out.read_text(), "mmu_top") == expected_ports(want)
    assert "dtlb 4 / 1 / lru" in capsys.readouterr().out


def test_cli_unknown_preset_is_one_line(tmp_path, capsys):
    assert cli.main(["verilog", "--out", str(tmp_path / "x.v"), "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mmu: error: --preset huge: unknown preset (known: default,")
    assert not (tmp_path / "x.v").exists()
