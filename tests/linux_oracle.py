"""The real Linux kernel and glibc as an oracle: one workload, run both on this machine and on the model.

``translate(ops)`` turns a parsed workload into one C program (a switch over
its flattened operations: repeats unrolled, ``$i`` filled in).  The test
session compiles it with gcc; ``run_real`` drives one worker process per
``spawn`` (a ``fork`` op makes the worker fork, and the child talks over two
FIFOs), sending the index of each operation to the process it belongs to and
reading back, after it ran, what the kernel and glibc report:

    minflt majflt (getrusage)  VmSize (/proc/self/status)  RssAnon RssFile RssShmem (kB, summed from
    /proc/self/smaps: status's own Rss counters are per-CPU counters that lag by up to a batch)
    heap (sbrk(0) - start_brk from /proc/self/stat)  inheap (the pointer a malloc returned lies in [start_brk, sbrk(0)))

plus, measured here, the page-cache pages of every workload file (mincore on a
throw-away mapping).  ``run_model`` runs the same flattened operations on the
model and reads the same numbers.  Tests compare the change each operation made.

Fault tolerance is zero, and this is how: before its first report a worker
faults in every mapping it has (MADV_POPULATE_WRITE on private writable ones,
MADV_POPULATE_READ on the others: libc and ld.so text and data, its own bss
buffer, the stack below a 256 KiB probe), so the libc code, data and stack
pages a later operation uses are already mapped and only the operation's own
faults are counted.  After a fork both processes do it again (every page of
those start-up mappings is copy-on-write then) before they report.  What the
workload's memory shows is then exactly the kernel's and glibc's doing:
glibc's chunk-header and tcache writes included.
"""

from __future__ import annotations

import ctypes
import mmap as pymmap
import os
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from model.user import workload
from model.user.workload import Runner, boot_kernel, parse, parse_size

FIELDS = ("minflt", "majflt", "VmSize", "RssAnon", "RssFile", "RssShmem", "heap", "inheap")
IOBUF = 16 << 20  # the static buffer read(2) and write(2) use: read and written whole, as the model's ops
# Operations the C program cannot express, and why (the test skips a workload that uses one).
UNSUPPORTED = {
    "exec": "an instruction fetch from data pages is a SIGSEGV the worker would not survive",
    "stack": "the worker's stack holds its own frames; its top is not the model's",
    "report": None, "sync": None, "use": None, "file": None,  # not process operations: nothing to translate
}


@dataclass
class Step:
    """One operation of the flattened workload: the op, its arguments with $i filled in, its process."""

    index: int
    op: workload.Op
    args: list[str]
    env: dict | None
    proc: str | None  # name of the process it runs in (None: a line of the script itself)


def flatten(ops: list[workload.Op]) -> list[Step]:
    """Repeats unrolled, each operation given the process it belongs to (what ``use``/``spawn`` make current)."""
    out: list[Step] = []
    current = [None]

    def walk(ops, env):
        for op in ops:
            if op.name == "repeat":
                for i in range(parse_size(op.args[0])):
                    walk(op.body, {"i": i})
                continue
            args = [a.replace("$i", str(env["i"])) if env else a for a in op.args]
            if op.name in ("spawn", "use"):
                current[0] = args[0]
            proc = None if op.name in ("use", "file", "report", "sync") else \
                (args[0] if op.name == "exit" and args else current[0])
            out.append(Step(len(out), op, args, env, proc))

    walk(ops, None)
    return out


def unsupported(steps: list[Step], boot: dict) -> str | None:
    """Why this workload cannot run on the real machine as the model runs it, or None."""
    for key in ("swap", "hugepages", "hugepages_1g"):
        if parse_size(boot.get(key, "0")):
            return f"boot {key}={boot[key]}: the test machine's swap and hugetlb pools are not the workload's"
    for s in steps:
        why = UNSUPPORTED.get(s.op.name)
        if why:
            return f"{s.op.where}: {s.op.name}: {why}"
        if s.op.name == "mmap" and any(f.startswith("huge") for f in s.args[2:]):
            return f"{s.op.where}: mmap {' '.join(s.args[2:])}: the machine's hugetlb pool is not the workload's"
        if s.op.name in ("touch", "load") and re.fullmatch(r"0x[0-9a-fA-F]+|\d+", s.args[0]):
            return f"{s.op.where}: {s.op.name} of a numeric address"
    return None


