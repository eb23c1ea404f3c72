"""The reports a run can print, by name: each is the text of the /proc file or tool it is named after.

``view(k, kind, **options)`` is the one place each is rendered: ``mmu run
--report``, a workload's ``report`` line and the ``mmu free``, ``top``,
``vmstat``, ``maps``, ``buddyinfo`` and ``slabinfo`` commands all call it.
``FreeWatch`` is the per-operation view of ``mmu free --watch``.
"""

from __future__ import annotations

from model.errors import UserError
from model.proc import show_mem, task_mmu
from model.user import procps

KINDS = ("free", "top", "vmstat", "maps", "buddyinfo", "slabinfo", "meminfo", "stat")


def view(k, kind: str, **options) -> str:
    """The text of one view with the tool's options (see procps.free_text, top_batch, vmstat_text):

    free: unit, wide, si, lohi, total, committed, procps;  top: fields, sort,
    scale;  vmstat: mode ("table", "stats" for -s, "forks" for -f), active,
    wide, unit;  maps: pid (the process's /proc/PID/maps).
    """
    if kind == "free":
        return procps.free_text(show_mem.meminfo(k), min_free_kbytes=k.buddy.min_free_kbytes, **options)
    if kind == "top":
        return procps.top_batch(k, show_mem.meminfo(k), show_mem.proc_stat(k), **options)
    if kind == "vmstat":
        mode = options.pop("mode", "table")
        files = (show_mem.meminfo(k), show_mem.proc_stat(k), show_mem.vmstat(k))
        if mode == "stats":
            return procps.vmstat_stats_text(*files, **options)
        if mode == "forks":
            return procps.vmstat_forks_text(files[1])
        return procps.vmstat_text(*files, **options)
    if kind == "maps":
        return task_mmu.show_maps(find_task(k, options["pid"]))
    if kind == "meminfo":
        return show_mem.meminfo(k)
    if kind == "stat":
        return show_mem.proc_stat(k)
    if kind == "buddyinfo":
        return show_mem.buddyinfo(k)
    if kind == "slabinfo":
        return k.slab.slabinfo()
    raise UserError(f"report {kind!r}: one of {', '.join(KINDS)}")


def find_task(k, which: str | int):
    """A live process by pid or by name."""
    for task in sorted(k.tasks.values(), key=lambda t: t.pid):
        if str(task.pid) == str(which) or task.name == which:
            return task
    live = ", ".join(f"{t.pid} ({t.name})" for t in sorted(k.tasks.values(), key=lambda t: t.pid)) or "none"
    raise UserError(f"no live process {which!r} at the end of the run (live: {live})")


def render(k, kinds, current=None) -> str:
    """Reports in the order asked, each under a ``== title ==`` line.  ``vmstat`` is followed by the
    /proc/vmstat it read; ``maps`` has one section per live process."""
    parts = []
    for kind in kinds:
        if kind == "maps":
            for task in sorted(k.tasks.values(), key=lambda t: t.pid):
                parts.append((f"/proc/{task.pid}/maps ({task.name})", view(k, "maps", pid=task.pid)))
            continue
        title = {"meminfo": "/proc/meminfo", "stat": "/proc/stat", "buddyinfo": "/proc/buddyinfo",
                 "slabinfo": "/proc/slabinfo"}.get(kind, kind)
        parts.append((title, view(k, kind)))
        if kind == "vmstat":
            parts.append(("/proc/vmstat", show_mem.vmstat(k)))
    return "".join(f"== {title} ==\n{text}" for title, text in parts)


