"""The OOM killer's choices and report as Linux mm/oom_kill.c makes them, and how a workload goes on after it."""

from __future__ import annotations

import re

from model.mm import fork
from model.mm.invariants import check
from model.mm.kernel import Kernel
from model.mm.memory import FAULT_RESERVE
from model.teach import why
from model.user.malloc import Malloc
from model.user.workload import Runner, boot_kernel, parse, run_workload
from model.x86.pte import Access

# dump_tasks() / dump_task() format strings (Linux 5.x-6.6)
TASKS_HEADER = "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"
TASK_ROW = re.compile(r"^\[ *(\d+)\] +0 +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(-?\d+) (\S+)$")


def _run(text: str):
    boot, ops = parse(text, "t.wl")
    k = boot_kernel(boot, seed=0)
    runner = Runner(k)
    runner.run(ops)
    return k, runner


def test_the_report_has_the_task_dump_and_the_oom_kill_summary_line_in_linux_order():
    k, _ = run_workload("oom")
    lines = k.dmesg
    first = next(i for i, x in enumerate(lines) if "invoked oom-killer" in x)
    assert lines[first + 1] == "Tasks state (memory values in pages):"
    assert lines[first + 2] == TASKS_HEADER
    rows = [TASK_ROW.match(x) for x in lines[first + 3:first + 6]]
    assert [(int(r[1]), r[8]) for r in rows] == [(100, "idle"), (101, "protected"), (102, "hog")]
    assert all(r[1] == r[2] for r in rows) and rows[1][7] == "-1000"  # tgid = pid; unkillable tasks are listed
    assert lines[first + 6] == ("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
                                "global_oom,task_memcg=/,task=hog,pid=102,uid=0")
    killed = re.match(r"Out of memory: Killed process 102 \(hog\) total-vm:(\d+)kB, anon-rss:(\d+)kB, "
                      r"file-rss:(\d+)kB, shmem-rss:(\d+)kB, UID:0 pgtables:(\d+)kB oom_score_adj:0$",
                      lines[first + 7])
    hog = rows[2]
    # the same mm, in pages there and kB here: total_vm, rss = anon + file + shmem, pgtables_bytes
    assert int(hog[3]) * 4 == int(killed[1])
    assert int(hog[4]) * 4 == int(killed[2]) + int(killed[3]) + int(killed[4])
    assert int(hog[5]) == int(killed[5]) * 1024


def test_with_every_task_unkillable_the_kernel_panics_instead_of_killing_one():
    """out_of_memory(): no victim -> "Out of memory and no killable processes..." then
    panic("System is deadlocked on memory"); the machine stops there."""
    k, runner = _run("boot mem=32M\nspawn a adj=-1000\nspawn b adj=-1000\nmalloc x 20M\ntouch x\nmalloc z 20M\n"
                     "touch z\nspawn late\n")
    assert not k.vmstat["oom_kill"] and {t.name for t in k.tasks.values()} == {"a", "b"}
    tail = [x for x in runner.log if x.startswith("kernel:")][-2:]
    assert tail == ["kernel: Out of memory and no killable processes...",
                    "kernel: Kernel panic - not syncing: System is deadlocked on memory"]
    assert runner.log[-1] == "t.wl:7: the kernel panicked; the remaining operations did not run"
    assert "no process could be killed: the kernel panicked" in why.why_oom(k)


def test_an_oom_at_spawn_is_invoked_by_the_process_being_spawned():
    k = Kernel(32 << 20)
    hog = fork.spawn(k, "hog")
    hog.heap = Malloc(k, hog)
    pages = [p + i for size in (27 << 20, 1 << 20) for p in [hog.heap.malloc(size)] for i in range(0, size, 4096)]
    for va in pages:  # fill memory, stop short of the OOM killer
        if k.buddy.nr_free_pages - FAULT_RESERVE - 4 <= k.buddy.watermarks.min:
            break
        k.access(hog, va, Access.WRITE)
    assert not k.vmstat["oom_kill"]
    fork.spawn(k, "newcomer", 300)
    assert k.vmstat["oom_kill"] == 1 and not hog.alive
    assert "newcomer invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, " \
           "oom_score_adj=300" in k.dmesg
    assert not any("kswapd0" in x for x in k.dmesg)
    check(k)


def test_use_of_a_process_the_oom_killer_chose_skips_its_operations_and_the_run_goes_on():
    k, runner = _run("boot mem=32M\nspawn hog\nspawn other\nmalloc y 1M\ntouch y\nuse hog\nmalloc x 20M\n"
                     "touch x\nmalloc z 20M\ntouch z\nuse other\ntouch y\nuse hog\ntouch x\nfree x\n")
    assert k.vmstat["oom_kill"] == 1 and [t.name for t in k.tasks.values()] == ["other"]
    assert "t.wl:13: use hog: pid 100 was killed (SIGKILL); its operations are skipped" in runner.log
    assert "t.wl:14: touch skipped: pid 100 (hog) is dead (SIGKILL)" in runner.log
    assert "t.wl:15: free skipped: pid 100 (hog) is dead (SIGKILL)" in runner.log


def test_brk_logs_only_a_refused_move():
    k, runner = _run("boot mem=32M\nspawn a\nbrk +64K\nbrk -16K\nbrk +100G\n")
    assert [x for x in runner.log if "brk" in x] == ["t.wl:5: brk +100G refused"]
    a = k.tasks[100]
    assert a.mm.brk == a.mm.start_brk + (48 << 10)


def test_a_shared_anonymous_mapping_larger_than_ram_plus_swap_is_refused_like_shmem_acct_size():
    """mmap(MAP_SHARED|MAP_ANONYMOUS) -> shmem_zero_setup -> shmem_acct_size -> __vm_enough_memory:
    under the default heuristic (OVERCOMMIT_GUESS) more pages than RAM + swap fail with ENOMEM."""
    k, runner = _run("boot mem=32M swap=16M\nspawn a\nmmap big 1000G shared\nmmap fits 40M shared\n")
    assert runner.log[-1] == ("t.wl:3: mmap failed: mmap of 1073741824000 bytes exceeds RAM + swap "
                              "(heuristic overcommit): ENOMEM")
    assert "big" not in k.tasks[100].vars and "fits" in k.tasks[100].vars
