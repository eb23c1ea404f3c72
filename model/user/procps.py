"""What procps-ng prints for the model's /proc files: ``free``, ``top`` and ``vmstat``.

Each function takes the /proc text the real tool reads (meminfo, stat,
vmstat) and prints what procps-ng 4.0.2 prints for it, column for column; the
tests bind-mount the model's files over /proc and run the installed tools to
check.  The derived values come from the library as procps computes them
(library/meminfo.c in 4.x, proc/sysinfo.c ``meminfo()`` in 3.3.x):

- used = MemTotal - MemAvailable since procps-ng 4.0.1 (its NEWS: "library:
  Used memory is Total - Available"); 3.3.x printed MemTotal - MemFree -
  Buffers - Cache with Cache = Cached + SReclaimable.  Both fall back to
  MemTotal - MemFree when the result is negative.  ``procps="3.3"`` selects
  the old rule and the old layout of ``free``.
- available = MemAvailable, or MemFree when it is above MemTotal; 4.x also
  uses MemFree when MemAvailable is 0, 3.3.x recomputes a 0 from
  min_free_kbytes (its fallback for kernels older than 3.14),
- buff/cache = Buffers + Cached + SReclaimable, shared = Shmem,
  swap used = SwapTotal - SwapFree.

``free`` has the same layout in 3.3.17 and 4.0.2; its numbers differ in two
places of free.c scale_size(): --si without a unit scales by 1000 only since
4.0.1 (NEWS: "free: Use --kilo when only specifying --si"), and 3.3.x's -h
first truncates to whole MiB (``size / 1024`` on an integer), so 1..1023 KiB
read "0.0Ki" and the Mi column always ends in ".0".

Numbers go through C ``float`` where procps uses one (``free -h``, top's
summary and percentages, vmstat's unit conversion), so they round the same.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from model.errors import UserError

# free's unit options as free.c's args.exponent: none given 0, -b 1, -k (or --kilo) 2, -m 3, -g 4, --tebi 5,
# --pebi 6; the --si flag, or --kilo/--mega/..., makes the base 1000.  "h" is -h (--human).
FREE_EXPONENTS = {None: 0, "b": 1, "k": 2, "m": 3, "g": 4, "t": 5, "p": 6}
PROCPS_VERSIONS = ("3.3", "4")


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


@dataclass(frozen=True)
class MemValues:
    """What procps derives from /proc/meminfo, in KiB."""

    total: int
    free: int
    used: int
    shared: int
    buffers: int
    cached: int  # Cached + SReclaimable: procps's "cache"
    available: int
    active: int
    inactive: int
    swap_total: int
    swap_free: int
    swap_used: int
    low_total: int
    low_free: int
    high_total: int
    high_free: int
    commit_limit: int
    committed_as: int


def mem_values(m: dict[str, int], procps: str = "4", min_free_kbytes: int | None = None) -> MemValues:
    """The library's derived meminfo values for procps ``procps`` ("4" or "3.3").

    ``min_free_kbytes`` (/proc/sys/vm/min_free_kbytes) is read only by 3.3.x,
    and only when MemAvailable is 0.
    """
    total, free = m.get("MemTotal", 0), m.get("MemFree", 0)
    buffers = m.get("Buffers", 0)
    cached = m.get("Cached", 0) + m.get("SReclaimable", 0)
    available = m.get("MemAvailable", 0)
    swap_total, swap_free = m.get("SwapTotal", 0), m.get("SwapFree", 0)
    if procps == "4":
        available = available or free
        if available > total:
            available = free
        used = total - available
        swap_used = swap_total - swap_free if swap_free < swap_total else 0
    else:
        if available > total:
            available = free
        used = total - free - cached - buffers
        if available == 0:
            low = (min_free_kbytes or 0) * 5 // 4
            pagecache = m.get("Active(file)", 0) + m.get("Inactive(file)", 0)
            slab = m.get("SReclaimable", 0)
            available = max(free - low + pagecache - min(pagecache // 2, low) + slab - min(slab // 2, low), 0)
        swap_used = swap_total - swap_free
    if used < 0:
        used = total - free
    low_total, low_free = m.get("LowTotal", 0), m.get("LowFree", 0)
    if not low_total:
        low_total, low_free = total, free
    return MemValues(total=total, free=free, used=used, shared=m.get("Shmem", 0), buffers=buffers, cached=cached,
                     available=available, active=m.get("Active", 0), inactive=m.get("Inactive", 0),
                     swap_total=swap_total, swap_free=swap_free, swap_used=swap_used, low_total=low_total,
                     low_free=low_free, high_total=m.get("HighTotal", 0), high_free=m.get("HighFree", 0),
                     commit_limit=m.get("CommitLimit", 0), committed_as=m.get("Committed_AS", 0))


# --- free ---------------------------------------------------------------------------------------

def scale_size(kb: int, unit: str | None = None, si: bool = False, procps: str = "4") -> str:
    """free.c scale_size() of procps ``procps``: ``kb`` in ``unit`` (None for no unit option, b, k, m, g, t, p,
    or h for -h), powers of 1000 with ``si``.

    Units truncate (``(long)(bytes / base^(exponent-1))``); no unit prints KiB,
    or bytes / 1000 with --si in 4.x.  -h takes the first of "%.1f" (of a C
    float) and "%ld" with suffix K/M/G/T/P and "i" (no "i" with --si) that
    fits in 5 characters (4 with --si), after bytes "%ldB" if that fits in 4.
    """
    base = 1000 if si else 1024
    if unit != "h":
        exponent = FREE_EXPONENTS[unit]
        if exponent == 0:
            return str(kb if procps == "3.3" else kb * 1024 // base)
        if exponent == 1:
            return str(kb * 1024)
        return str(int(kb * 1024 / float(base ** (exponent - 1))))
    if len(f"{kb * 1024}B") <= 4:
        return f"{kb * 1024}B"
    limit, tail = (4, "") if si else (5, "i")
    buf = ""
    for i, up in enumerate("KMGTP", start=1):
        if procps == "3.3":  # (float)((size / 1024) * base / power(base, i - 2)), the product in float
            value = _c_float(kb // 1024 * base) / float(base ** (i - 1))
        else:  # (float)(bytes / power(base, i))
            value = kb * 1024 / float(base ** i)
        buf = f"{_c_float(value):.1f}{up}{tail}"
        if len(buf) <= limit:
            return buf
        buf = f"{int(value)}{up}{tail}"
        if len(buf) <= limit:
            return buf
    return buf


def free_text(meminfo_text: str, unit: str | None = None, wide: bool = False, *, si: bool = False,
              lohi: bool = False, total: bool = False, committed: bool = False, procps: str = "4",
              min_free_kbytes: int | None = None) -> str:
    """The output of ``free`` for that meminfo: ``unit`` as in scale_size (None, -b/-k/-m/-g/--tebi/--pebi/-h),
    ``si`` (--si, or --kilo/--mega/... with a unit), ``wide`` (-w: buffers and cache apart), ``lohi`` (-l),
    ``total`` (-t), ``committed`` (-v, CommitLimit and Committed_AS; 4.0.1 and later).

    Each row is the label padded to 9 columns ("%-9s", print_head_col() in
    4.x), "%11s", then " %11s" for each further value.
    """
    if procps not in PROCPS_VERSIONS:
        raise UserError(f"procps version {procps!r}: one of {', '.join(PROCPS_VERSIONS)}")
    if committed and procps != "4":
        raise UserError("free -v (--committed) appeared in procps-ng 4.0.1; 3.3 has no Comm: line")
    v = mem_values(parse_meminfo(meminfo_text), procps, min_free_kbytes)

    def row(label: str, values) -> str:
        return f"{label:<9}" + " ".join(f"{scale_size(x, unit, si, procps):>11}" for x in values) + "\n"

    heads = ["total", "used", "free", "shared"] + (["buffers", "cache"] if wide else ["buff/cache"]) + ["available"]
    header = " " * 8 + "".join(f"{h:>12}" for h in heads) + "\n"
    mem = [v.total, v.used, v.free, v.shared] + \
        ([v.buffers, v.cached] if wide else [v.buffers + v.cached]) + [v.available]
    out = header + row("Mem:", mem)
    if lohi:
        low_used = v.low_total - v.low_free if procps == "3.3" or v.low_free < v.low_total else 0
        high_used = v.high_total - v.high_free if procps == "3.3" or v.high_free < v.high_total else 0
        out += row("Low:", [v.low_total, low_used, v.low_free])
        out += row("High:", [v.high_total, high_used, v.high_free])
    out += row("Swap:", [v.swap_total, v.swap_used, v.swap_free])
    if total:
        out += row("Total:", [v.total + v.swap_total, v.used + v.swap_used, v.free + v.swap_free])
    if committed:
        out += row("Comm:", [v.commit_limit, v.committed_as, v.commit_limit - v.committed_as])
    return out


# --- top ----------------------------------------------------------------------------------------

# top -E: the summary's unit, its label and its printf format (do_memory() scaletab, without BOOST_MEMORY).
TOP_SCALES = {"k": ("KiB", 1.0, "%.0f "), "m": ("MiB", 1024.0, "%#.1f "), "g": ("GiB", 1024.0 ** 2, "%#.1f "),
              "t": ("TiB", 1024.0 ** 3, "%#.1f "), "p": ("PiB", 1024.0 ** 4, "%#.1f "),
              "e": ("EiB", 1024.0 ** 5, "%#.1f ")}
_SCALED_SUFFIXES = "mgtpe"  # Scaled_sfxtab after 'k'


def _top_amount(kb: int, scale: str) -> str:
    """prT(): printf into a 10-byte buffer (a '+' at [8] when it did not fit), then "%9.9s"."""
    _, div, fmt = TOP_SCALES[scale]
    text = fmt % _c_float(_c_float(kb) / div)
    if len(text) > 9:
        text = text[:8] + "+"
    return f"{text:>9}"


def top_memory_lines(meminfo_text: str, scale: str = "m") -> str:
    """top's "MiB Mem :" and "MiB Swap:" summary lines (procps-ng 4.x MEMORY_line1_fmt / line2_fmt),
    trailing spaces included: "buff/cache" is followed by five, "avail Mem" by one."""
    v = mem_values(parse_meminfo(meminfo_text))
    label = TOP_SCALES[scale][0]
    a = {name: _top_amount(getattr(v, name), scale) for name in
         ("total", "free", "used", "swap_total", "swap_free", "swap_used", "available")}
    qued = _top_amount(v.buffers + v.cached, scale)
    return (f"{label} Mem : {a['total']}total, {a['free']}free, {a['used']}used, {qued}buff/cache     \n"
            f"{label} Swap: {a['swap_total']}total, {a['swap_free']}free, {a['swap_used']}used. "
            f"{a['available']}avail Mem \n")


def parse_stat(text: str) -> dict[str, list[int]]:
    """/proc/stat as name -> numbers ("cpu" -> user nice system idle iowait irq softirq steal guest guest_nice)."""
    out = {}
    for line in text.splitlines():
        name, *values = line.split()
        out[name] = [int(x) for x in values]
    return out


def top_cpu_line(stat_text: str) -> str:
    """top's "%Cpu(s):" line (STATE_lin2x7_fmt) from the /proc/stat cpu line: each state's share of
    all ticks, as a C float; no ticks at all reads as idle."""
    us, ni, sy, idle, wa, hi, si, st = (parse_stat(stat_text)["cpu"] + [0] * 8)[:8]
    total = us + ni + sy + idle + wa + hi + si + st
    if total < 1:
        idle = total = 1
    scale = _c_float(100.0 / total)
    cells = ",".join(f"{_c_float(n * scale):#5.1f} {name}" for n, name in
                     ((us, "us"), (sy, "sy"), (ni, "ni"), (idle, "id"), (wa, "wa"), (hi, "hi"), (si, "si"),
                      (st, "st")))
    return f"%Cpu(s):{cells} \n"


def top_tasks_line(k) -> str:
    """top's "Tasks:" line: the process on the model's CPU is running, every other one sleeps."""
    running = int(k.current is not None and k.current.alive)
    n = len(k.tasks)
    return (f"Tasks: {n:3d} total, {running:3d} running, {n - running:3d} sleeping, {0:3d} stopped, "
            f"{0:3d} zombie\n")


def _scale_mem(kb: float, width: int) -> str:
    """top's scale_mem() for the task columns (VIRT, RES, SHR): KiB, else m/g/t/p/e with one decimal."""
    num = _c_float(kb)
    text = f"{num:.0f}"
    for suffix in _SCALED_SUFFIXES:
        if len(text) <= width:
            return text
        num = _c_float(num / 1024.0)
        text = f"{num:.1f}{suffix}"
    return text if len(text) <= width else "?"