# --- the C program ------------------------------------------------------------------------------

_PRELUDE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#define NV %(nv)d
static char iobuf[%(iobuf)d];
static char text[1 << 20];
static char *v[NV];
static size_t vn[NV];
static long start_brk, seq;
static struct { unsigned long lo, hi; int w; } warm_maps[256];
static int n_warm;

static void die(const char *what) { perror(what); _exit(3); }

static long readall(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) die(path);
  long n = 0, r;
  while ((r = read(fd, text + n, sizeof text - 1 - n)) > 0) n += r;
  close(fd);
  text[n] = 0;
  return n;
}

static long status_kb(const char *key) {
  char *p = strstr(text, key);
  return p ? strtol(p + strlen(key) + 1, 0, 10) : -1;
}

/* Fault in every mapping there is now (the first call records them; later calls redo those). */
static void warm(void) {
  if (!n_warm) {
    readall("/proc/self/maps");
    for (char *line = text; *line; ) {
      char *nl = strchr(line, '\n');
      if (nl) *nl = 0;
      unsigned long lo, hi; char perms[5];
      if (sscanf(line, "%%lx-%%lx %%4s", &lo, &hi, perms) == 3 && !strstr(line, "[v") && perms[0] == 'r') {
        warm_maps[n_warm].lo = lo; warm_maps[n_warm].hi = hi;
        warm_maps[n_warm++].w = perms[1] == 'w' && perms[3] == 'p';
      }
      if (!nl) break;
      line = nl + 1;
    }
  }
  for (int i = 0; i < n_warm; i++)
    if (madvise((void *)warm_maps[i].lo, warm_maps[i].hi - warm_maps[i].lo,
                warm_maps[i].w ? MADV_POPULATE_WRITE : MADV_POPULATE_READ))
      die("madvise populate");
}

/* RssAnon, RssFile, RssShmem summed from the page tables (smaps), exact: /proc/self/status's counters
   are per-CPU and lag by up to a batch of pages. */
static void rss_kb(long *anon, long *file, long *shmem) {
  readall("/proc/self/smaps");
  long rss = 0, sh = 0;
  int in_shmem = 0;
  *anon = 0;
  for (char *line = text; *line; ) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    long kb;
    if (sscanf(line, "Rss: %%ld", &kb) == 1) { rss += kb; if (in_shmem) sh += kb; }
    else if (sscanf(line, "Anonymous: %%ld", &kb) == 1) *anon += kb;
    else if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ')) in_shmem = strstr(line, "/dev/zero") != 0;
    if (!nl) break;
    line = nl + 1;
  }
  *shmem = sh;
  *file = rss - *anon - sh;
}

static void report_to(int fd, void *ptr) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  long anon, file, shmem;
  rss_kb(&anon, &file, &shmem);
  readall("/proc/self/status");
  char *brk = sbrk(0);
  int inheap = ptr ? ((char *)ptr >= (char *)start_brk && (char *)ptr < brk) : -1;
  char out[256];
  int n = snprintf(out, sizeof out, "%%ld %%ld %%ld %%ld %%ld %%ld %%ld %%d\n", ru.ru_minflt, ru.ru_majflt,
                   status_kb("VmSize:"), anon, file, shmem, (long)(brk - (char *)start_brk), inheap);
  if (write(fd, out, n) != n) die("write");
}

static void report(void *ptr) { report_to(1, ptr); }

/* Fault in the start-up mappings, then report once into /dev/null: the first report after start or
   fork faults a few pages of its own, so only the next one is a baseline. */
static void settle(void) {
  warm();
  int null = open("/dev/null", O_WRONLY);
  report_to(null, 0);
  close(null);
}

