"""`mmu free/top/vmstat/maps/buddyinfo/slabinfo`: the Linux tools' output for the model, checked against
procps-ng itself where it is installed (the model's /proc files bind-mounted over the real ones; free against
procps-ng 3.3.17 and 4.x is in test_oracle_procps.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from cli.main import main
from model.proc import show_mem
from model.user import procps, reports
from model.user.procps import free_text, mem_values, parse_meminfo, top_memory_lines, vmstat_text
from model.user.workload import Runner, boot_kernel, parse, run_workload
from proc_bind import namespace_problem, run_with_proc

# A meminfo with buffers, page cache, reclaimable slab and swap in use, and values just under a MiB/GiB
# boundary, so truncation and rounding show.
MEMINFO = ("MemTotal:        1048575 kB\nMemFree:          204799 kB\nMemAvailable:     614401 kB\n"
           "Buffers:           10239 kB\nCached:           307201 kB\nSwapCached:            0 kB\n"
           "Active:           400000 kB\nInactive:         300000 kB\nActive(file):    200000 kB\n"
           "Inactive(file):   100000 kB\nSwapTotal:        524284 kB\nSwapFree:         500000 kB\n"
           "Shmem:              2047 kB\nSReclaimable:      20481 kB\nCommitLimit:      1048571 kB\n"
           "Committed_AS:     1200000 kB\n")


def run_text(text: str, tmp_path, **kw):
    path = tmp_path / "t.wl"
    path.write_text(text)
    return run_workload(str(path), **kw)


@pytest.fixture(scope="module")
def machines():
    """Finished runs with page cache, swap in use, an OOM kill, COW and hugetlb."""
    return {name: run_workload(name, mem=48 << 20 if name == "swap-pressure" else None)[0]
            for name in ("swap-pressure", "oom", "file-read", "fork-cow", "hugepages")}


# --- free ---------------------------------------------------------------------------------------

def test_free_m_truncates_like_procps_scale_size_while_h_rounds_to_one_decimal():
    """free.c scale_size(): -m prints (long)(bytes / 1024^2), so 1048575 kB (1 KiB short of 1 GiB) is
    1023, -g 0; -h prints "%.1f" of a float, so the same amount reads 1.0Gi."""
    mem = free_text(MEMINFO, "m").splitlines()[1].split()
    assert mem[1] == "1023" and mem[3] == "199"  # total, free (204799 kB = 199.999 MiB)
    assert free_text(MEMINFO, "g").splitlines()[1].split()[1] == "0"
    assert free_text(MEMINFO, "h").splitlines()[1].split()[1] == "1.0Gi"
    assert free_text(MEMINFO, "m", si=True).splitlines()[1].split()[1] == "1073"  # --mega: powers of 1000


def test_the_two_used_definitions_differ_by_exactly_what_their_formulas_say():
    """procps-ng 4.0.1+ (NEWS: "Used memory is Total - Available"): used = MemTotal - MemAvailable;
    3.3.x: used = MemTotal - MemFree - Buffers - (Cached + SReclaimable).  With buffers and cache in
    use they differ by MemFree + Buffers + Cached + SReclaimable - MemAvailable."""
    m = parse_meminfo(MEMINFO)
    new, old = mem_values(m, "4"), mem_values(m, "3.3")
    assert new.used == 1048575 - 614401
    assert old.used == 1048575 - 204799 - 10239 - (307201 + 20481)
    assert new.used - old.used == 204799 + 10239 + 307201 + 20481 - 614401
    row4 = free_text(MEMINFO).splitlines()[1].split()
    row33 = free_text(MEMINFO, procps="3.3").splitlines()[1].split()
    assert (int(row4[2]), int(row33[2])) == (new.used, old.used)
    assert row4[1:2] + row4[3:] == row33[1:2] + row33[3:]  # only used differs


def test_procps_3_3_free_h_truncates_to_whole_mib_and_ignores_si_without_a_unit():
    """3.3.17 free.c scale_size(): -h scales ``(size / 1024) * base / power(base, i - 2)`` with size in KiB,
    an integer division first, so 1023 KiB reads 0.0Ki (4.x: 1.0Mi) and 1536 KiB 1.0Mi (4.x: 1.5Mi); without
    a unit it prints "%ld" of the KiB whatever --si says (4.0.1 NEWS: "free: Use --kilo when only
    specifying --si").  The layout is the same; only 4.x has -v."""
    assert [procps.scale_size(kb, "h", procps="3.3") for kb in (1023, 1536)] == ["0.0Ki", "1.0Mi"]
    assert [procps.scale_size(kb, "h", procps="4") for kb in (1023, 1536)] == ["1.0Mi", "1.5Mi"]
    assert procps.scale_size(1000, si=True, procps="3.3") == "1000"
    assert procps.scale_size(1000, si=True, procps="4") == str(1000 * 1024 // 1000)
    assert free_text(MEMINFO).splitlines()[0] == free_text(MEMINFO, procps="3.3").splitlines()[0]
    with pytest.raises(Exception, match="4.0.1"):
        free_text(MEMINFO, committed=True, procps="3.3")


def test_memavailable_of_0_falls_back_to_memfree_in_4_and_to_the_min_free_kbytes_estimate_in_3_3():
    """library/meminfo.c: "if (0 == MemAvailable) MemAvailable = MemFree"; proc/sysinfo.c 3.3.x
    estimates it from min_free_kbytes (its path for kernels before 3.14)."""
    text = MEMINFO.replace("614401", "0")
    assert mem_values(parse_meminfo(text), "4").available == 204799
    low = 1000 * 5 // 4
    assert mem_values(parse_meminfo(text), "3.3", min_free_kbytes=1000).available == \
        204799 - low + 300000 - low + 20481 - min(20481 // 2, low)


def _root_tools(*tools: str) -> str | None:
    """Why the real procps-ng 4 tools cannot run here under a private mount namespace, or None."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
        version = subprocess.run([tool, "-V"], capture_output=True, text=True).stdout
        if "procps-ng 4." not in version:
            return f"{tool} is not procps-ng 4.x: {version.strip()!r}"
    return namespace_problem()


# --- top ----------------------------------------------------------------------------------------

def test_top_summary_lines_have_procps_4_layout():
    """do_memory(): "%s %s:~3 %9.9s~2total,..." with MiB as "%#.1f " of a float; the Mem line ends with
    five spaces after buff/cache, the Swap line with "avail Mem " (WORD_abv_mem_txt is "Mem ")."""
    mem, swap = top_memory_lines(MEMINFO).splitlines()
    assert mem == "MiB Mem :   1024.0 total,    200.0 free,    424.0 used,    330.0 buff/cache     "
    assert swap == "MiB Swap:    512.0 total,    488.3 free,     23.7 used.    600.0 avail Mem "
    assert top_memory_lines(MEMINFO, "k").splitlines()[0].startswith("KiB Mem :  1048575 total,")


def test_top_mem_percent_is_res_over_memtotal_times_100(machines):
    """top's %MEM (EU_MEM) = RES * 100 / MemTotal, in C float; RES = VmRSS = anon + file + shmem pages."""
    k = machines["fork-cow"]
    text = procps.top_text(k, procps.DEFAULT_FIELDS)
    header, *rows = text.splitlines()
    assert header == "  PID USER      PR  NI    VIRT    RES    SHR S  %CPU  %MEM     TIME+ COMMAND"
    mem_total = parse_meminfo(show_mem.meminfo(k))["MemTotal"]
    for row in rows:
        pid, user, pr, ni, virt, res, shr, state, cpu, pmem, time, command = row.split()
        task = k.tasks[int(pid)]
        assert int(res) == task.mm.rss_pages * 4 and int(virt) == task.mm.total_vm * 4
        assert float(pmem) == pytest.approx(int(res) * 100 / mem_total, abs=0.05)
        assert (user, pr, ni, command) == ("root", "20", "0", task.name)


def test_top_cpu_and_time_come_from_the_model_clock_one_tick_per_operation(tmp_path):
    """The model's CPU clock charges each workload operation one USER_HZ tick to its process: system
    time when it entered the kernel (a system call or a page fault), user time otherwise."""
    k, _ = run_text("boot mem=64M\nspawn a\nmalloc p 4K\nmalloc q 8\ntouch p\ntouch p\nspawn b\n", tmp_path)
    # a: spawn (sys), malloc p (brk: sys), malloc q (from the top chunk: user), touch p (fault: sys),
    # touch p again (no fault: user); b: spawn (sys)
    assert (k.cputime.user, k.cputime.system) == (2, 4)
    assert k.cputime.by_pid == {100: [2, 3], 101: [0, 1]}
    stat = procps.parse_stat(show_mem.proc_stat(k))
    assert stat["cpu"][:4] == [2, 0, 4, 0] and stat["processes"] == [2]
    assert procps.top_cpu_line(show_mem.proc_stat(k)) == \
        "%Cpu(s): 33.3 us, 66.7 sy,  0.0 ni,  0.0 id,  0.0 wa,  0.0 hi,  0.0 si,  0.0 st \n"
    rows = procps.top_text(k, procps.DEFAULT_FIELDS, sort="%CPU").splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["100", "101"]
    assert rows[0].split()[-2:] == ["0:00.05", "a"] and rows[0].split()[8] == "83.3"


@pytest.mark.skipif(_root_tools("top") is not None, reason=str(_root_tools("top")))
def test_real_top_prints_the_same_memory_summary_and_mem_percent_rule(tmp_path, machines):
    """Real top over the model's /proc/meminfo: its "MiB Mem"/"MiB Swap" lines are ours byte for byte,
    and the %MEM it prints follows RES * 100 / (the model's) MemTotal.  Only a process this test starts is
    listed (-p), so what else runs on the machine cannot change the table."""
    sleeper = subprocess.Popen([shutil.which("sleep"), "30"])
    try:
        outputs = [(k, run_with_proc(tmp_path, {"meminfo": show_mem.meminfo(k)},
                                     [f"top -b -n 1 -w 200 -p {sleeper.pid}"])[0]) for k in machines.values()]
    finally:
        sleeper.kill()
        sleeper.wait()
    for k, out in outputs:
        meminfo = show_mem.meminfo(k)
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("MiB Mem"))
        assert "\n".join(lines[start:start + 2]) + "\n" == top_memory_lines(meminfo)
        mem_total = parse_meminfo(meminfo)["MemTotal"]
        table = lines[lines.index(next(x for x in lines if x.lstrip().startswith("PID"))) + 1:]
        assert [row.split()[0] for row in table if row.strip()] == [str(sleeper.pid)]
        for row in table:
            cells = row.split()
            if not re.fullmatch(r"\d+", cells[5]):
                continue  # RES scaled to m/g: too coarse to recompute %MEM
            assert cells[9] == procps._scale_pcnt(procps._c_float(procps._c_float(int(cells[5]) * 100) /
                                                                  mem_total), 5)


def test_top_mem_percent_that_does_not_fit_its_column_follows_top_c_scale_pcnt():
    """top.c scale_pcnt(): "%#.1f" if it fits the width, else "%*.0f", else "?" (procps-ng 4.0.2)."""
    assert procps._scale_pcnt(12.34, 5) == "12.3"
    assert procps._scale_pcnt(1234.4, 5) == " 1234"  # "1234.4" is 6 wide
    assert procps._scale_pcnt(123456.0, 5) == "?"


@pytest.mark.skipif(_root_tools("top") is not None, reason=str(_root_tools("top")))
def test_real_top_cuts_a_long_command_to_the_same_width(tmp_path):
    """top -b without -w fills 79 columns and ends a COMMAND that does not fit with '+'."""
    name = "averyveryverylongname"
    program = tmp_path / name
    shutil.copy(shutil.which("sleep"), program)
    sleeper = subprocess.Popen([str(program), "30"])
    try:
        real = subprocess.run(["top", "-b", "-n", "1", "-p", str(sleeper.pid)], capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, check=True).stdout
    finally:
        sleeper.kill()
        sleeper.wait()
    row = next(line for line in real.splitlines() if line.lstrip().startswith(str(sleeper.pid)))
    k, _ = run_text(f"boot mem=32M\nspawn {name}\n", tmp_path)
    ours = procps.top_text(k, procps.DEFAULT_FIELDS).splitlines()[1]
    assert row.split()[-1] == ours.split()[-1] == "averyvery+" and len(row) == len(ours) == 79


# --- vmstat -------------------------------------------------------------------------------------

def proc_files(k) -> dict[str, str]:
    return {"meminfo": show_mem.meminfo(k), "stat": show_mem.proc_stat(k), "vmstat": show_mem.vmstat(k)}


def test_vmstat_first_line_averages_counters_over_the_ticks_since_boot(machines):
    """vmstat.c new_format(): si = (pswpin * 4 KiB * HZ + Div/2) / Div with Div the cpu ticks of
    /proc/stat, so a run of N ticks that swapped P pages in shows P*4*100/N KiB/s."""
    k = machines["swap-pressure"]
    files = proc_files(k)
    header, names, values = vmstat_text(*files.values()).splitlines()
    assert header == "procs -----------memory---------- ---swap-- -----io---- -system-- ------cpu-----"
    assert names.split() == ["r", "b", "swpd", "free", "buff", "cache", "si", "so", "bi", "bo", "in", "cs",
                             "us", "sy", "id", "wa", "st"]
    v = dict(zip(names.split(), map(int, values.split())))
    ticks = k.cputime.jiffies
    assert v["si"] == (k.vmstat["pswpin"] * 4 * 100 + ticks // 2) // ticks
    assert v["swpd"] == (k.swap.total_pages - k.swap.free_pages) * 4 and v["in"] == 100
    assert v["us"] + v["sy"] == 100 and v["id"] == 0


@pytest.mark.skipif(_root_tools("vmstat") is not None, reason=str(_root_tools("vmstat")))
@pytest.mark.parametrize("option", ["", "-w", "-a", "-S M", "-w -S k", "-s", "-f"])
def test_real_vmstat_prints_the_same_from_the_models_meminfo_stat_and_vmstat(tmp_path, machines, option):
    """procps-ng vmstat reads /proc/meminfo, /proc/stat and /proc/vmstat: bind-mount the model's."""
    unit = option.split()[-1] if "-S" in option else "K"
    for k in machines.values():
        files = proc_files(k)
        [real] = run_with_proc(tmp_path, files, [f"vmstat {option}"])
        if option == "-s":
            mine = procps.vmstat_stats_text(*files.values())
        elif option == "-f":
            mine = procps.vmstat_forks_text(files["stat"])
        else:
            mine = vmstat_text(*files.values(), wide="-w" in option, active="-a" in option, unit=unit)
        assert real == mine


# --- watch --------------------------------------------------------------------------------------

def watch_rows(tmp_path, text: str, **kw) -> list[dict]:
    """FreeWatch's rows as {line, op, total, used, ..., events}: fixed columns, 28 for the operation."""
    out = []
    run_text(text, tmp_path, listeners=[lambda k: reports.FreeWatch(k, out.append, **kw)])
    rows = []
    for line in "".join(out).splitlines()[1:]:
        values = line[35:35 + 11 * 7].split()
        rows.append(dict(zip(("total", "used", "free", "shared", "buff/cache", "available", "swap used"),
                             values), line=int(line[:5]), op=line[7:35].strip(), events=line[35 + 77:].strip()))
    return rows


def test_watch_shows_used_growing_at_first_touch_not_at_malloc(tmp_path):
    """malloc only reserves address space (brk below M_MMAP_THRESHOLD, mmap at or above it); the pages
    come at the first write, one demand-zero fault each, and only then does used grow."""
    rows = watch_rows(tmp_path, "boot mem=64M\nspawn app\nmalloc small 64K\nmalloc big 1M\ntouch big\n"
                                "touch small\n")
    assert [r["line"] for r in rows] == [2, 3, 4, 5, 6]
    used = [int(r["used"]) for r in rows]
    assert rows[1]["events"] == "brk +196K" and rows[2]["events"] == "mmap 1028K"
    assert used[1] == used[0] and used[2] == used[0]  # the mallocs
    assert used[3] - used[2] >= 1024 and rows[3]["events"] == "257 faults"  # 1 MiB from ptr + 16: 257 pages
    assert used[4] - used[3] >= 64


def test_watch_rows_show_swap_and_the_oom_kill_as_they_happen(tmp_path):
    """Touching more than RAM swaps out until swap is full too; then the OOM killer takes the hog, and
    its RAM and swap slots are freed with it (exit_mmap)."""
    rows = watch_rows(tmp_path, "boot mem=32M swap=8M\nspawn a\nspawn hog\nmalloc m 20M\ntouch m\n"
                                "malloc n 20M\ntouch n\n", unit="m")
    assert rows[-1]["op"] == "touch n" and rows[-1]["swap used"] == "0"
    assert "swapped out" in rows[-1]["events"] and "OOM killer: killed hog[101]" in rows[-1]["events"]


# --- the commands -------------------------------------------------------------------------------

def test_mmu_free_prints_exactly_what_run_report_prints(capsys):
    """One renderer per view: `mmu free` and `mmu run --report free` print the same text."""
    assert main(["free", "oom"]) == 0
    alone = capsys.readouterr()
    assert alone.err == "seed 0\n"
    assert main(["run", "oom", "--report", "free,top"]) == 0
    report = capsys.readouterr().out
    assert f"== free ==\n{alone.out}" in report
    assert main(["top", "oom"]) == 0
    assert f"== top ==\n{capsys.readouterr().out}" in report


def test_mmu_views_print_the_proc_files(capsys):
    assert main(["maps", "fork-cow", "parent"]) == 0
    assert re.search(r"^00400000-\S+ r-xp 00000000 08:01 \d+ +/usr/bin/parent$", capsys.readouterr().out, re.M)
    assert main(["buddyinfo", "oom"]) == 0
    assert capsys.readouterr().out.startswith("Node 0, zone   Normal ")
    assert main(["slabinfo", "oom"]) == 0
    assert capsys.readouterr().out.startswith("slabinfo - version: 2.1\n")
    assert main(["vmstat", "oom", "-s"]) == 0
    assert "forks" in capsys.readouterr().out


def test_mmu_free_watch_prints_a_row_per_operation(capsys):
    assert main(["free", "large-malloc", "--watch", "-m"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["line", "operation", "total"]
    assert [line.split()[0] for line in lines[1:]] == [str(n) for n in range(3, 13)]


@pytest.mark.parametrize("argv,message", [
    (["free", "no-such-workload"], "workload 'no-such-workload'"),
    (["maps", "oom", "999"], "no live process '999'"),
    (["maps", "oom", "hog"], "no live process 'hog'"),  # the OOM killer took it
    (["vmstat", "oom", "-S", "x"], "-S requires k, K, m or M"),
    (["top", "oom", "-o", "COLOUR"], "top sort field 'COLOUR'"),
    (["top", "oom", "--fields", "PID,NOPE"], "top field 'NOPE'"),
    (["free", "oom", "--procps", "3.3", "-v"], "4.0.1"),
    (["free", "oom", "--mem", "lots"], "--mem 'lots'"),
])
def test_cli_user_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["free", "oom", "-m", "-g"], ["free"], ["free", "oom", "--procps", "5"],
                                  ["maps", "oom"]])
def test_cli_usage_errors_exit_2_without_traceback(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_the_proc_stat_of_the_model_parses_like_the_kernels(machines):
    """fs/proc/stat.c: "cpu  " then ten tick counts, cpu0, intr, ctxt, btime, processes, procs_running,
    procs_blocked, softirq."""
    k = machines["fork-cow"]
    names = [line.split()[0] for line in show_mem.proc_stat(k).splitlines()]
    assert names == ["cpu", "cpu0", "intr", "ctxt", "btime", "processes", "procs_running", "procs_blocked",
                     "softirq"]
    assert show_mem.proc_stat(k).startswith(f"cpu  {k.cputime.user} 0 {k.cputime.system} 0 0 0 0 0 0 0\n")
    assert procps.parse_stat(show_mem.proc_stat(k))["processes"] == [k.total_forks] == [2]


def test_workload_report_lines_use_the_same_views(tmp_path):
    """A workload's `report stat` line goes through reports.view too."""
    out = []
    boot, ops = parse("boot mem=32M\nspawn a\nreport stat\n", "t.wl")
    Runner(boot_kernel(boot, seed=0), out.append).run(ops)
    assert "== /proc/stat ==\ncpu  0 0 1 0" in "".join(out)


def test_every_view_help_prints_without_a_traceback(capsys):
    """argparse %-formats help text: a literal % in a help string (top's %CPU, %MEM) must be escaped."""
    for view in ("free", "top", "vmstat", "maps", "buddyinfo", "slabinfo"):
        with pytest.raises(SystemExit) as e:
            main([view, "--help"])
        assert e.value.code == 0
        assert "%CPU" in capsys.readouterr().out or view != "top"