def _scale_num(n: int, width: int) -> str:
    """top's scale_num() (fault counts): the number, else k/m/.. by 1024 with one decimal or none."""
    num = _c_float(n)
    if len(f"{num:.0f}") <= width:
        return f"{num:.0f}"
    for suffix in "k" + _SCALED_SUFFIXES:
        num = _c_float(num / 1024.0)
        for text in (f"{num:.1f}{suffix}", f"{num:.0f}{suffix}"):
            if len(text) <= width:
                return text
    return "?"


def _scale_pcnt(pct: float, width: int) -> str:
    """top's scale_pcnt(): "%#.1f" when it fits, else no decimals, else "?" (it does not fit at all)."""
    text = f"{pct:#.1f}"
    if len(text) <= width:
        return text
    text = f"{pct:{width}.0f}"
    return text if len(text) <= width else "?"


def _scale_tics(ticks: int, hz: int = 100) -> str:
    """TIME+ (scale_tics() TICS_AS_SECS): minutes:seconds.hundredths."""
    cs = ticks * 100 // hz
    return f"{cs // 6000}:{cs // 100 % 60:02d}.{cs % 100:02d}"


@dataclass(frozen=True)
class TopRow:
    """One process as top reads it from /proc/PID (KiB, ticks)."""

    pid: int
    state: str
    virt: int
    res: int
    shr: int
    ticks: int
    min_flt: int
    maj_flt: int
    command: str


