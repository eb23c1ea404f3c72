"""What procps-ng prints for the model's /proc files: ``free`` and a ``top``-style table.

``free_text`` reproduces procps-ng 4.x ``free`` (src/free.c and
library/meminfo.c) for a given /proc/meminfo text, column for column:

- used = MemTotal - MemAvailable (MemAvailable falls back to MemFree when it
  is 0 or above MemTotal; used falls back to MemTotal - MemFree if negative),
- buff/cache = Buffers + Cached + SReclaimable, shared = Shmem,
- swap used = SwapTotal - SwapFree,
- the row label is padded to 8 columns (the longest label, "Total:", plus
  2) and every value right-aligned in 12,
- ``scale_size()``: KiB by default, ``-m`` MiB truncated, ``-h`` the shortest
  of "%.1f" (as a C float) or an integer, with a "Ki/Mi/Gi.." suffix, that fits
  in 5 characters (4 for bytes, "0B").
"""

from __future__ import annotations

import struct

_LABEL_WIDTH = 8
_COL_WIDTH = 12


def parse_meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            out[name] = int(fields[0])
    return out


def _c_float(x: float) -> float:
    """The value after C's (float) cast."""
    return struct.unpack("f", struct.pack("f", x))[0]


def scale_size(kb: int, unit: str) -> str:
    """procps free.c scale_size() for unit k (default), m (-m) or h (-h)."""
    size = kb * 1024
    if unit == "k":
        return str(size // 1024)
    if unit == "m":
        return str(size // (1 << 20))
    if len(f"{size}B") <= 4:
        return f"{size}B"
    buf = ""
    for i, up in enumerate("KMGTP", start=1):
        buf = f"{_c_float(size / 1024.0 ** i):.1f}{up}i"
        if len(buf) <= 5:
            return buf
        buf = f"{int(size / 1024.0 ** i)}{up}i"
        if len(buf) <= 5:
            return buf
    return buf


def free_text(meminfo_text: str, unit: str = "k", wide: bool = False) -> str:
    """The output of ``free`` (``-m``: unit m, ``-h``: unit h, ``-w``: wide) for that meminfo."""
    m = parse_meminfo(meminfo_text)
    total, free = m.get("MemTotal", 0), m.get("MemFree", 0)
    available = m.get("MemAvailable", 0) or free
    if available > total:
        available = free
    used = total - available
    if used < 0:
        used = total - free
    cached = m.get("Cached", 0) + m.get("SReclaimable", 0)
    buffers = m.get("Buffers", 0)
    swap_total, swap_free = m.get("SwapTotal", 0), m.get("SwapFree", 0)
    swap_used = swap_total - swap_free if swap_free < swap_total else 0
    heads = ["total", "used", "free", "shared"] + (["buffers", "cache"] if wide else ["buff/cache"]) + ["available"]
    mem = [total, used, free, m.get("Shmem", 0)] + ([buffers, cached] if wide else [buffers + cached]) + [available]

    def row(label: str, values) -> str:
        return label.ljust(_LABEL_WIDTH) + "".join(scale_size(v, unit).rjust(_COL_WIDTH) for v in values) + "\n"

    header = " " * _LABEL_WIDTH + "".join(h.rjust(max(len(h) + 2, _COL_WIDTH)) for h in heads) + "\n"
    return header + row("Mem:", mem) + row("Swap:", [swap_total, swap_used, swap_free])


def top_text(k) -> str:
    """A top-style process table: VIRT, RES, SHR in KiB, %MEM of MemTotal."""
    from .mm_types import MM_FILEPAGES, MM_SHMEMPAGES
    mem_total_kb = k.managed_pages * 4
    lines = ["    PID USER         VIRT    RES    SHR  %MEM  MINFLT  MAJFLT COMMAND\n"]
    for task in sorted(k.tasks.values(), key=lambda t: t.pid):
        mm = task.mm
        res = mm.rss_pages * 4
        shr = (mm.rss[MM_FILEPAGES] + mm.rss[MM_SHMEMPAGES]) * 4
        pmem = res * 100.0 / mem_total_kb
        lines.append(f"{task.pid:7d} {'root':<8} {mm.total_vm * 4:7d} {res:6d} {shr:6d} {pmem:5.1f} "
                     f"{task.min_flt:7d} {task.maj_flt:7d} {task.name}\n")
    return "".join(lines)
