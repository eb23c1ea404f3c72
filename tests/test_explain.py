"""`mmu explain` against numbers worked by hand and against the walker it explains."""

import itertools
import re

import pytest

from cli.main import main
from model.config import MMUConfig
from model.reference.ref_walker import ControlRegs, walk
from model.teach.explain import decode_row, demo_address_space, explain, permission_checks
from model.user.workload import run_workload
from model.x86.pte import PS, RW, US, XD, A, Access, D, FaultKind, Level, P
from sim.pysim import time_translations

VA = 0x0000_7F12_3456_7ABC  # the demo's untouched heap page, offset 0xabc


def run(capsys, *argv):
    rc = main(["explain", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def field(out: str, name: str) -> list[str]:
    """The cells of the address-split row named ``name``."""
    line = next(line for line in out.splitlines() if f"  {name}" in line)
    return line.split()


def test_split_names_the_indices_worked_by_hand(capsys):
    # 0x7f1234567abc = 0111 1111 0 | 001 0010 00 | 11 0100 010 | 1 0110 0111 | 1010 1011 1100
    rc, out, _ = run(capsys, hex(VA), "--no-hw")
    assert rc == 0
    assert field(out, "PML4 index")[3:] == ["011111110", "0x0fe", "254"]
    assert field(out, "PDPT index")[3:] == ["001001000", "0x048", "72"]
    assert field(out, "PD index")[3:] == ["110100010", "0x1a2", "418"]
    assert field(out, "PT index")[3:] == ["101100111", "0x167", "359"]
    assert field(out, "page offset")[3:] == ["101010111100", "0xabc", "2748"]
    assert "+ 8 * 254" in out and "+ 8 * 359" in out


def test_entry_addresses_are_base_plus_8_times_index(capsys):
    _, out, _ = run(capsys, hex(VA), "--no-hw")
    rows = re.findall(r"^  (PML4|PDPT|PD|PT)\s+(0x[0-9a-f]+)\s+\+ 8 \*\s+(\d+)\s+= (0x[0-9a-f]+)\s+(0x[0-9a-f]+)",
                      out, re.M)
    assert [r[2] for r in rows] == ["254", "72", "418", "359"]
    for i, (_, base, index, addr, value) in enumerate(rows):
        assert int(addr, 16) == int(base, 16) + 8 * int(index)
        if i < 3:  # each entry's address field is the next table's base
            assert int(value, 16) & 0xFF_FFFF_F000 == int(rows[i + 1][1], 16)


def test_decode_known_pte():
    # XD | frame 0x1234000 | D A U/S R/W P  (0x67), as Linux writes a dirty user data page
    row = decode_row(Level.PT, 0x8000_0000_0123_4067, 40, True)
    names = ["entry", "value", "XD", "rsvd", "addr", "G", "PS", "D", "A", "PCD", "PWT", "U/S", "R/W", "P"]
    cells = dict(zip(names, row))
    assert cells["addr"] == "0x0001234000"
    assert [cells[n] for n in ("XD", "rsvd", "G", "PS", "D", "A", "PCD", "PWT", "U/S", "R/W", "P")] == \
        ["1", "0", "0", ".", "1", "1", "0", "0", "1", "1", "1"]


def test_decode_marks_ignored_bits_and_reserved_bits():
    pml4e = dict(zip(range(14), decode_row(Level.PML4, 0x5067, 40, True)))
    assert (pml4e[5], pml4e[6], pml4e[7]) == (".", "0", ".")  # G and D ignored above the leaf, PS must be 0
    pde = dict(zip(range(14), decode_row(Level.PD, 0x20_0000 | P | PS | (1 << 45) | (1 << 13), 40, True)))
    assert pde[6] == "1" and pde[3] == "13,45"  # a 2 MiB leaf: bit 13 and bits >= M are reserved


@pytest.mark.parametrize("va, argv, code, bits", [
    (0x7F12_3456_8ABC, ["--access", "w", "--user"], 0x06, {"P": 0, "W/R": 1, "U/S": 1, "RSVD": 0, "I/D": 0}),
    (0x7F12_3456_9ABC, ["--user"], 0x0D, {"P": 1, "W/R": 0, "U/S": 1, "RSVD": 1, "I/D": 0}),
    (0x7F12_3460_0010, ["--access", "x", "--user"], 0x15, {"P": 1, "W/R": 0, "U/S": 1, "RSVD": 0, "I/D": 1}),
    (0xFFFF_8880_0000_1000, ["--user"], 0x05, {"P": 1, "W/R": 0, "U/S": 1, "RSVD": 0, "I/D": 0}),
    (0x40_0000, ["--access", "w"], 0x03, {"P": 1, "W/R": 1, "U/S": 0, "RSVD": 0, "I/D": 0}),
])
def test_fault_explanation_shows_error_code_bits(capsys, va, argv, code, bits):
    rc, out, _ = run(capsys, hex(va), "--no-hw", *argv)
    assert rc == 0
    assert f"error code {code:#04x} = {code:05b}b" in out
    for name, value in bits.items():
        assert re.search(rf"^\s+\d\s+{re.escape(name)}\s+{value}\s", out, re.M), name
    assert "A/D writes: none (a walk that faults writes nothing)" in out


def test_not_present_names_the_entry(capsys):
    _, out, _ = run(capsys, "0x7f1234568abc", "--no-hw", "--user")
    assert "the page was not present (PTE.P=0)" in out
    assert re.search(r"P=1 in every entry read\s+P: 1 1 1 0\s+FAIL", out)


def test_success_shows_the_physical_address_and_ad_writes(capsys):
    _, out, _ = run(capsys, hex(VA), "--no-hw", "--access", "w", "--user")
    assert "= 0x0001234abc" in out
    assert re.search(r"PTE\s+0x0000807b38\s+0x8000000001234007\s+-> 0x8000000001234067\s+sets A and D", out)


def test_non_canonical_is_gp_not_a_walk(capsys):
    rc, out, _ = run(capsys, "0x0000800000000000", "--no-hw")
    assert rc == 0 and "#GP" in out and "NOT canonical" in out and "table base" not in out


def test_page_walk_cache_hit_skips_levels(capsys):
    _, out, _ = run(capsys, "0x7f1234600010", "--no-hw", "--user", "--after", "0x7f1234567000")
    assert "walk (DTLB miss, PWC hit at PDPTE). 1 entry read from DRAM." in out
    assert "the PML4E and PDPTE are not read" in out


@pytest.mark.parametrize("argv, message", [
    (["0xZZ"], "address '0xZZ'"),
    (["0x10000000000000000"], "64-bit"),
    (["0x1000", "--access", "q"], "access 'q'"),
    (["0x1000", "--pid", "100"], "--pid needs a WORKLOAD"),
    (["no-such-workload", "0x1000"], "workload 'no-such-workload'"),
    (["a", "b", "c"], "expected [WORKLOAD] VADDR"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, message):
    rc, out, err = run(capsys, *argv, "--no-hw")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_workload_process_page_tables(capsys):
    rc, out, _ = run(capsys, "large-malloc", "again", "--access", "w", "--user", "--no-hw")
    assert rc == 0
    assert "process 100 (app)" in out and "[heap]" in out
    k, _ = run_workload("large-malloc")
    task = k.tasks[100]
    va = task.vars["again"][0]
    leaf = task.mm.pt.lookup(va)
    assert f"= {leaf.pa + (va & 0xFFF):#012x}" in out


def test_permission_rules_agree_with_the_walker():
    """Every combination of access, mode, flags and leaf rights: the rule table fails exactly when the walker does."""
    mem = {}

    class Mem:
        read64 = staticmethod(lambda a: mem.get(a, 0))
        write64 = staticmethod(lambda a, v: mem.__setitem__(a, v))

    va = 0x7F12_3456_7000
    for access, user, wp, nxe, smep, smap, rw, us, xd in itertools.product(
            Access, (False, True), *[(False, True)] * 7):
        if xd and not nxe:
            continue  # a reserved bit: a different rule, tested above
        mem.clear()
        tables = [0x1000, 0x2000, 0x3000, 0x4000]
        for i, level in enumerate((Level.PML4, Level.PDPT, Level.PD)):
            mem[tables[i] + 8 * level.index(va)] = tables[i + 1] | P | RW | US | A | D
        mem[tables[3] + 8 * Level.PT.index(va)] = 0x5000 | P | A | (RW if rw else 0) | (US if us else 0) | \
            (XD if xd else 0)
        ctrl = ControlRegs(cr3=0x1000, wp=wp, nxe=nxe, smep=smep, smap=smap)
        result = walk(Mem, ctrl, va, access, user, apply=False)
        checks = permission_checks(result, access, user, ctrl, 40)
        assert any(c.failed for c in checks) == (result.fault == FaultKind.PAGE), (access, user, ctrl, rw, us, xd)


def cycles(out: str) -> tuple[int, int]:
    rows = [line.split() for line in out.splitlines() if line.startswith(("  1st", "  2nd"))]
    return int(rows[0][-1]), int(rows[1][-1])


def test_cycles_on_the_hardware_hit_is_cheaper_than_the_walk(capsys):
    rc, out, _ = run(capsys, hex(VA), "--access", "w", "--user")
    assert rc == 0 and "MISMATCH" not in out
    cold, warm = cycles(out)
    assert 0 < warm < cold
    assert re.search(r"1st \(cold\)\s+walk \(DTLB miss, PWC miss\)\s+0x0001234abc\s+4\s+1\s+\d+", out)
    assert re.search(r"2nd \(same again\)\s+DTLB hit", out)


def test_cycles_grow_with_dram_latency(capsys):
    _, fast, _ = run(capsys, hex(VA), "--dram-latency", "2")
    _, slow, _ = run(capsys, hex(VA), "--dram-latency", "20")
    assert cycles(slow)[0] >= cycles(fast)[0] + 4 * 18  # four reads, 18 cycles more each
    assert cycles(slow)[1] == cycles(fast)[1] == 1


def test_hardware_harness_reports_the_same_answers_as_the_model():
    mem, ctrl = demo_address_space()
    reqs = [(VA, Access.READ, True), (VA, Access.READ, True), (0x7F12_3456_8000, Access.READ, True)]
    results, counters = time_translations(MMUConfig(), mem, ctrl, reqs)
    ex = explain(mem, ctrl, VA, Access.READ, True, MMUConfig())
    assert results[0].paddr == ex.first.response.paddr and not results[0].tlb_hit
    assert results[1].tlb_hit and results[1].cycles == 1
    assert results[2].fault == FaultKind.PAGE and results[2].error_code == 0x04
    assert counters["hits"] == 1 and counters["walks"] == 2 and counters["faults"] == 1
    assert mem.read64(0x807B38) == 0x8000_0000_0123_4007  # the hardware's A write went to its overlay


def test_a_hardware_disagreement_is_reported():
    mem, ctrl = demo_address_space()
    ex = explain(mem, ctrl, VA, Access.READ, True, MMUConfig())
    ex.hw, _ = time_translations(MMUConfig(), mem, ctrl, ex.requests())
    assert ex.mismatches() == []
    ex.hw[-1].paddr ^= 0x1000
    assert len(ex.mismatches()) == 1 and "MISMATCH: 2nd translation" in ex.render()


def test_page_walk_cache_hit_is_cheaper_than_a_cold_walk(capsys):
    _, cold, _ = run(capsys, "0x7f1234600010", "--user")
    _, warm, _ = run(capsys, "0x7f1234600010", "--user", "--after", "0x7f1234567000")
    assert "MISMATCH" not in cold + warm
    assert re.search(r"1st\s+walk \(DTLB miss, PWC hit at PDPTE\)\s+0x0001400010\s+1\s+0\s+\d+", warm)
    assert cycles(warm)[0] < cycles(cold)[0]