# Field name -> (width, right-justified, cell).  Widths are top's Fieldstab: PID is as wide as
# pid_max's digits (32768 for one CPU: 5), COMMAND takes what is left of the line.
TOP_FIELDS = {
    "PID": (5, True, lambda r, c: str(r.pid)),
    "USER": (8, False, lambda r, c: "root"),
    "PR": (3, True, lambda r, c: "20"),
    "NI": (3, True, lambda r, c: "0"),
    "VIRT": (7, True, lambda r, c: _scale_mem(r.virt, 7)),
    "RES": (6, True, lambda r, c: _scale_mem(r.res, 6)),
    "SHR": (6, True, lambda r, c: _scale_mem(r.shr, 6)),
    "S": (1, True, lambda r, c: r.state),
    "%CPU": (5, True, lambda r, c: _scale_pcnt(c.cpu_pct(r), 5)),
    "%MEM": (5, True, lambda r, c: _scale_pcnt(c.mem_pct(r), 5)),
    "TIME+": (9, True, lambda r, c: _scale_tics(r.ticks)),
    "nMin": (4, True, lambda r, c: _scale_num(r.min_flt, 4)),
    "nMaj": (4, True, lambda r, c: _scale_num(r.maj_flt, 4)),
    "COMMAND": (0, False, lambda r, c: r.command),
}
DEFAULT_FIELDS = ("PID", "USER", "PR", "NI", "VIRT", "RES", "SHR", "S", "%CPU", "%MEM", "TIME+", "COMMAND")
# The memory view: top's 'f' screen with nMin/nMaj on and PR, NI, S, %CPU, TIME+ off.
MEMORY_FIELDS = ("PID", "USER", "VIRT", "RES", "SHR", "%MEM", "nMin", "nMaj", "COMMAND")
_SORT_KEYS = {"%CPU": lambda r: r.ticks, "%MEM": lambda r: r.res, "RES": lambda r: r.res, "VIRT": lambda r: r.virt,
              "SHR": lambda r: r.shr, "TIME+": lambda r: r.ticks, "nMin": lambda r: r.min_flt,
              "nMaj": lambda r: r.maj_flt, "PID": lambda r: r.pid}
