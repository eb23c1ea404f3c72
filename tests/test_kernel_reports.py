"""/proc/meminfo, free, vmstat, buddyinfo and top as Linux and procps-ng print them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from model.mm import fork
from model.mm.filemap import file_read
from model.mm.kernel import Kernel
from model.proc import show_mem
from model.user.malloc import Malloc
from model.user.procps import free_text, parse_meminfo, scale_size
from model.user.workload import run_workload


def busy_kernel() -> Kernel:
    k, _ = run_workload("swap-pressure", seed=1, mem=48 << 20)
    return k


@pytest.fixture(scope="module")
def kernels():
    k = Kernel(64 << 20, 16 << 20)
    t = fork.spawn(k, "app")
    t.heap = Malloc(k, t)
    t.heap.touch(t.heap.malloc(3 << 20), 3 << 20)
    file_read(k, t, k.disk.create("/data/x", 5 << 20), 0, 5 << 20)
    return [k, busy_kernel(), Kernel(16 << 20)]


def test_meminfo_lines_use_show_val_kb_format(kernels):
    text = show_mem.meminfo(kernels[0])
    for line in text.splitlines():
        if line.startswith("HugePages_"):
            assert re.fullmatch(r"HugePages_\w+:\s+\d+", line) and len(line) == 24
        else:
            assert re.fullmatch(r"[\w()]+:\s+\d+ kB", line), line
            wide = len(line.split()[1]) > 8 or line.startswith("HardwareCorrupted")
            assert len(line) == 27 or wide  # "%8lu": wider values overflow (VmallocTotal); HardwareCorrupted is "%5lu"
    first = [line.split(":")[0] for line in text.splitlines()[:6]]
    assert first == ["MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached"]


def test_meminfo_has_every_field_procps_free_reads(kernels):
    m = parse_meminfo(show_mem.meminfo(kernels[0]))
    for field in ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Active", "Inactive",
                  "Active(anon)", "Inactive(anon)", "Active(file)", "Inactive(file)", "Shmem", "SReclaimable",
                  "SUnreclaim", "Slab", "PageTables", "SwapTotal", "SwapFree"):
        assert field in m
    assert m["Slab"] == m["SReclaimable"] + m["SUnreclaim"]
    assert m["Active"] == m["Active(anon)"] + m["Active(file)"]
    assert m["Cached"] >= 5 << 10 and m["Buffers"] >= 4 and m["SwapTotal"] == (16 << 10) - 4


def test_memavailable_follows_si_mem_available(kernels):
    for k in kernels:
        m = parse_meminfo(show_mem.meminfo(k))
        wm = k.buddy.watermarks
        pagecache = (m["Active(file)"] + m["Inactive(file)"]) // 4
        sreclaimable = m["SReclaimable"] // 4
        expected = m["MemFree"] // 4 - wm.high + pagecache - min(pagecache // 2, wm.low) \
            + sreclaimable - min(sreclaimable // 2, wm.low)
        assert m["MemAvailable"] == max(expected, 0) * 4


def test_meminfo_accounts_for_every_page_of_memtotal(kernels):
    for k in kernels:
        m = parse_meminfo(show_mem.meminfo(k))
        parts = m["MemFree"] + m["Buffers"] + m["Cached"] + m["AnonPages"] + m["Slab"] + m["PageTables"] + \
            m["KernelStack"] + m["Hugetlb"]
        assert parts == m["MemTotal"]


def test_free_columns_follow_procps_ng_4():
    meminfo = ("MemTotal:        8000000 kB\nMemFree:         1000000 kB\nMemAvailable:    5000000 kB\n"
               "Buffers:           10000 kB\nCached:          2000000 kB\nSwapTotal:       1048572 kB\n"
               "SwapFree:         1000000 kB\nShmem:             12345 kB\nSReclaimable:      50000 kB\n")
    assert free_text(meminfo) == (
        "               total        used        free      shared  buff/cache   available\n"
        "Mem:         8000000     3000000     1000000       12345     2060000     5000000\n"
        "Swap:        1048572       48572     1000000\n")
    assert free_text(meminfo, "h").splitlines()[1] == \
        "Mem:           7.6Gi       2.9Gi       976Mi        12Mi       2.0Gi       4.8Gi"
    assert scale_size(0, "h") == "0B" and scale_size(1, "h") == "1.0Ki" and scale_size(1023, "m") == "0"


def _real_free_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare -m and a bind mount"
    for tool in ("free", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    version = subprocess.run(["free", "--version"], capture_output=True, text=True).stdout
    if "procps-ng 4." not in version:
        return f"free is not procps-ng 4.x: {version.strip()!r}"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        return "unshare -m is not permitted here"
    return None


@pytest.mark.skipif(_real_free_available() is not None, reason=str(_real_free_available()))
@pytest.mark.parametrize("option", ["", "-m", "-h", "-w"])
def test_real_procps_free_on_the_models_meminfo_prints_the_same_bytes(tmp_path, kernels, option):
    """Bind-mount the model's meminfo over /proc/meminfo in a private mount namespace and run the real free."""
    unit = {"": "k", "-m": "m", "-h": "h", "-w": "k"}[option]
    for i, k in enumerate(kernels):
        path = tmp_path / f"meminfo{i}"
        text = show_mem.meminfo(k)
        path.write_text(text)
        cmd = f"mount --bind {path} /proc/meminfo && exec free {option}"
        real = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, check=True)
        assert real.stdout == free_text(text, unit, wide=option == "-w")


def test_vmstat_uses_proc_vmstat_names(kernels):
    text = show_mem.vmstat(kernels[1])
    names = dict(line.split() for line in text.splitlines())
    for name in ("pgfault", "pgmajfault", "pswpin", "pswpout", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd",
                 "pgsteal_direct", "oom_kill", "nr_free_pages", "allocstall_normal"):
        assert name in names
    assert int(names["pswpout"]) > 0 and int(names["pgscan_kswapd"]) > 0


def test_buddyinfo_and_slabinfo_show_the_model_allocators(kernels):
    k = kernels[0]
    assert show_mem.buddyinfo(k).startswith("Node 0, zone   Normal ")
    slab = k.slab.slabinfo()
    for cache in ("task_struct", "mm_struct", "vm_area_struct", "dentry"):
        assert re.search(rf"^{cache}\s+\d+", slab, re.M)


def test_top_lists_virt_res_shr_and_mem_percent(kernels):
    from model.user.procps import top_text
    lines = top_text(kernels[0]).splitlines()
    assert lines[0].split()[:6] == ["PID", "USER", "VIRT", "RES", "SHR", "%MEM"]
    pid, user, virt, res, shr, pmem = lines[1].split()[:6]
    assert user == "root" and int(res) >= 3 << 10 and float(pmem) > 4.0
