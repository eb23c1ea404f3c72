"""The reports a run can print, by name: each is the text of the /proc file or tool it is named after."""

from __future__ import annotations

from . import procps, show_mem, task_mmu

KINDS = ("free", "top", "vmstat", "maps", "buddyinfo", "slabinfo", "meminfo")


def render(k, kinds, current=None) -> str:
    """Reports in the order asked, each under a ``== title ==`` line."""
    parts = []
    for kind in kinds:
        if kind == "free":
            parts.append(("free", procps.free_text(show_mem.meminfo(k))))
        elif kind == "meminfo":
            parts.append(("/proc/meminfo", show_mem.meminfo(k)))
        elif kind == "top":
            parts.append(("top", procps.top_text(k)))
        elif kind == "vmstat":
            parts.append(("/proc/vmstat", show_mem.vmstat(k)))
        elif kind == "buddyinfo":
            parts.append(("/proc/buddyinfo", show_mem.buddyinfo(k)))
        elif kind == "slabinfo":
            parts.append(("/proc/slabinfo", k.slab.slabinfo()))
        elif kind == "maps":
            for task in sorted(k.tasks.values(), key=lambda t: t.pid):
                parts.append((f"/proc/{task.pid}/maps ({task.name})", task_mmu.show_maps(task)))
    return "".join(f"== {title} ==\n{text}" for title, text in parts)