SCREEN_COLUMNS = 79  # top -b without -w: 80 columns, less the last one, which top leaves empty


@dataclass(frozen=True)
class _Totals:
    mem_total_kb: int
    jiffies: int

    def mem_pct(self, r: TopRow) -> float:
        """%MEM = RES / MemTotal * 100 in C float, as top's EU_MEM."""
        return _c_float(_c_float(_c_float(r.res) * 100) / self.mem_total_kb)

    def cpu_pct(self, r: TopRow) -> float:
        """%CPU: the process's share of the ticks since boot (top's first frame over the whole run)."""
        return _c_float(r.ticks * 100.0 / self.jiffies) if self.jiffies else 0.0


def top_rows(k) -> list[TopRow]:
    """What top reads from /proc/PID/stat and statm for every live process of the model."""
    from model.mm.mm_types import MM_FILEPAGES, MM_SHMEMPAGES
    rows = []
    for task in k.tasks.values():
        mm = task.mm
        utime, stime = k.cputime.by_pid.get(task.pid, (0, 0))
        rows.append(TopRow(pid=task.pid, state="R" if task is k.current else "S", virt=mm.total_vm * 4,
                           res=mm.rss_pages * 4, shr=(mm.rss[MM_FILEPAGES] + mm.rss[MM_SHMEMPAGES]) * 4,
                           ticks=utime + stime, min_flt=task.min_flt, maj_flt=task.maj_flt, command=task.name))
    return rows