static void touch(char *p, size_t len, int store) {
  for (char *a = p; a < p + len; a = (char *)(((unsigned long)a & ~4095UL) + 4096)) {
    volatile long *w = (volatile long *)((unsigned long)a & ~7UL);
    if (store) *w = ++seq; else (void)*w;
  }
}

static int open_file(const char *path) {
  int fd = open(path, O_RDWR);
  if (fd < 0) die(path);
  return fd;
}

static void file_io(const char *path, long off, long len, int wr) {
  int fd = open_file(path);
  struct stat st;
  fstat(fd, &st);
  if (len < 0) len = wr ? 0 : st.st_size - off;
  if (len > (long)sizeof iobuf) die("read/write longer than iobuf");
  if ((wr ? pwrite(fd, iobuf, len, off) : pread(fd, iobuf, len, off)) < 0) die(path);
  close(fd);
}

static void *map(unsigned long addr, long len, const char *path, long off, int flags, int prot) {
  int fd = path ? open_file(path) : -1;
  void *p = mmap((void *)addr, len, prot, flags | (path ? 0 : MAP_ANONYMOUS), fd, off);
  if (path) close(fd);
  return p == MAP_FAILED ? 0 : p;
}

static void become(const char *cmd, const char *out) {  /* a forked child: its own channel */
  int in = open(cmd, O_RDONLY), o = open(out, O_WRONLY);
  if (in < 0 || o < 0) die("fifo");
  dup2(in, 0); dup2(o, 1); close(in); close(o);
}

static void *op(int i) {
  void *ptr = 0;
  switch (i) {
%(cases)s
  }
  return ptr;
}

