"""Named workloads, the workload format, `mmu run` / `mmu snapshot`, and random sequences under the invariant checker."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import main
from model.errors import UserError
from model.mm import fork
from model.mm.invariants import check
from model.mm.kernel import Kernel
from model.user.malloc import Malloc
from model.user.workload import named_workloads, parse, run_workload
from model.x86.pte import Access

NAMED = [name for name, _ in named_workloads()]


def test_every_mechanism_has_a_named_workload():
    assert {"small-malloc", "large-malloc", "stack-growth", "file-read", "file-mmap", "fork-cow", "swap-pressure",
            "oom", "hugepages", "shared-memory", "segv"} <= set(NAMED)


@pytest.mark.parametrize("name", NAMED)
def test_named_workload_runs_and_keeps_every_invariant(name):
    k, runner = run_workload(name, seed=3)
    check(k)
    assert k.vmstat["pgfault"] > 0


def test_swap_pressure_workload_reclaims_through_kswapd_and_swaps_back_in():
    k, _ = run_workload("swap-pressure")
    assert k.vmstat["pgscan_kswapd"] and k.vmstat["pswpout"] and k.vmstat["pswpin"] and not k.vmstat["oom_kill"]


def test_oom_workload_kills_the_hog_and_spares_the_unkillable():
    k, runner = run_workload("oom")
    assert k.vmstat["oom_kill"] == 1
    assert {t.name for t in k.tasks.values()} == {"idle", "protected"}
    assert any("Out of memory: Killed process 102 (hog)" in line for line in runner.log)


def test_a_run_replays_exactly_from_its_seed():
    text = "boot mem=32M swap=16M aslr=on\nspawn a\nmalloc p 20M\ntouch p\nmmap q 1M\ntouch q\n"
    runs = []
    for _ in range(2):
        k = _run_text(text, seed=42)
        runs.append((k.vmstat.copy(), [(t.mm.mmap_base, t.mm.brk) for t in k.tasks.values()], k.mem.touched_frames))
    assert runs[0] == runs[1]


def _run_text(text: str, seed: int = 0) -> Kernel:
    from model.user.workload import Runner, boot_kernel
    boot, ops = parse(text, "test.wl")
    k = boot_kernel(boot, seed=seed)
    Runner(k).run(ops)
    return k


@pytest.mark.parametrize("text,message", [
    ("spawn a\nmalloc p\n", "test.wl:2: malloc takes 2..2 arguments: malloc VAR SIZE"),
    ("spawn a\nmalloc p 12Q\n", "test.wl:2: size '12Q': expected a number of bytes"),
    ("spawn a\nfrobnicate x\n", "test.wl:2: unknown operation 'frobnicate'"),
    ("spawn a\nboot mem=1G\n", "test.wl:2: boot must be the first operation"),
    ("spawn a\nrepeat 3\ntouch x\n", "test.wl:2: repeat without a matching end"),
    ("spawn a\nmmap m 4K exotic\n", "test.wl:2: mmap flag 'exotic'"),
    ("spawn a\nmprotect m rxw\n", "test.wl:2: protection 'rxw'"),
    ("boot mem=1G colour=red\n", "test.wl:1: boot setting 'colour=red'"),
])
def test_malformed_lines_name_the_file_line_and_rule(text, message):
    with pytest.raises(UserError) as e:
        parse(text, "test.wl")
    assert str(e.value).startswith(message)


def test_runtime_errors_name_the_line_too():
    with pytest.raises(UserError, match=r"test.wl:2: variable 'nope' is not set"):
        _run_text("spawn a\ntouch nope\n")
    with pytest.raises(UserError, match=r"test.wl:2: file /x: no such file"):
        _run_text("spawn a\nread /x\n")


def test_cli_run_list_prints_name_then_description(capsys):
    assert main(["run", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == NAMED
    assert all(len(line.split(None, 1)) == 2 for line in lines)


def test_cli_run_prints_the_seed_log_and_reports(capsys):
    assert main(["run", "oom", "--seed", "5", "--report", "free,vmstat"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed 5\n") and "== free ==" in out and "oom_kill 1" in out


def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.wl"
    bad.write_text("spawn a\nmalloc p 1X\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmu: error: {bad}:2: size '1X'") and err.count("\n") == 1
    assert main(["run", "oom", "--mem", "lots"]) == 2
    assert main(["run", "oom", "--report", "colour"]) == 2


def _walk(image: bytes, cr3: int, va: int):
    """An independent minimal 4-level walker over the raw image (Intel SDM 4.5)."""
    table = cr3 & 0x000FFFFFFFFFF000
    for level, shift in ((4, 39), (3, 30), (2, 21), (1, 12)):
        entry = struct.unpack_from("<Q", image, table + 8 * ((va >> shift) & 0x1FF))[0]
        if not entry & 1:
            return None
        if level == 1 or (level in (2, 3) and entry & 0x80):
            base = entry & 0x000FFFFFFFFFF000 & ~((1 << shift) - 1)
            return base | (va & ((1 << shift) - 1))
        table = entry & 0x000FFFFFFFFFF000
    return None


def test_snapshot_writes_an_image_that_an_independent_walker_translates(tmp_path, capsys):
    out = tmp_path / "snap"
    assert main(["snapshot", "fork-cow", "--out", str(out)]) == 0
    image = (out / "phys.bin").read_bytes()
    doc = json.loads((out / "mappings.json").read_text())
    assert len(image) == doc["mem_bytes"] == 64 << 20
    assert (out / "meminfo").read_text().startswith("MemTotal:") and "buff/cache" in (out / "free.txt").read_text()
    checked = 0
    for proc in doc["processes"]:
        assert proc["mappings"]
        for m in proc["mappings"]:
            for off in (0, m["size"] - 8):
                assert _walk(image, proc["cr3"], m["va"] + off) == m["pa"] + off
                checked += 1
    assert checked > 100


def test_snapshot_of_huge_pages_translates_2m_leaves(tmp_path, capsys):
    out = tmp_path / "snap"
    assert main(["snapshot", "hugepages", "--out", str(out)]) == 0
    image = (out / "phys.bin").read_bytes()
    doc = json.loads((out / "mappings.json").read_text())
    huge = [(p["cr3"], m) for p in doc["processes"] for m in p["mappings"] if m["size"] == 2 << 20]
    assert huge
    for cr3, m in huge:
        assert _walk(image, cr3, m["va"] + 0x12345) == m["pa"] + 0x12345


ops = st.lists(st.tuples(st.sampled_from(["malloc", "free", "touch", "fork", "calloc", "realloc", "load"]),
                         st.integers(0, 7), st.integers(1, 400 << 10)), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, swap=st.booleans())
def test_random_malloc_free_touch_fork_sequences_keep_the_invariants(ops, swap):
    """Whatever a program does with malloc, free, touch and fork, every frame stays accounted for."""
    k = Kernel(24 << 20, (16 << 20) if swap else 0)
    t = fork.spawn(k, "p")
    t.heap = Malloc(k, t)
    procs = [t]
    for op, slot, size in ops:
        live = [p for p in procs if p.alive]
        if not live:
            break
        task = live[slot % len(live)]
        heap = task.heap
        mine = task.vars
        if op in ("malloc", "calloc"):
            if slot in mine:
                heap.free(mine.pop(slot)[0])
            ptr = heap.malloc(size) if op == "malloc" else heap.calloc(1, size)
            if ptr and task.alive:
                mine[slot] = (ptr, size)
        elif op == "realloc" and slot in mine:
            ptr = heap.realloc(mine[slot][0], size)
            if task.alive:
                mine[slot] = (ptr, size) if ptr else mine.pop(slot)
        elif op == "free" and slot in mine:
            heap.free(mine.pop(slot)[0])
        elif op in ("touch", "load") and slot in mine:
            ptr, length = mine[slot]
            heap.touch(ptr, min(length, size), Access.WRITE if op == "touch" else Access.READ)
        elif op == "fork" and len(procs) < 4:
            procs.append(fork.do_fork(k, task, f"c{len(procs)}"))
    check(k)


class RefMMUTranslator:
    """The reference MMU (TLBs + PWC) as the kernel's translator, fed by the kernel's shootdown hook:
    a missing flush would leave a stale translation and the stamp checks would catch it."""

    def __init__(self, k: Kernel) -> None:
        from model.config import MMUConfig, TLBConfig
        from model.reference.ref_mmu import RefMMU
        from model.reference.ref_walker import ControlRegs
        cfg = MMUConfig(dtlb=TLBConfig(entries=64, ways=4), pwc_entries=8)
        self.ref = RefMMU(cfg, k.mem, ControlRegs(pcide=k.pcide))
        k.flush_listeners.append(self.ref.ctl)

    def translate(self, task, vaddr, access):
        return self.ref.translate(vaddr, access, True)


@pytest.mark.parametrize("pcid", ["off", "on"])
@pytest.mark.parametrize("name", ["fork-cow", "swap-pressure", "file-mmap", "shared-memory", "hugepages", "oom"])
def test_workloads_stay_correct_behind_a_caching_mmu_fed_only_by_the_shootdown_hook(name, pcid):
    from model.user.workload import Runner, boot_kernel, load
    text, source = load(name)
    boot, ops = parse(text, source)
    boot["pcid"] = pcid
    k = boot_kernel(boot, seed=1, mem=48 << 20 if name == "swap-pressure" else None)
    k.mmu = RefMMUTranslator(k)
    Runner(k).run(ops)
    check(k)
    for task in list(k.tasks.values()):  # read back what each task stored, twice: the second pass hits the TLB
        stamps = sorted(task.stamps.items())[-48:]
        for _ in range(2):
            for va, stamp in stamps:
                pa = k.access(task, va, Access.READ)
                assert pa is not None and k.mem.read64(pa & ~7) == stamp
    check(k)
    assert k.mmu.ref.counters["hits"] > 0 or not k.tasks  # shared-memory ends with every process gone


def test_segfault_log_prints_the_error_code_in_hex_like_arch_x86_mm_fault():
    """arch/x86/mm/fault.c show_signal_msg: "segfault at %lx ip %px sp %px error %lx": an NX fetch of a
    present user page (P|U/S|I/D = 0x15) is logged as "error 15", not its decimal value 21."""
    k, _ = run_workload("segv")
    assert any("error 15 (SEGV_ACCERR)" in line for line in k.dmesg)


def test_swap_io_counts_as_paging_io_like_submit_bio():
    """Linux counts every bio in pgpgin/pgpgout (block/blk-core.c submit_bio), swap included, so after
    swapping kB paged out >= 4 kB x pages swapped out, and likewise in."""
    k, _ = run_workload("swap-pressure")
    assert k.vmstat["pswpout"] > 0 and k.vmstat["pswpin"] > 0
    assert k.vmstat["pgpgout"] >= 4 * k.vmstat["pswpout"]
    assert k.vmstat["pgpgin"] >= 4 * k.vmstat["pswpin"]