def check_top_fields(fields, sort: str) -> None:
    for name in fields:
        if name not in TOP_FIELDS:
            raise UserError(f"top field {name!r}: one of {', '.join(TOP_FIELDS)}")
    if sort not in _SORT_KEYS:
        raise UserError(f"top sort field {sort!r}: one of {', '.join(_SORT_KEYS)}")


def top_text(k, fields=MEMORY_FIELDS, sort: str = "%MEM") -> str:
    """top's task table over ``fields``, sorted by ``sort`` (highest first, ties by PID).

    Each column is justified to its width and followed by one space
    (justify_pad()); COMMAND gets what is left of the line (SCREEN_COLUMNS)
    and, when longer, is cut with a '+' (make_str()).  VIRT = total_vm, RES = VmRSS
    (anon + file + shmem), SHR = RssFile + RssShmem, all in KiB.
    """
    check_top_fields(fields, sort)
    totals = _Totals(k.managed_pages * 4, k.cputime.jiffies)
    rows = sorted(top_rows(k), key=lambda r: (-_SORT_KEYS[sort](r), r.pid))
    rest = SCREEN_COLUMNS - sum(TOP_FIELDS[name][0] + 1 for name in fields if name != "COMMAND")

    def line(cells) -> str:
        out = []
        for name, cell in zip(fields, cells):
            width, right, _ = TOP_FIELDS[name]
            if name == "COMMAND" and len(cell) > rest:
                cell = cell[:rest - 1] + "+"
            out.append(cell.rjust(width) if right else cell.ljust(width))
        return " ".join(out).rstrip() + "\n"

    lines = [line(fields)]
    lines += [line([TOP_FIELDS[name][2](r, totals) for name in fields]) for r in rows]
    return "".join(lines)