int main(void) {
  volatile char probe[256 << 10];
  memset((char *)probe, 1, sizeof probe);  /* the stack the program itself will use, grown now */
  readall("/proc/self/stat");
  char *p = strrchr(text, ')');
  for (int field = 2; p && field < 47; field++) p = strchr(p + 1, ' ');
  start_brk = strtol(p + 1, 0, 10);
  settle();
  report(0);
  char cmd[32];
  int n = 0;
  for (;;) {
    long r = read(0, cmd + n, 1);
    if (r <= 0) return 0;
    if (cmd[n] != '\n') { n++; continue; }
    cmd[n] = 0; n = 0;
    void *ptr = op(atoi(cmd));
    report(ptr);
  }
}
"""


def _c_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The real worker maps each mmap of the workload at the model's address less this: free in a process
# whose libraries sit near 0x7f..., and every alignment fault-around and page tables see is the same.
MIRROR_SHIFT = 1 << 44


class _Translator:
    def __init__(self, files: dict[str, str], fifo_dir: str, addrs: dict[int, int]) -> None:
        self.files = files  # workload path -> real path
        self.fifo_dir = fifo_dir
        self.addrs = addrs  # step index -> the address the model's mmap returned
        self.slots: dict[str, int] = {}

    def slot(self, name: str) -> int:
        return self.slots.setdefault(name, len(self.slots))

    def range(self, a: list[str]) -> tuple[str, str]:
        """C expressions for the start and length of ``VAR [OFFSET [LEN]]`` (the model's defaults)."""
        s = self.slot(a[0])
        off = parse_size(a[1]) if len(a) > 1 else 0
        length = str(parse_size(a[2])) if len(a) > 2 else f"(vn[{s}] > {off} ? vn[{s}] - {off} : 1)"
        return f"v[{s}] + {off}", length

    # C for the operations on one variable: {s} is its slot, {n} the size argument, {m} the second one.
    _ON_VAR = {
        "malloc": "ptr = v[{s}] = malloc({n}); vn[{s}] = {n};",
        "calloc": "ptr = v[{s}] = calloc({n}, {m}); vn[{s}] = {n} * {m};",
        "realloc": "ptr = v[{s}] = realloc(v[{s}], {n}); vn[{s}] = {n};",
        "free": "free(v[{s}]); v[{s}] = 0;",
        "munmap": "munmap(v[{s}], vn[{s}]);",
        "mprotect": "mprotect(v[{s}], vn[{s}], {prot});",
    }

    def case(self, step: Step) -> str | None:
        a, name = step.args, step.op.name
        if name in self._ON_VAR:
            sizes = [parse_size(x) for x in a[1:3]] if name in ("malloc", "calloc", "realloc") else [0]
            return self._ON_VAR[name].format(s=self.slot(a[0]), n=sizes[0], m=sizes[-1],
                                             prot=workload._prot(a[1]) if name == "mprotect" else 0)
        if name in ("touch", "load"):
            start, length = self.range(a)
            return f"touch({start}, {length}, {int(name == 'touch')});"
        if name == "mmap":
            return self.mmap(a, self.addrs.get(step.index, 0))
        if name == "brk":
            return f"sbrk({'-' if a[0][0] == '-' else ''}{parse_size(a[0][1:])}L);"
        if name in ("read", "write"):
            off = parse_size(a[1]) if len(a) > 1 else 0
            length = parse_size(a[2]) if len(a) > 2 else -1
            return f"file_io({_c_str(self.files[a[0]])}, {off}, {length}, {int(name == 'write')});"
        if name == "fork":
            cmd, out = (_c_str(f"{self.fifo_dir}/{a[0]}.{end}") for end in ("cmd", "out"))
            return f"{{ pid_t pid = fork(); if (pid < 0) die(\"fork\"); if (pid == 0) become({cmd}, {out}); settle(); }}"
        if name == "exit":
            return "_exit(0);"
        if name == "spawn":
            return None
        return None

    def mmap(self, a: list[str], model_addr: int) -> str:
        s = self.slot(a[0])
        size = parse_size(a[1])
        flags, prot, off, path, addr = "MAP_PRIVATE", 3, 0, None, model_addr and model_addr - MIRROR_SHIFT
        for flag in a[2:]:
            key, value = workload._mmap_flag(flag)
            if key == "shared":
                flags = "MAP_SHARED"
            elif key == "private":
                flags = "MAP_PRIVATE"
            elif key == "populate":
                flags += "|MAP_POPULATE"
            elif key == "prot":
                prot = workload._prot(value)
            elif key == "offset":
                off = parse_size(value)
            elif key == "file":
                path = _c_str(self.files[value])
            elif key == "fixed":
                addr = parse_size(value)
        extra = "|MAP_FIXED_NOREPLACE" if addr else ""
        return f"ptr = v[{s}] = map({addr:#x}, {size}, {path or 0}, {off}, {flags}{extra}, {prot}); vn[{s}] = {size};"


def translate(steps: list[Step], files: dict[str, str], fifo_dir: str, addrs: dict[int, int]) -> str:
    """The C program for a flattened workload (one case per operation that runs in a process); each
    mmap goes where the model's went (``addrs``), less MIRROR_SHIFT, or at its own fixed= address."""
    t = _Translator(files, fifo_dir, addrs)
    cases = []
    for step in steps:
        body = t.case(step)
        if body is not None:
            cases.append(f"  case {step.index}: {body} break;")
    return _PRELUDE % {"nv": max(len(t.slots), 1), "iobuf": IOBUF, "cases": "\n".join(cases)}


# --- running it ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def cached_pages(path: str) -> int:
    """Pages of the file in the page cache now (mincore of a mapping that is never touched)."""
    size = os.path.getsize(path)
    if not size:
        return 0
    pages = (size + 4095) // 4096
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, pymmap.PROT_READ, pymmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            if _libc.mincore(addr, size, vec):
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec)


