"""The model against the real Linux kernel and glibc of this machine, operation by operation.

Each workload is translated to one C program (tests/linux_oracle.py), run on
this machine, and run on the model; after every operation both report their
fault counters, VmSize/RssAnon/RssFile/RssShmem, the heap's size, whether a
malloc landed in the heap, and the page-cache pages of each file.  The change
each operation made must be the same on both, exactly: the worker faults in
its own start-up mappings first, so no libc start-up fault is counted (see
tests/linux_oracle.py).  A workload the machine cannot show (swap, hugetlb
pools, memory pressure on a 64 MiB machine, deliberate SIGSEGVs) is skipped
with the reason, alone.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from linux_oracle import FIELDS, flatten, run_model, run_real, translate, unsupported
from model.mm.invariants import check
from model.user.workload import load, parse

# Workloads that need what the test machine does not have, or a machine as small as theirs.
MACHINE_SPECIFIC = {
    "oom": "it needs a 64 MiB machine without swap to reach the OOM killer",
    "swap-pressure": "it needs a 64 MiB machine with 64 MiB of swap to reclaim",
}
NAMED = ["small-malloc", "large-malloc", "fork-cow", "file-mmap", "file-read", "shared-memory",
         "hugepages", "hugepages-1g", "segv", "stack-growth", *MACHINE_SPECIFIC]


def _read_ahead_kb(path: Path) -> int:
    """read_ahead_kb of the block device holding ``path`` (the page cache reads ahead by it)."""
    dev = path.stat().st_dev
    sysfs = Path(f"/sys/dev/block/{dev >> 8}:{dev & 0xff}")
    for queue in (sysfs / "queue", sysfs / ".." / "queue", sysfs / "bdi"):
        f = queue / "read_ahead_kb"
        if f.exists():
            return int(f.read_text())
    pytest.skip(f"no read_ahead_kb in sysfs for the device of {path}")


@pytest.fixture(scope="session")
def machine(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (CI installs it): the oracle programs are compiled in the test session")
    if not Path("/proc/self/status").exists():
        pytest.skip("not Linux: no /proc/self/status")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" in thp.read_text():
        pytest.skip("THP is 'always' here: anonymous faults map 2 MiB pages, which the model does not do")
    root = tmp_path_factory.mktemp("oracle")
    return root, _read_ahead_kb(root)


def _compile(root: Path, name: str, source: str) -> Path:
    src = root / f"{name}.c"
    src.write_text(source)
    binary = root / name
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(src)], check=True)
    return binary


def compare(text: str, machine, name: str) -> tuple[list[str], object]:
    """Run ``text`` on both; the list of differences, one line per operation and number, and the model kernel."""
    root, ra_kb = machine
    boot, ops = parse(text, f"{name}.wl")
    steps = flatten(ops)
    why = unsupported(steps, boot)
    if why:
        pytest.skip(why)
    work = root / name
    work.mkdir()
    files = {s.args[0]: str(work / s.args[0].strip("/").replace("/", "_")) for s in steps if s.op.name == "file"}
    model, k, addrs = run_model(text, steps, read_ahead_kb=ra_kb)
    binary = _compile(work, "worker", translate(steps, files, str(work), addrs))
    real = run_real(steps, binary, files, str(work))
    diffs = []
    last_real, last_model = {}, {}
    for step, r, m in zip(steps, real, model):
        if r is None or m is None:
            continue
        where = f"{step.op.where} {step.op.name} {' '.join(step.args)}"
        if step.op.name == "fork":
            child = step.args[0]
            # The child starts from the parent's numbers: what fork copied (its fault counters start at 0).
            # Not RssFile: the child's first instructions fault in the file pages of its own text, which
            # fork did not copy, before it can report; the later faults on workload files show it.
            diffs += _diff(where + " [child]", last_real[step.proc], r["child"], last_model[step.proc], m["child"],
                           ("VmSize", "RssAnon", "RssShmem", "heap"))
            last_real[child], last_model[child] = r["child"], m["child"]
            r, m = r["parent"] | {"cache": r["cache"]}, m["parent"] | {"cache": m["cache"]}
        if step.op.name != "spawn":
            # a fork's own faults are the worker re-faulting its start-up mappings (now copy-on-write)
            fields = FIELDS[2:] if step.op.name == "fork" else FIELDS
            diffs += _diff(where, last_real[step.proc], r, last_model[step.proc], m, fields)
            for path in r["cache"]:
                if r["cache"][path] != m["cache"].get(path):
                    diffs.append(f"{where}: page cache of {path}: real {r['cache'][path]} pages, "
                                 f"model {m['cache'].get(path)}")
        last_real[step.proc], last_model[step.proc] = r, m
    return diffs, k


def _diff(where, r0, r1, m0, m1, fields) -> list[str]:
    """The numbers that differ.  One tolerance: a major fault may be followed by up to one more minor
    fault on Linux than on the model.  filemap_fault() drops the mmap lock for the disk read and the
    fault is retried; the retry's fault-around maps what readahead has finished reading by then, and a
    page still in flight takes a fault of its own (seen with a busy disk).  The model's reads are
    synchronous, so its retry maps the whole 64 KiB window."""
    out = []
    for f in fields:
        if f == "inheap":
            real, model = r1[f], m1[f]
        else:
            real, model = r1[f] - r0[f], m1[f] - m0[f]
        if f == "minflt" and model <= real <= model + r1["majflt"] - r0["majflt"]:
            continue
        if real != model:
            out.append(f"{where}: {f} real {real:+d}, model {model:+d}")
    return out


@pytest.mark.parametrize("name", NAMED)
def test_named_workload_matches_linux(machine, name):
    if name in MACHINE_SPECIFIC:
        pytest.skip(f"{name}: {MACHINE_SPECIFIC[name]}")
    text, _ = load(name)
    diffs, k = compare(text, machine, name)
    check(k)
    assert not diffs, "\n".join(diffs)


# --- generated sequences around glibc's thresholds ----------------------------------------------

KIB = 1 << 10
# Sizes at and around M_MMAP_THRESHOLD (128 KiB), the tcache and fastbin limits, the trim threshold
# and the 64 KiB FASTBIN_CONSOLIDATION_THRESHOLD, and the dynamic threshold's 32 MiB ceiling.
SIZES = [24, 100, 1000, 1032, 1033, 4000, 60 * KIB, 64 * KIB, 100 * KIB, 128 * KIB - 24, 128 * KIB - 8, 128 * KIB,
         128 * KIB + 8, 200 * KIB, 256 * KIB, 1 << 20, 4 << 20, (32 << 20) - 16, 32 << 20, 40 << 20]


def generated(seed: int, n: int = 40) -> str:
    """A random malloc/calloc/realloc/free/touch sequence of one process."""
    rng = random.Random(seed)
    lines = ["boot mem=256M", "spawn gen"]
    live = []
    for i in range(n):
        r = rng.random()
        if live and r < 0.35:
            var = live.pop(rng.randrange(len(live)))
            lines.append(f"free {var}")
        elif live and r < 0.5:
            var = rng.choice(live)
            lines.append(f"realloc {var} {rng.choice(SIZES)}")
        elif live and r < 0.65:
            lines.append(f"touch {rng.choice(live)}")
        else:
            var = f"v{i}"
            size = rng.choice(SIZES)
            lines.append(f"calloc {var} 1 {size}" if rng.random() < 0.2 else f"malloc {var} {size}")
            live.append(var)
    return "\n".join(lines) + "\n"


THRESHOLD_CASES = {
    "first-malloc-128k-from-brk": "spawn t\nmalloc a 128K\ntouch a\n",
    "threshold-after-tcache": "spawn t\nmalloc a 16\nmalloc b 128K\nmalloc c 132K\n",
    "dynamic-threshold": "spawn t\nmalloc a 1M\nfree a\nmalloc b 512K\nmalloc c 2M\nfree c\nmalloc d 1536K\n",
    "dynamic-threshold-ceiling": "spawn t\nmalloc a 32M\nfree a\nmalloc b 16M\nmalloc c 33M\nfree c\nmalloc d 20M\n",
    "dynamic-threshold-just-below-max": "spawn t\nmalloc a 32767K\nfree a\nmalloc b 30M\n",
    "trim-threshold": "spawn t\nmalloc a 100K\nmalloc b 100K\ntouch a\ntouch b\nfree b\nfree a\n",
    "tcache-keeps-small-frees": "spawn t\nrepeat 16\nmalloc p$i 1K\ntouch p$i\nend\nrepeat 16\nfree p$i\nend\n",
    "top-reuse-large": "spawn t\nmalloc a 300K\nmalloc g 16\nfree a\nmalloc b 200K\nmalloc c 64K\n",
    "realloc-mmapped-mremap": "spawn t\nmalloc a 256K\ntouch a\nrealloc a 1M\ntouch a\nrealloc a 300K\nrealloc a 100\n",
    "realloc-heap-grow": "spawn t\nmalloc a 1000\ntouch a\nrealloc a 100K\ntouch a\nrealloc a 500\n",
    "calloc-fresh": "spawn t\ncalloc a 1 100K\ncalloc b 1 1M\ncalloc c 4 4000\n",
    "brk-foreign": "spawn t\nmalloc a 1K\nbrk +64K\nmalloc b 200K\nfree b\nbrk -64K\n",
}
# Page faults on files and shared memory: fault-around, readahead, and what fork leaves to the child.
FAULT_CASES = {
    "cold-file-2m": "file /f 2M\nspawn t\nmmap m 2M file=/f prot=r\nload m\nmunmap m\nmmap n 2M file=/f prot=r\nload n\n",
    "cold-file-unaligned": "file /f 300K\nspawn t\nmmap m 300K file=/f fixed=0x10003000\nload m 4K 100K\nload m\n"
                           "touch m 0 64K\n",
    "file-offset": "file /f 4M\nspawn t\nmmap m 1M file=/f offset=1M\nload m 512K 4K\nload m\n",
    "shared-file-write": "file /f 1M\nspawn t\nmmap m 1M file=/f shared\ntouch m 0 128K\nload m\n",
    "fork-file-and-shmem": "file /f 1M\nspawn p\nmmap f 1M file=/f\nload f\nmmap s 1M shared\ntouch s\n"
                           "mmap a 1M\nload a\nfork c\nuse c\nload f\nload s\nload a\ntouch a 0 8K\n",
    "fork-private-cow": "file /f 256K\nspawn p\nmmap f 256K file=/f\ntouch f 0 16K\nload f\nfork c\nuse c\nload f\n"
                        "use p\ntouch f\n",
    "read-then-map": "file /f 1M\nspawn t\nread /f 0 1M\nmmap m 1M file=/f prot=r\nload m\n",
    "read-ahead-of-read": "file /f 8M\nspawn t\nread /f 0 1M\nread /f 1M 1M\nread /f 0 8M\n",
}


@pytest.mark.parametrize("case", THRESHOLD_CASES)
def test_threshold_sequence_matches_linux(machine, case):
    diffs, k = compare("boot mem=256M\n" + THRESHOLD_CASES[case], machine, case)
    check(k)
    assert not diffs, "\n".join(diffs)


@pytest.mark.parametrize("case", FAULT_CASES)
def test_fault_sequence_matches_linux(machine, case):
    diffs, k = compare("boot mem=256M\n" + FAULT_CASES[case], machine, case)
    check(k)
    assert not diffs, "\n".join(diffs)


@pytest.mark.parametrize("seed", range(6))
def test_generated_sequence_matches_linux(machine, seed):
    print(f"seed {seed}: replay with generated({seed})")
    diffs, k = compare(generated(seed), machine, f"gen{seed}")
    check(k)
    assert not diffs, f"seed {seed}:\n" + "\n".join(diffs)