def _bytes(n: int) -> str:
    """A size the way workloads write it: 4K, 132K, 2M."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


_MALLOC_EVENT = {
    "mmap": lambda d: f"mmap {_bytes(d['size'])}",
    "mmap-fallback": lambda d: f"brk refused: mmap {_bytes(d['size'])}",
    "brk": lambda d: f"brk +{_bytes(d['grow'])}",
    "heap": lambda d: "heap",
    "enomem": lambda d: "malloc: ENOMEM",
    "munmap": lambda d: f"munmap {_bytes(d['size'])}",
    "trim": lambda d: f"brk -{_bytes(d['trim'])}",
    "free": lambda d: "",
}


class FreeWatch:
    """``mmu free --watch``: a row per workload operation with free's numbers after it.

    Columns: the line, the operation (``$i`` filled in), total, used, free,
    shared, buff/cache, available and swap used in free's unit, and what the
    operation made the kernel do: malloc's brk or mmap (and why ``used`` does not
    drop after a trim of pages never touched), page faults (major and COW ones
    counted apart), what a fork costs, swap-out and swap-in, reclaim, the OOM killer.  Register it in
    ``Runner.listeners``; it writes each row with ``out``.
    """

    HEADS = ("total", "used", "free", "shared", "buff/cache", "available", "swap used")

    def __init__(self, k, out, *, unit: str | None = None, si: bool = False, procps_version: str = "4") -> None:
        self.k = k
        self.out = out
        self.unit, self.si, self.procps = unit, si, procps_version
        self.counters = dict(k.vmstat)
        self.before = self._snapshot()
        out(f"{'line':>5}  {'operation':<28}" + "".join(f"{h:>11}" for h in self.HEADS) + "  what happened\n")

    def _snapshot(self) -> tuple[procps.MemValues, dict[str, int]]:
        fields = procps.parse_meminfo(show_mem.meminfo(self.k))
        return procps.mem_values(fields, self.procps, self.k.buddy.min_free_kbytes), fields

    def __call__(self, step) -> None:
        after = self._snapshot()
        v = after[0]
        values = (v.total, v.used, v.free, v.shared, v.buffers + v.cached, v.available, v.swap_used)
        cells = "".join(f"{procps.scale_size(x, self.unit, self.si, self.procps):>11}" for x in values)
        events = self._events(step, self.before, after)
        self.before = after
        self.out(f"{step.line:>5}  {step.text:<28}{cells}  {', '.join(events)}".rstrip() + "\n")

    def _events(self, step, before, after) -> list[str]:
        k = self.k
        delta = {name: k.vmstat[name] - self.counters.get(name, 0) for name in k.vmstat}
        self.counters = dict(k.vmstat)
        used_drop = before[0].used - after[0].used
        events = []
        if step.skipped:
            events.append(f"skipped: {step.task.name}[{step.task.pid}] is dead")
        for d in k.decisions.since(step.first_seq, "malloc"):
            text = _MALLOC_EVENT[d.outcome](d.detail)
            if d.outcome == "trim" and used_drop < d.detail["trim"] >> 10:
                text += (f" (used -{max(used_drop, 0)}K: the rest of the trimmed heap was never touched, "
                         "so it had no frames to give back)")
            if text:
                events.append(text)
        if step.text.split()[:1] == ["fork"]:
            events.append(self._fork_cost(before[1], after[1]))
        if delta.get("pgfault"):
            major, cow = delta.get("pgmajfault", 0), delta.get("cow_fault", 0)
            kinds = ", ".join(filter(None, [f"{major} major" if major else "", f"{cow} COW" if cow else ""]))
            events.append(f"{delta['pgfault']} fault{'s' * (delta['pgfault'] > 1)}" + (f" ({kinds})" if kinds else ""))
        for name, what in (("pgsteal_kswapd", "kswapd reclaimed"), ("pgsteal_direct", "direct reclaim freed"),
                           ("pswpout", "swapped out"), ("pswpin", "swapped in")):
            if delta.get(name):
                events.append(f"{what} {delta[name]}")
        for d in k.decisions.since(step.first_seq, "oom"):
            victim = next((c for c in d.detail["candidates"] if c["pid"] == d.detail["victim"]), None)
            events.append(f"OOM killer: killed {victim['name']}[{victim['pid']}]" if victim
                          else "OOM killer: nothing to kill")
        task = step.task
        if task is not None and not step.skipped and task.exit_signal in ("SIGSEGV", "SIGBUS"):
            events.append(f"{task.exit_signal}: {task.name}[{task.pid}] died")
        return events

    def _fork_cost(self, before: dict[str, int], after: dict[str, int]) -> str:
        """What fork itself costs: no user page is copied, only the child's page tables and kernel stack."""
        shared = sum(1 for page in self.k.pages.values() if page.kind == "anon" and page.mapcount > 1)
        tables = after["PageTables"] - before["PageTables"]
        stack = after["KernelStack"] - before["KernelStack"]
        return (f"fork: {shared} anonymous pages now shared copy-on-write, no page copied; "
                f"page tables +{tables}K, kernel stack +{stack}K")