def settled_cache(files: dict[str, str], timeout: float = 3.0) -> dict[str, int]:
    """The page-cache pages of each file once readahead I/O has landed: a fault or read(2) waits only for
    its own page, the rest of the window arrives asynchronously (the model reads it at once), so this
    waits until two readings 50 ms apart agree, and the next operation finds the same cache."""
    def reading():
        return {path: cached_pages(real) for path, real in files.items() if os.path.exists(real)}

    now, deadline = reading(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now, before = reading(), now
        if now == before:
            break
    return now


def make_cold_file(path: str, size: int) -> None:
    """A file of ``size`` bytes on disk and not in the page cache."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class _Worker:
    def __init__(self, cmd, out) -> None:
        self.cmd, self.out = cmd, out

    def read_report(self) -> dict:
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.out], [], [], 30)
            if not ready:
                raise TimeoutError("the C worker did not answer in 30 s")
            chunk = os.read(self.out.fileno(), 256)
            if not chunk:
                raise RuntimeError("the C worker died")
            line += chunk
        return dict(zip(FIELDS, map(int, line.split())))

    def send(self, index: int) -> None:
        self.cmd.write(f"{index}\n".encode())
        self.cmd.flush()


def run_real(steps: list[Step], binary: Path, files: dict[str, str], fifo_dir: str) -> list[dict | None]:
    """Each step's report from the real machine (None for steps that run in no process)."""
    workers: dict[str, _Worker] = {}
    procs = []
    out: list[dict | None] = []
    try:
        for step in steps:
            name, a = step.op.name, step.args
            if name == "file":
                make_cold_file(files[a[0]], parse_size(a[1]))
            if step.proc is None:
                out.append(None)
                continue
            if name == "spawn":
                p = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                procs.append(p)
                workers[a[0]] = _Worker(p.stdin, p.stdout)
                out.append(workers[a[0]].read_report())
                continue
            w = workers[step.proc]
            if name == "fork":
                for end in ("cmd", "out"):
                    os.mkfifo(f"{fifo_dir}/{a[0]}.{end}")
            w.send(step.index)
            if name == "exit":
                del workers[step.proc]
                w.cmd.close()
                out.append(None)
                continue
            out.append(w.read_report())
            if name == "fork":
                cmd = open(f"{fifo_dir}/{a[0]}.cmd", "wb")
                child = _Worker(cmd, open(f"{fifo_dir}/{a[0]}.out", "rb"))
                workers[a[0]] = child
                out[-1] = {"parent": out[-1], "child": child.read_report()}
            out[-1]["cache"] = settled_cache(files)
    finally:
        for w in workers.values():
            w.cmd.close()
        for p in procs:
            p.wait(timeout=30)
    return out


# --- the model's side -------------------------------------------------------------------------

def task_report(task, ptr: int | None) -> dict:
    """The same numbers for a model task: its fault counters, /proc/PID/status sizes, its break."""
    mm = task.mm
    kb = 4
    inheap = -1 if not ptr else int(mm.start_brk <= ptr < mm.brk)
    return {"minflt": task.min_flt, "majflt": task.maj_flt, "VmSize": mm.total_vm * kb,
            "RssAnon": mm.rss["anon"] * kb, "RssFile": mm.rss["file"] * kb, "RssShmem": mm.rss["shmem"] * kb,
            "heap": mm.brk - mm.start_brk, "inheap": inheap}


def run_model(text: str, steps: list[Step], *, read_ahead_kb: int, seed: int = 0):
    """Each step's report from the model, taken the same way; the kernel; the address of each mmap step."""
    boot, _ = parse(text, "oracle.wl")
    k = boot_kernel(boot, seed=seed)
    k.disk.read_ahead_kb = read_ahead_kb
    runner = Runner(k)
    out: list[dict | None] = []
    addrs: dict[int, int] = {}
    for step in steps:
        runner.run([step.op], step.env)
        if step.op.name == "mmap" and not any(f.startswith("fixed=") for f in step.args):
            addrs[step.index] = runner.current.vars[step.args[0]][0]
        if step.proc is None or step.op.name == "exit":
            out.append(None)
            continue
        task = next(t for t in k.tasks.values() if t.name == step.proc)
        ptr = task.vars.get(step.args[0], (0, 0))[0] if step.op.name in ("malloc", "calloc", "realloc", "mmap") \
            else None
        report = task_report(task, ptr)
        if step.op.name == "fork":
            child = next(t for t in k.tasks.values() if t.name == step.args[0])
            report = {"parent": report, "child": task_report(child, None)}
        out.append({**report, "cache": {f.path: len(f.mapping.pages) for f in k.disk.files.values()
                                        if not f.path.startswith("/usr/bin/")}})
    return out, k, addrs
