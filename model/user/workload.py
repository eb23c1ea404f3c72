"""Workloads: a plain-text program of memory operations, run on the kernel model.

One operation a line; ``#`` starts a comment; tokens are separated by spaces.
Sizes and offsets are bytes, decimal or 0x-hex, with an optional K, M or G
(binary) suffix: ``64K``, ``2M``, ``0x1000``.  The first line of a named
workload is ``# description: ...``.

    boot mem=SIZE swap=SIZE hugepages=N hugepages_1g=N aslr=on|off pcid=on|off
                                  (first operation only; command-line options override it)
    spawn NAME [adj=N]            start /usr/bin/NAME (oom_score_adj N); it becomes current
    use NAME                      make a live process current
    file PATH SIZE                create a file on the simulated disk
    malloc VAR SIZE               glibc-style malloc; VAR holds the pointer
    calloc VAR COUNT SIZE
    realloc VAR SIZE
    free VAR
    mmap VAR SIZE [anon|file=PATH] [offset=N] [private|shared] [prot=rwx] [populate] [fixed=ADDR] [huge|huge1g]
    munmap VAR
    mprotect VAR PROT             PROT is a subset of rwx, or none
    brk +SIZE | -SIZE             move the program break
    touch VAR|ADDR [OFFSET [LEN]] store to every page of the range (default: all of VAR, or one word at ADDR)
    load VAR|ADDR [OFFSET [LEN]]  load from every page of the range
    exec VAR|ADDR [OFFSET [LEN]]  instruction fetch from every page of the range
    stack SIZE                    use SIZE bytes of stack below its top (each page stored to)
    read PATH [OFFSET [LEN]]      read(2) through the page cache (default: the whole file)
    write PATH [OFFSET [LEN]]     write(2): dirty page-cache pages
    sync                          write back every dirty file page
    fork NAME                     fork the current process; the child is called NAME; the parent stays current
    exit [NAME]                   exit the current process (or NAME)
    report KIND[,KIND...]         print reports now: free, top, vmstat, maps, buddyinfo, slabinfo, meminfo, stat
    repeat N                      repeat the lines up to the matching `end` N times; $i is the iteration (0..N-1)
    end

An operation on a process that has died (SIGSEGV, the OOM killer) is skipped
and logged, as its remaining instructions never run; ``use`` of such a process
is logged and makes it current, so the operations meant for it are skipped
too.  A kernel panic (the OOM killer with nothing to kill) ends the run.

After each operation the runner charges one tick of the model's CPU clock
(``Kernel.cputime``) to the process that ran it, and calls every function in
``Runner.listeners`` with a ``Step`` (the per-operation hook ``mmu free
--watch`` uses to print a row per line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from model.errors import UserError
from model.mm import filemap, fork, mmap
from model.mm.kernel import Kernel, KernelPanic
from model.mm.mm_types import Task
from model.user import reports
from model.user.malloc import Malloc
from model.x86.pte import Access

WORKLOAD_DIR = Path(__file__).resolve().parent / "workloads"
_SIZE = re.compile(r"^(0x[0-9a-fA-F]+|\d+)([KMG]?)$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str, what: str = "size") -> int:
    m = _SIZE.match(text)
    if not m:
        raise UserError(f"{what} {text!r}: expected a number of bytes like 4096, 0x1000, 64K, 2M or 1G")
    return int(m.group(1), 0) * _UNITS[m.group(2)]


@dataclass
class Op:
    name: str
    args: list[str]
    where: str  # "FILE:LINE"
    body: list["Op"] = field(default_factory=list)  # repeat


MAX_OPERATIONS = 1_000_000  # the longest run a workload may ask for, every repeat multiplied out

# operation -> (min args, max args, usage)
GRAMMAR = {
    "boot": (0, 6, "boot mem=SIZE swap=SIZE hugepages=N hugepages_1g=N aslr=on|off pcid=on|off"),
    "spawn": (1, 2, "spawn NAME [adj=N]"),
    "use": (1, 1, "use NAME"),
    "file": (2, 2, "file PATH SIZE"),
    "malloc": (2, 2, "malloc VAR SIZE"),
    "calloc": (3, 3, "calloc VAR COUNT SIZE"),
    "realloc": (2, 2, "realloc VAR SIZE"),
    "free": (1, 1, "free VAR"),
    "mmap": (2, 9, "mmap VAR SIZE [anon|file=PATH] [offset=N] [private|shared] [prot=rwx] [populate] "
                   "[fixed=ADDR] [huge|huge1g]"),
    "munmap": (1, 1, "munmap VAR"),
    "mprotect": (2, 2, "mprotect VAR PROT"),
    "brk": (1, 1, "brk +SIZE|-SIZE"),
    "touch": (1, 3, "touch VAR|ADDR [OFFSET [LEN]]"),
    "load": (1, 3, "load VAR|ADDR [OFFSET [LEN]]"),
    "exec": (1, 3, "exec VAR|ADDR [OFFSET [LEN]]"),
    "stack": (1, 1, "stack SIZE"),
    "read": (1, 3, "read PATH [OFFSET [LEN]]"),
    "write": (1, 3, "write PATH [OFFSET [LEN]]"),
    "sync": (0, 0, "sync"),
    "fork": (1, 1, "fork NAME"),
    "exit": (0, 1, "exit [NAME]"),
    "report": (1, 1, "report KIND[,KIND...]"),
    "repeat": (1, 1, "repeat N"),
    "end": (0, 0, "end"),
}
BOOT_KEYS = ("mem", "swap", "hugepages", "hugepages_1g", "aslr", "pcid")


def parse(text: str, source: str) -> tuple[dict[str, str], list[Op]]:
    """Parse a workload; returns (boot settings, operations).  Errors name FILE:LINE and the rule."""
    boot: dict[str, str] = {}
    stack: list[list[Op]] = [[]]
    opened: list[Op] = []
    first_op = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}:{lineno}"
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        name, args = tokens[0], tokens[1:]
        if name not in GRAMMAR:
            raise UserError(f"{where}: unknown operation {name!r} (one of: {', '.join(GRAMMAR)})")
        lo, hi, usage = GRAMMAR[name]
        if not lo <= len(args) <= hi:
            raise UserError(f"{where}: {name} takes {lo}..{hi} arguments: {usage}")
        if name == "boot":
            if not first_op:
                raise UserError(f"{where}: boot must be the first operation")
            for arg in args:
                key, eq, value = arg.partition("=")
                if not eq or key not in BOOT_KEYS:
                    raise UserError(f"{where}: boot setting {arg!r}: expected KEY=VALUE with KEY one of "
                                    f"{', '.join(BOOT_KEYS)}")
                boot[key] = value
            first_op = False
            continue
        first_op = False
        op = Op(name, args, where)
        _check_static(op)
        if name == "end":
            if not opened:
                raise UserError(f"{where}: end without a matching repeat")
            opened.pop()
            stack.pop()
            continue
        stack[-1].append(op)
        if name == "repeat":
            opened.append(op)
            stack.append(op.body)
    if opened:
        raise UserError(f"{opened[-1].where}: repeat without a matching end")
    if not stack[0]:
        raise UserError(f"{source}: no operations (a workload needs at least one line besides boot and comments)")
    _count_operations(stack[0])
    return boot, stack[0]


def _count_operations(ops: list[Op]) -> int:
    """Operations the workload will run, repeats multiplied out; refused above MAX_OPERATIONS."""
    total = 0
    for op in ops:
        total += parse_size(op.args[0]) * _count_operations(op.body) if op.name == "repeat" else 1
        if total > MAX_OPERATIONS:
            where = op.where if op.name == "repeat" else ops[0].where
            raise UserError(f"{where}: the workload would run more than {MAX_OPERATIONS} operations "
                            f"(repeat counts multiply)")
    return total


def _check_static(op: Op) -> None:
    """Checks that need no running kernel: sizes, flags, counts."""
    a = [arg.replace("$i", "0") for arg in op.args]
    try:
        if op.name in ("file", "malloc", "realloc", "mmap"):
            parse_size(a[1])
            for flag in a[2:] if op.name == "mmap" else ():
                _mmap_flag(flag)
        elif op.name == "calloc":
            parse_size(a[1]), parse_size(a[2])
        elif op.name in ("stack", "repeat"):
            parse_size(a[0])
        elif op.name == "brk":
            if a[0][:1] not in "+-":
                raise UserError(f"brk {a[0]!r}: must start with + or -")
            parse_size(a[0][1:])
        elif op.name == "spawn" and len(a) == 2:
            if not re.fullmatch(r"adj=-?\d+", a[1]) or not -1000 <= int(a[1][4:]) <= 1000:
                raise UserError(f"spawn option {a[1]!r}: expected adj=N with N in -1000..1000")
        elif op.name == "mprotect":
            _prot(a[1])
        elif op.name == "report":
            for kind in a[0].split(","):
                if kind not in reports.KINDS:
                    raise UserError(f"report {kind!r}: one of {', '.join(reports.KINDS)}")
        elif op.name in ("touch", "load", "exec", "read", "write"):
            for x in a[1:]:
                parse_size(x, "offset/length")
    except UserError as e:
        raise UserError(f"{op.where}: {e}") from None


def _prot(text: str) -> int:
    if text == "none":
        return 0
    if not re.fullmatch(r"r?w?x?", text) or not text:
        raise UserError(f"protection {text!r}: letters from rwx in that order, or none")
    return (mmap.PROT_READ if "r" in text else 0) | (mmap.PROT_WRITE if "w" in text else 0) | \
        (mmap.PROT_EXEC if "x" in text else 0)


def _mmap_flag(flag: str) -> tuple[str, str]:
    key, _, value = flag.partition("=")
    if key in ("anon", "private", "shared", "populate", "huge", "huge1g") and not value:
        return key, ""
    if key == "prot":
        _prot(value)
        return key, value
    if key in ("offset", "fixed"):
        parse_size(value, key)
        return key, value
    if key == "file" and value:
        return key, value
    raise UserError(f"mmap flag {flag!r}: one of anon, file=PATH, offset=N, private, shared, prot=rwx, "
                    f"populate, fixed=ADDR, huge, huge1g")


def load(spec: str) -> tuple[str, str]:
    """A named workload or a file path: (text, source name for messages)."""
    named = WORKLOAD_DIR / f"{spec}.wl"
    path, source = (named, f"model/user/workloads/{spec}.wl") if named.is_file() else (Path(spec), spec)
    if not path.is_file():
        raise UserError(f"workload {spec!r}: neither a named workload (mmu run --list) nor a readable file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{source}: not a text workload (byte {data[e.start]:#04x} at offset {e.start} is not "
                        "UTF-8)") from None
    if "\0" in text:
        raise UserError(f"{source}: not a text workload (a NUL byte at offset {text.index(chr(0))})")
    return text, source


def named_workloads() -> list[tuple[str, str]]:
    """(name, description) of every model/user/workloads/*.wl, by name."""
    out = []
    for path in sorted(WORKLOAD_DIR.glob("*.wl")):
        first = path.read_text().splitlines()[:1]
        desc = first[0].split(":", 1)[1].strip() if first and first[0].startswith("# description:") else ""
        out.append((path.stem, desc))
    return out


def boot_kernel(boot: dict[str, str], *, seed: int, mem: int | None = None, swap: int | None = None,
                where: str = "boot") -> Kernel:
    def flag(key: str) -> bool:
        value = boot.get(key, "off")
        if value not in ("on", "off"):
            raise UserError(f"{where}: {key}={value!r}: must be on or off")
        return value == "on"

    try:
        return Kernel(
            mem=mem if mem is not None else parse_size(boot.get("mem", "256M"), "mem"),
            swap=swap if swap is not None else parse_size(boot.get("swap", "0"), "swap"),
            seed=seed, aslr=flag("aslr"), pcide=flag("pcid"),
            hugepages=parse_size(boot.get("hugepages", "0"), "hugepages"),
            hugepages_1g=parse_size(boot.get("hugepages_1g", "0"), "hugepages_1g"))
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


# Operations that are system calls (spawn is fork + execve).  The others run in user space and
# enter the kernel only through a page fault or a brk/mmap/munmap that malloc makes.
SYSCALL_OPS = frozenset({"spawn", "mmap", "munmap", "mprotect", "brk", "read", "write", "sync", "fork", "exit"})


# Called with the kernel after every Runner.run: the tests install the invariant checker here
# (tests/conftest.py), so every workload any test runs ends checked.
AFTER_RUN: list[Callable[[Kernel], None]] = []


@dataclass
class Step:
    """One operation the runner has just executed, as the per-operation listeners see it.

    ``task`` is the process it ran in (None for lines of the script itself:
    use, file, report); ``skipped`` when that process was already dead;
    ``first_seq`` is the decision-log sequence number before it ran, so its own
    decisions are ``k.decisions.since(first_seq)``.
    """

    op: Op
    args: list[str]  # with $i filled in
    task: Task | None
    skipped: bool
    first_seq: int

    @property
    def line(self) -> int:
        return int(self.op.where.rsplit(":", 1)[1])

    @property
    def text(self) -> str:
        return " ".join([self.op.name, *self.args])


class Runner:
    """Runs parsed operations on a kernel; ``log`` collects what happened, line by line."""

    def __init__(self, kernel: Kernel, out=None) -> None:
        self.k = kernel
        self.current = None
        self.log: list[str] = []
        self.out = out  # called with each log line and report text as they happen
        self.listeners: list = []  # called with a Step after each operation
        self._dmesg_seen = 0
        self._ran_in = None  # the process the operation being run belongs to, set by _do
        self._skipped = False

    def run(self, ops: list[Op], env: dict | None = None) -> None:
        """Run the operations (``env``: the ``$i`` of an enclosing repeat), then every ``AFTER_RUN`` check on
        the kernel they leave.

        A kernel panic ends the run at the operation that caused it; the rest never runs.
        """
        try:
            self._run(ops, env)
        except KernelPanic:
            self._drain_dmesg()
            self.note(f"{self.k.decisions.where}: the kernel panicked; the remaining operations did not run")
        for hook in AFTER_RUN:
            hook(self.k)

    def _run(self, ops: list[Op], env: dict[str, int] | None) -> None:
        k = self.k
        for op in ops:
            if op.name == "repeat":
                for i in range(parse_size(op.args[0])):
                    self._run(op.body, {"i": i})
                continue
            args = [a.replace("$i", str(env["i"])) if env else a for a in op.args]
            k.decisions.where = f"{op.where} (i={env['i']})" if env else op.where
            first_seq, faults, syscalls = k.decisions.seq, k.vmstat["pgfault"], sum(k.syscalls.values())
            self._ran_in, self._skipped = None, False
            try:
                self._do(op, args)
            except UserError as e:
                raise UserError(f"{op.where}: {e}") from None
            except mmap.SyscallError as e:
                self.note(f"{op.where}: {op.name} failed: {e}")
            self._drain_dmesg()
            if self._ran_in is not None and not self._skipped:
                if op.name in SYSCALL_OPS:
                    k.syscalls[op.name] += 1
                entered = op.name in SYSCALL_OPS or k.vmstat["pgfault"] > faults or \
                    sum(k.syscalls.values()) > syscalls
                k.cputime.charge(self._ran_in.pid, entered)
            step = Step(op, args, self._ran_in, self._skipped, first_seq)
            for listener in self.listeners:
                listener(step)

    def note(self, line: str) -> None:
        self.log.append(line)
        if self.out is not None:
            self.out(line + "\n")

    def _drain_dmesg(self) -> None:
        for line in self.k.dmesg[self._dmesg_seen:]:
            self.note(f"kernel: {line}")
        self._dmesg_seen = len(self.k.dmesg)

    def _task(self, op: Op, name: str | None = None, killed: bool = False):
        """The live process NAME (or the current one); with ``killed``, else the latest one a signal killed."""
        if name is not None:
            for t in self.k.tasks.values():
                if t.name == name:
                    return t
            for t in reversed(self.k.dead if killed else ()):
                if t.name == name and t.exit_signal is not None:
                    return t
            raise UserError(f"no live process named {name!r}")
        if self.current is None:
            raise UserError(f"{op.name} needs a process: spawn one first")
        return self.current

    def _var(self, task, name: str) -> tuple[int, int]:
        if name in task.vars:
            return task.vars[name]
        if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", name):
            return int(name, 0), 8
        raise UserError(f"variable {name!r} is not set in process {task.name} (malloc or mmap it first)")

    def _check_new_name(self, op: Op, name: str) -> None:
        if any(t.name == name and t.alive for t in self.k.tasks.values()):
            raise UserError(f"{op.name} {name}: a live process is named {name} already "
                            "(use and exit find processes by name, so live names must be unique)")

    def _heap_pointer(self, op: Op, task, name: str) -> int:
        """The pointer a malloc-family variable holds: what free and realloc take (NULL included)."""
        if name not in task.vars:
            if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", name):
                raise UserError(f"{op.name} {name}: takes a variable made by malloc, calloc or realloc, "
                                "not an address")
            self._var(task, name)
        ptr = task.vars[name][0]
        if ptr and ptr not in task.heap.chunks:
            raise UserError(f"{op.name} {name}: {name} was not made by malloc, calloc or realloc "
                            f"(an mmap variable is released with munmap)")
        return ptr

    def _do(self, op: Op, a: list[str]) -> None:
        k = self.k
        name = op.name
        if name == "spawn":
            self._check_new_name(op, a[0])
            adj = int(a[1][4:]) if len(a) == 2 else 0
            task = fork.spawn(k, a[0], adj)
            task.heap = Malloc(k, task)
            self.current = self._ran_in = task
            self.note(f"spawn {a[0]}: pid {task.pid}")
            return
        if name == "use":
            self.current = self._task(op, a[0], killed=True)
            if not self.current.alive:
                self.note(f"{op.where}: use {a[0]}: pid {self.current.pid} was killed "
                          f"({self.current.exit_signal}); its operations are skipped")
            return
        if name == "file":
            k.disk.create(a[0], parse_size(a[1]))
            return
        if name == "sync":
            self._ran_in = self.current if self.current is not None and self.current.alive else None
            self.note(f"sync: {filemap.sync(k)} pages written back")
            return
        if name == "report":
            text = reports.render(k, a[0].split(","), self.current)
            if self.out is not None:
                self.out(text)
            return
        task = self._ran_in = self._task(op, a[0] if name == "exit" and a else None)
        if not task.alive:
            self._skipped = True
            self.note(f"{op.where}: {name} skipped: pid {task.pid} ({task.name}) is dead ({task.exit_signal})")
            return
        heap = task.heap
        if name in ("malloc", "calloc", "realloc"):
            if name == "malloc":
                size = parse_size(a[1])
                ptr = heap.malloc(size)
            elif name == "calloc":
                size = parse_size(a[1]) * parse_size(a[2])
                ptr = heap.calloc(parse_size(a[1]), parse_size(a[2]))
            else:
                size = parse_size(a[1])
                ptr = heap.realloc(self._heap_pointer(op, task, a[0]), size)
            if task.alive:
                if not ptr:
                    self.note(f"{op.where}: {name} {a[0]} returned NULL (ENOMEM)")
                task.vars[a[0]] = (ptr, size)
        elif name == "free":
            ptr = self._heap_pointer(op, task, a[0])
            if ptr:  # free(NULL) does nothing
                heap.free(ptr)
            task.vars.pop(a[0])
        elif name == "mmap":
            self._mmap(task, a)
        elif name == "munmap":
            addr, size = self._var(task, a[0])
            mmap.do_munmap(k, task, addr, size)
            task.vars.pop(a[0])
        elif name == "mprotect":
            addr, size = self._var(task, a[0])
            mmap.do_mprotect(k, task, addr, size, _prot(a[1]))
        elif name == "brk":
            delta = parse_size(a[0][1:]) * (1 if a[0][0] == "+" else -1)
            want = task.mm.brk + delta
            if mmap.do_brk(k, task, want) != want:
                self.note(f"{op.where}: brk {a[0]} refused")
        elif name in ("touch", "load", "exec"):
            access = {"touch": Access.WRITE, "load": Access.READ, "exec": Access.FETCH}[name]
            addr, size = self._var(task, a[0])
            off = parse_size(a[1]) if len(a) > 1 else 0
            length = parse_size(a[2]) if len(a) > 2 else max(size - off, 1)
            heap.touch(addr + off, length, access)
        elif name == "stack":
            top = task.mm.start_stack
            heap.touch(top - parse_size(a[0]), parse_size(a[0]))
        elif name in ("read", "write"):
            f = k.disk.lookup(a[0])
            off = parse_size(a[1]) if len(a) > 1 else 0
            length = parse_size(a[2]) if len(a) > 2 else max(f.size - off, 0)
            fn = filemap.file_read if name == "read" else filemap.file_write
            fn(k, task, f, off, length)
        elif name == "fork":
            self._check_new_name(op, a[0])
            child = fork.do_fork(k, task, a[0])
            self.note(f"fork {task.name} -> {a[0]}: pid {child.pid}")
        elif name == "exit":
            fork.do_exit(k, task, None, "exit")
            self.note(f"exit {task.name}: pid {task.pid}")

    def _mmap(self, task, a: list[str]) -> None:
        size = parse_size(a[1])
        flags, prot, offset, addr, f = mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE, 0, 0, None
        for flag in a[2:]:
            key, value = _mmap_flag(flag)
            if key == "shared":
                flags = (flags & ~mmap.MAP_PRIVATE) | mmap.MAP_SHARED
            elif key == "private":
                flags = (flags & ~mmap.MAP_SHARED) | mmap.MAP_PRIVATE
            elif key == "populate":
                flags |= mmap.MAP_POPULATE
            elif key == "huge":
                flags |= mmap.MAP_HUGETLB | mmap.MAP_HUGE_2MB
            elif key == "huge1g":
                flags |= mmap.MAP_HUGETLB | mmap.MAP_HUGE_1GB
            elif key == "prot":
                prot = _prot(value)
            elif key == "offset":
                offset = parse_size(value)
            elif key == "fixed":
                flags |= mmap.MAP_FIXED
                addr = parse_size(value)
            elif key == "file":
                f = self.k.disk.lookup(value)
        if f is None:
            flags |= mmap.MAP_ANONYMOUS
        ptr = mmap.do_mmap(self.k, task, addr, size, prot, flags, f, offset)
        task.vars[a[0]] = (ptr, size)


def run_workload(spec: str, *, seed: int = 0, mem: int | None = None, swap: int | None = None,
                 out=None, listeners=()) -> tuple[Kernel, Runner]:
    """Load, boot and run a workload; returns the kernel (for reports and checks) and the runner.

    ``listeners`` are factories: each is called with the booted kernel and
    returns the function the runner calls with every Step (a FreeWatch, say).
    """
    text, source = load(spec)
    boot, ops = parse(text, source)
    k = boot_kernel(boot, seed=seed, mem=mem, swap=swap, where=source)
    runner = Runner(k, out)
    runner.listeners.extend(listener(k) for listener in listeners)
    runner.run(ops)
    return k, runner
