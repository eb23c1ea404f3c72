"""Verilog export of the MMU top: one self-contained file for Icarus (and any other tool).

Amaranth's builtin Yosys converts the design; the clock is ``clk`` and the
synchronous reset ``rst`` (active high).  Amaranth emits no ``timescale``: the
testbench (cocotb) sets its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from model.config import MMUConfig, hardware_name


def top_ports(mmu) -> list[tuple[str, int, str]]:
    """(verilog name, width, direction) of every port of the MMU top, clock and reset first."""
    ports = [("clk", 1, "input"), ("rst", 1, "input")]
    for path, member, _value in mmu.signature.flatten(mmu):
        name = "__".join(str(p) for p in path)
        direction = "input" if member.flow == wiring.In else "output"
        ports.append((name, Shape.cast(member.shape).width, direction))
    return ports


# Yosys's Verilog makes every `always @*` block sensitive to a dummy register declared as
# `reg \$auto$verilog_backend...$N = 0;`, expecting that initialiser to wake the block at time 0.
# Under `iverilog -g2012` (what cocotb's runner uses) a declaration initialiser creates no event, so a
# combinational output that depends only on registers holding their reset value (resp.valid right
# after reset) stays X.  Toggling the dummy register once after time-0 initialisation runs every such
# block once and changes nothing else; other simulators and synthesis are unaffected.
_T0_TRIGGER = re.compile(r"^(\s*)reg (\\\S*dump_module\S* ) = 0;$", re.M)


def icarus_time0_fix(text: str) -> str:
    return _T0_TRIGGER.sub(lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n{m.group(1)}initial #0 {m.group(2)} = 1'h1;",
                           text)


def header(cfg: MMUConfig, name: str) -> str:
    """The comment the file starts with: which configuration it is, whole, so the file says what it holds."""
    lines = [f"MMU top `{name}`, configuration {hardware_name(cfg)} (hardware fields of model.config.MMUConfig):"]
    lines += json.dumps({k: v for k, v in cfg.to_dict().items() if k != "dram"}, indent=2, sort_keys=True).splitlines()
    lines.append("Regenerate: mmu config prints this configuration; mmu verilog --config FILE rebuilds it.")
    return "".join(f"// {line}\n" for line in lines)


def verilog_text(cfg: MMUConfig, name: str = "mmu_top") -> tuple[str, object]:
    """The Verilog source of an MMU built from ``cfg`` (its configuration in the header comment) and the
    elaborated top (for its ports)."""
    from hw.mmu import MMU  # local: importing hw.export must stay cheap

    mmu = MMU(cfg)
    text = verilog.convert(mmu, name=name, emit_src=False)
    return header(cfg, name) + icarus_time0_fix(text), mmu


def write_verilog(cfg: MMUConfig, path, name: str = "mmu_top") -> Path:
    """Write the Verilog of the MMU described by ``cfg`` to ``path`` (parent directories created)."""
    path = Path(path)
    text, _ = verilog_text(cfg, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