def top_batch(k, meminfo_text: str, stat_text: str, *, fields=DEFAULT_FIELDS, sort: str = "%CPU",
              scale: str = "m") -> str:
    """``top -b -n 1``: the summary (Tasks, %Cpu(s), Mem, Swap), a blank line, the task table.

    top's first line (wall clock, uptime, users, load average) is left out:
    the model has no wall clock and keeps no run-queue history.
    """
    if scale not in TOP_SCALES:
        raise UserError(f"top -E {scale!r}: one of {', '.join(TOP_SCALES)}")
    return (top_tasks_line(k) + top_cpu_line(stat_text) + top_memory_lines(meminfo_text, scale) + "\n"
            + top_text(k, fields, sort))


# --- vmstat -------------------------------------------------------------------------------------

# vmstat -S: the unit character and the divisor of unitConvert().
VMSTAT_UNITS = {"b": 1, "B": 1, "k": 1000, "K": 1024, "m": 1000000, "M": 1048576}
_VMSTAT_HEADER = "procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----"
_VMSTAT_WIDE_HEADER = ("--procs-- -----------------------memory---------------------- ---swap-- -----io---- "
                       "-system-- ----------cpu----------")
# Column widths of vmstat.c's format and wide_format; the plain format has no "gu" column in 4.0.2.
_VMSTAT_COLUMNS = (("r", 2, 4), ("b", 2, 4), ("swpd", 6, 12), ("free", 6, 12), ("buff", 6, 12), ("cache", 6, 12),
                   ("si", 4, 4), ("so", 4, 4), ("bi", 5, 5), ("bo", 5, 5), ("in", 4, 4), ("cs", 4, 4),
                   ("us", 2, 3), ("sy", 2, 3), ("id", 2, 3), ("wa", 2, 3), ("st", 2, 3), ("gu", 0, 3))


def parse_vmstat(text: str) -> dict[str, int]:
    return {name: int(value) for name, value in (line.split() for line in text.splitlines() if line.strip())}


def _unit_convert(kb: int, unit: str) -> int:
    """vmstat.c unitConvert(): ``(float)size / dataUnit * 1024`` in C float, truncated."""
    if unit not in VMSTAT_UNITS:
        raise UserError(f"vmstat -S {unit!r}: -S requires k, K, m or M (default is KiB)")
    return int(_c_float(_c_float(_c_float(kb) / VMSTAT_UNITS[unit]) * 1024))


