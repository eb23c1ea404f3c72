"""Swap-slot accounting as Linux's swap_map keeps it (mm/swapfile.c, mm/shmem.c), under the invariant checker.

A swap slot counts the references to it: one per PTE for an anonymous page (try_to_unmap installs the
entry in each), one for a shmem page, whose PTEs are simply unmapped and whose page-cache (xarray) slot
takes the swap entry (shmem_writepage).  shmem_swapin_folio drops that one reference when the page
comes back, and the last reference frees the slot.  So once every process has exited, SwapFree equals
SwapTotal, and memory pressure on shared memory uses swap before it ever calls the OOM killer.
"""

from __future__ import annotations

from model.mm import fork, mmap, vmscan
from model.mm.invariants import check
from model.mm.kernel import Kernel
from model.proc.show_mem import meminfo
from model.user.procps import parse_meminfo
from model.user.workload import Runner, boot_kernel, parse, run_workload
from model.x86.pte import Access


def _swap(k: Kernel) -> tuple[int, int]:
    m = parse_meminfo(meminfo(k))
    return m["SwapTotal"], m["SwapFree"]


def test_a_swapped_out_shmem_page_holds_one_reference_whatever_its_mapcount():
    k = Kernel(64 << 20, 16 << 20)
    parent = fork.spawn(k, "parent")
    shm = mmap.do_mmap(k, parent, 0, 4096, 3, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    k.access(parent, shm, Access.WRITE)
    child = fork.do_fork(k, parent, "child")
    k.access(child, shm, Access.READ)
    page = next(p for p in k.pages.values() if p.kind == "shmem")
    assert page.mapcount == 2
    vmscan.check_references(k, page)  # clear the accessed bits: the page is cold
    assert vmscan.shrink_page(k, page, "direct") == "swap"
    (offset, count), = k.swap.swap_map.items()
    assert count == 1 and page.mapping.swapped == {0: offset}
    check(k)
    assert k.access(child, shm, Access.READ) is not None  # shmem_swapin_folio: the slot's last reference goes
    assert k.swap.swap_map == {} and _swap(k)[0] == _swap(k)[1]
    check(k)


def test_after_every_process_exits_swap_free_equals_swap_total():
    k, _ = run_workload("shmem-swap")
    assert k.vmstat["pswpout"] and k.vmstat["pswpin"] and not k.vmstat["oom_kill"]
    assert not k.tasks
    total, free = _swap(k)
    assert total == 65532 and free == total


CYCLE = """\
boot mem=24M swap=24M
spawn a
mmap shm 12M shared
touch shm
fork b
use b
mmap shm2 12M shared
touch shm2
repeat 2
use a
load shm
touch shm 0 1M
use b
load shm2
touch shm
end
"""


def test_shmem_pressure_swaps_in_and_out_without_the_oom_killer_while_swap_has_room():
    """24 MiB of shmem in 20 MiB of RAM with 24 MiB of swap: it fits, so no process may be killed."""
    boot, ops = parse(CYCLE, "cycle.wl")
    k = boot_kernel(boot, seed=0)
    Runner(k).run(ops)
    assert k.vmstat["pswpout"] > 3072 and k.vmstat["pswpin"] > 3072  # more than all of RAM went through swap
    assert not k.vmstat["oom_kill"] and len(k.tasks) == 2
    total, free = _swap(k)
    assert total - free == len(k.swap.swap_map) * 4  # kB
    check(k)  # and swap_map holds exactly the slots that PTEs and shmem mappings name
