"""`mmu free --watch` names what each line cost: COW faults, the fork itself, a trim that frees nothing.

Expected values come from the workload's own semantics and from the page tables, not from the watch's
counters: after fork every anonymous page the parent had touched is mapped by both processes (mm/memory.c
copy_present_pte write-protects it, copies nothing), a write to such a page is a copy-on-write fault, and
brk can only give back frames that pages of the trimmed range actually had.
"""

import re

from cli.main import main
from model.mm.memory import leaf_entries
from model.user.workload import run_workload
from model.x86.pte import P, addr_mask

USER_TOP = 1 << 47


def _rows(capsys, *argv):
    assert main(["free", *argv, "--watch"]) == 0
    return {int(line.split()[0]): line for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}


def _frames(task):
    return {va: value & addr_mask(52) for va, value in leaf_entries(task.mm, 0, USER_TOP) if value & P}


def test_fork_row_counts_the_pages_now_shared_and_copies_none(tmp_path, capsys):
    wl = tmp_path / "fork.wl"
    wl.write_text("boot mem=64M\nspawn parent\nmalloc buf 256K\ntouch buf\nfork child\n")
    k, _ = run_workload(str(wl), seed=0)
    parent, child = sorted(k.tasks.values(), key=lambda t: t.pid)
    pf, cf = _frames(parent), _frames(child)
    shared = {pa for va, pa in pf.items() if cf.get(va) == pa and k.pages.get(pa >> 12) is not None
              and k.pages[pa >> 12].kind == "anon"}
    row = _rows(capsys, str(wl))[5]
    assert f"fork: {len(shared)} anonymous pages now shared copy-on-write, no page copied" in row
    assert len(shared) >= 64  # the 256K buffer alone


def test_writes_after_fork_are_labelled_cow(tmp_path, capsys):
    wl = tmp_path / "cow.wl"
    wl.write_text("boot mem=64M\nspawn parent\nmalloc buf 256K\ntouch buf\nfork child\nuse child\n"
                  "touch buf 0 64K\n")
    row = _rows(capsys, str(wl))[7]
    # buf starts 16 bytes into its mapping (the chunk header), so 64K from there spans 17 pages,
    # each already touched by the parent and so shared: every fault is a copy-on-write one.
    assert re.search(r"\b17 faults \(17 COW\)", row), row


def _used(row):
    """The used column: after the 5-wide line number, two spaces, the 28-wide operation and total (11 wide)."""
    start = 5 + 2 + 28 + 11
    return int(row[start:start + 11])


def test_trim_of_untouched_heap_says_why_used_does_not_drop(tmp_path, capsys):
    """Freeing the never-touched chunk at the top lets glibc trim (top beyond M_TRIM_THRESHOLD, M_TOP_PAD kept):
    brk gives the range back, but it had no frames, so used stays."""
    wl = tmp_path / "trim.wl"
    wl.write_text("boot mem=64M\nspawn app\nmalloc a 100K\nmalloc b 100K\nfree b\n")
    rows = _rows(capsys, str(wl))
    assert "brk -" in rows[5] and "used -0K" in rows[5] and "never touched" in rows[5], rows[5]
    assert _used(rows[5]) == _used(rows[4])


def test_trim_of_touched_heap_lowers_used_by_the_touched_part(tmp_path, capsys):
    wl = tmp_path / "trim.wl"
    wl.write_text("boot mem=64M\nspawn app\nmalloc a 100K\nmalloc b 100K\ntouch a\ntouch b\nfree b\nfree a\n")
    rows = _rows(capsys, str(wl))
    line = max(n for n, row in rows.items() if "brk -" in row)
    drop = _used(rows[line - 1]) - _used(rows[line])
    assert drop > 0, rows[line]
    assert f"used -{drop}K" in rows[line], rows[line]


def test_vmstat_says_which_clock_its_rates_use(capsys):
    assert main(["vmstat", "swap-pressure"]) == 0
    err = capsys.readouterr().err
    k, _ = run_workload("swap-pressure", seed=0)
    assert f"{k.cputime.jiffies} ticks" in err and "per second of the model's CPU clock" in err
