"""Sizes the kernel model refuses, and host bookkeeping proportional to the memory a workload touches."""

from __future__ import annotations

import runpy
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from cli.main import main
from model.errors import UserError
from model.mm import kernel as kernel_mod
from model.mm.kernel import Kernel
from model.user.workload import MAX_OPERATIONS, parse

GiB = 1 << 30


def _cli_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_memory_above_2_to_the_maxphyaddr_is_refused_in_one_line(tmp_path, capsys):
    wl = tmp_path / "big.wl"
    wl.write_text("boot mem=1000000G\nspawn a\n")
    assert "above 2^MAXPHYADDR = 1099511627776 bytes" in _cli_error(capsys, "run", str(wl))
    with pytest.raises(UserError, match="2\\^MAXPHYADDR = 68719476736"):
        Kernel(64 * GiB + 4096, maxphyaddr=36)


def test_a_1_tib_machine_boots_in_constant_host_memory():
    """The buddy allocator's 262144 untouched 4 MiB blocks are one range, not 262144 list entries."""
    tracemalloc.start()
    try:
        k = Kernel(1 << 40, 1 << 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert k.buddy.free_area[10] == (1 << 40) // (4 << 20) - 1  # every 4 MiB block but the kernel image's
    assert k.swap.free_pages == (1 << 28) - 1
    assert peak < 2 << 20


def test_swap_beyond_what_a_swap_entry_can_name_is_refused():
    with pytest.raises(UserError, match="swap size .* x86-64 swap entry can name"):
        Kernel(64 << 20, 1 << 63)


def test_a_huge_page_pool_whose_bookkeeping_would_not_fit_the_host_is_refused(monkeypatch):
    monkeypatch.setattr(kernel_mod, "host_memory", lambda: 64 << 20)
    with pytest.raises(UserError, match="1000000 huge pages: their bookkeeping .* would not fit"):
        Kernel(4 << 40, hugepages=1_000_000, maxphyaddr=46)


def test_repeat_counts_multiply_and_a_run_beyond_the_limit_is_refused(tmp_path, capsys):
    wl = tmp_path / "forever.wl"
    wl.write_text("spawn a\nrepeat 0xffffffffffffffff\nmalloc p 4K\nend\n")
    assert _cli_error(capsys, "run", str(wl)).endswith(
        f"forever.wl:2: the workload would run more than {MAX_OPERATIONS} operations (repeat counts multiply)")
    parse("spawn a\nrepeat 1000\nrepeat 999\nload 0\nend\nend\n", "ok.wl")  # 999,001 operations: allowed
    with pytest.raises(UserError, match="t.wl:2: the workload would run more than"):
        parse("spawn a\nrepeat 1000\nrepeat 1000\nload 0\nend\nend\n", "t.wl")


TOUCH_PROBE = runpy.run_path(str(Path(__file__).parent.parent / "bench" / "bench_kernel.py"))["TOUCH_PROBE"]


def test_a_64_gib_machine_costs_the_host_memory_in_proportion_to_what_is_touched():
    """32 MiB touched on a 64 GiB machine: the host's peak grows by under 300 MB / 32 (the 1 GiB budget
    scaled down); bench/bench_kernel.py measures the full 1 GiB."""
    out = subprocess.run([sys.executable, "-c", TOUCH_PROBE, "32"], capture_output=True, text=True, check=True).stdout
    before_kb, after_kb, _, used_pages = out.split()
    before_kb, after_kb, used_pages = int(before_kb), int(after_kb), int(used_pages)
    assert used_pages >= 8192  # every page really allocated
    assert after_kb - before_kb < 300_000 / 32, (before_kb, after_kb)