def vmstat_text(meminfo_text: str, stat_text: str, proc_vmstat_text: str, *, active: bool = False,
                wide: bool = False, unit: str = "K", hz: int = 100, page_kb: int = 4) -> str:
    """``vmstat`` (one report, since boot), procps-ng 4.0.2 src/vmstat.c new_format().

    Memory columns are instantaneous (KiB, or -S unit); si/so/bi/bo/in/cs are
    averages per second since boot, ``(count * hz + Div/2) / Div`` with Div
    the ticks of the cpu line (us+ni+sy+irq+softirq+id+wa+st); the cpu
    columns are shares of Div.  ``active`` (-a) shows inact/active instead of
    buff/cache; ``wide`` (-w) widens the columns and adds gu.
    """
    m = mem_values(parse_meminfo(meminfo_text))
    st = parse_stat(stat_text)
    vm = parse_vmstat(proc_vmstat_text)
    user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice = (st["cpu"] + [0] * 10)[:10]
    cpu_use, cpu_sys, cpu_gue = user + nice, system + irq + softirq, guest + guest_nice
    div = cpu_use + cpu_sys + idle + iowait + steal
    if not div:
        div, idle = 1, 1
    half = div // 2
    cpu_use = max(cpu_use - cpu_gue, 0)

    def rate(n: int) -> int:
        return (n * hz + half) // div

    values = [st.get("procs_running", [0])[0], st.get("procs_blocked", [0])[0],
              _unit_convert(m.swap_used, unit), _unit_convert(m.free, unit),
              _unit_convert(m.inactive if active else m.buffers, unit),
              _unit_convert(m.active if active else m.cached, unit),
              rate(_unit_convert(vm.get("pswpin", 0) * page_kb, unit)),
              rate(_unit_convert(vm.get("pswpout", 0) * page_kb, unit)),
              rate(vm.get("pgpgin", 0)), rate(vm.get("pgpgout", 0)),
              rate(st.get("intr", [0])[0]), rate(st.get("ctxt", [0])[0])]
    values += [(100 * n + half) // div for n in (cpu_use, cpu_sys, idle, iowait, steal, cpu_gue)]
    names = [name for name, _, _ in _VMSTAT_COLUMNS]
    if active:
        names[4:6] = ["inact", "active"]
    widths = [wide_w if wide else w for _, w, wide_w in _VMSTAT_COLUMNS]
    columns = list(zip(names, widths, values))
    if not wide:
        columns = columns[:-1]
    return ((_VMSTAT_WIDE_HEADER if wide else _VMSTAT_HEADER) + "\n"
            + " ".join(f"{name:>{w}}" for name, w, _ in columns) + "\n"
            + " ".join(f"{value:>{w}}" for _, w, value in columns) + "\n")


def vmstat_stats_text(meminfo_text: str, stat_text: str, proc_vmstat_text: str, unit: str = "K") -> str:
    """``vmstat -s`` (sum_format()): memory in KiB (or -S unit), cpu ticks, paging and system counters.

    Its "swap cache" line prints Cached + SReclaimable (the library's
    MEMINFO_MEM_CACHED_ALL), not SwapCached, and "used memory" is the
    library's used (MemTotal - MemAvailable in 4.x).
    """
    m = mem_values(parse_meminfo(meminfo_text))
    st = parse_stat(stat_text)
    vm = parse_vmstat(proc_vmstat_text)
    mem = [(m.total, "total memory"), (m.used, "used memory"), (m.active, "active memory"),
           (m.inactive, "inactive memory"), (m.free, "free memory"), (m.buffers, "buffer memory"),
           (m.cached, "swap cache"), (m.swap_total, "total swap"), (m.swap_used, "used swap"),
           (m.swap_free, "free swap")]
    lines = [f"{_unit_convert(kb, unit):13d} {unit} {what}" for kb, what in mem]
    ticks = (st["cpu"] + [0] * 10)[:10]
    user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice = ticks
    for n, what in ((user, "non-nice user cpu ticks"), (nice, "nice user cpu ticks"), (system, "system cpu ticks"),
                    (idle, "idle cpu ticks"), (iowait, "IO-wait cpu ticks"), (irq, "IRQ cpu ticks"),
                    (softirq, "softirq cpu ticks"), (steal, "stolen cpu ticks"),
                    (guest, "non-nice guest cpu ticks"), (guest_nice, "nice guest cpu ticks")):
        lines.append(f"{n:13d} {what}")
    lines += [f"{vm.get('pgpgin', 0):13d} K paged in", f"{vm.get('pgpgout', 0):13d} K paged out",
              f"{vm.get('pswpin', 0):13d} pages swapped in", f"{vm.get('pswpout', 0):13d} pages swapped out",
              f"{st.get('intr', [0])[0]:13d} interrupts", f"{st.get('ctxt', [0])[0]:13d} CPU context switches",
              f"{st.get('btime', [0])[0]:13d} boot time", f"{st.get('processes', [0])[0]:13d} forks"]
    return "".join(line + "\n" for line in lines)


def vmstat_forks_text(stat_text: str) -> str:
    """``vmstat -f``: processes created since boot."""
    return f"{parse_stat(stat_text).get('processes', [0])[0]:13d} forks\n"
