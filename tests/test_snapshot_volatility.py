"""`mmu snapshot` writes an image that standard memory-forensics tools read: volatility3's Intel32e
layer (the x86-64 4-level paging translation it uses on real memory dumps) translates every virtual
address of every live process to the physical address the kernel model mapped."""

from __future__ import annotations

import json

import pytest
from volatility3.framework import contexts
from volatility3.framework.layers import intel, physical

from cli.main import main


@pytest.mark.parametrize("workload", ["fork-cow", "hugepages"])
def test_volatility3_intel32e_translates_every_mapping(workload, tmp_path, capsys):
    assert main(["snapshot", workload, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    ctx = contexts.Context()
    ctx.config["phys.location"] = (tmp_path / "phys.bin").as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "phys", "phys"))
    processes = json.loads((tmp_path / "mappings.json").read_text())["processes"]
    checked = 0
    for proc in processes:
        name = f"pid{proc['pid']}"
        ctx.config[f"{name}.memory_layer"] = "phys"
        ctx.config[f"{name}.page_map_offset"] = proc["cr3"] & ~0xFFF
        layer = intel.Intel32e(ctx, name, name)
        for m in proc["mappings"]:
            for offset in (0, m["size"] - 8):  # first and last quadword of each page
                paddr, _layer = layer.translate(m["va"] + offset)
                assert paddr == m["pa"] + offset, f"{proc['name']} va {m['va'] + offset:#x}"
                checked += 1
    assert checked > 0
    if workload == "hugepages":
        assert any(m["size"] == 2 << 20 for p in processes for m in p["mappings"])
