"""Reader for valgrind lackey memory traces (``valgrind --tool=lackey --trace-mem=yes``).

Lackey prints one record per memory access::

    I  0401ab70,3        instruction fetch of 3 bytes
     L 1fff000768,8      data read
     S 1fff000760,8      data write
     M 04c2f0c0,8        modify: a read, then a write, of the same bytes

with the address in hex and the size in decimal, between valgrind's own
``==pid==`` (and ``--pid--``) message lines, which are skipped.  The MMU
translates pages, not bytes, so each record becomes one access per page it
touches (two when it crosses a 4 KiB boundary), and ``M`` becomes the reads of
its pages followed by the writes.

Traces run to tens of millions of lines, so no Python code runs per line, and
the file is never held whole: ``LackeyFile.chunks`` reads it in blocks of whole
lines (1 MiB), and one compiled loop (numba) per block checks every line against
the rules and writes its page accesses.  Only when a block has a bad line is it
re-read line by line, by :func:`check_line`, to name the first bad line and the
rule it breaks; that function is also the plain statement of the format.  A gzip
file (recognised by its magic bytes) is read the same way.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from model.errors import UserError
from model.x86.pte import PAGE_SIZE, Access

# The real program trace shipped with the package (replay/traces/listwalk.c made it; docs/traces.md).
SHIPPED_TRACE = Path(__file__).resolve().parent / "traces" / "listwalk.lackey.gz"


class TraceError(UserError):
    """A trace that cannot be read: the message names file, line and the rule broken."""


_KIND_PREFIX = (b"I  ", b" L ", b" S ", b" M ")

MAX_SIZE = PAGE_SIZE  # so that a record touches at most two pages
MAX_HEX = 16  # address digits: 64 bits
MAX_DEC = len(str(MAX_SIZE))  # size digits

RULES = {
    "kind": "a record starts with 'I  ', ' L ', ' S ' or ' M ' (or is a valgrind '==pid==' line)",
    "comma": "a record has exactly one ',' between address and size",
    "address": f"the address is 1 to {MAX_HEX} hex digits",
    "size": f"the size is a decimal number from 1 to {MAX_SIZE}",
    "wrap": "the access must end below 2**64",
    "valgrind": "a valgrind message line starts with '==pid==' or '--pid--'",
}

_VALGRIND_LINE = re.compile(rb"(==|--)\d+\1")
_HEX_FIELD = re.compile(rb"[0-9a-fA-F]{1,%d}" % MAX_HEX)
_DEC_FIELD = re.compile(rb"[0-9]{1,%d}" % MAX_DEC)


def check_line(line: bytes) -> str | None:
    """The rule (a key of RULES) that one line (without its newline) breaks, or None."""
    if line[:2] in (b"==", b"--"):
        return None if _VALGRIND_LINE.match(line) else "valgrind"
    if line[:3] not in _KIND_PREFIX:
        return "kind"
    if line.count(b",") != 1:
        return "comma"
    addr, size = line[3:].split(b",")
    if not _HEX_FIELD.fullmatch(addr):
        return "address"
    if not _DEC_FIELD.fullmatch(size) or not 1 <= int(size) <= MAX_SIZE:
        return "size"
    if int(addr, 16) + int(size) - 1 >= 1 << 64:
        return "wrap"
    return None


@dataclass(frozen=True)
class Trace:
    """Page-level accesses of a trace, in program order.

    ``vaddr[k]`` is the byte address of access k (the page base for the second
    page of a crossing record) and ``access[k]`` its ``model.x86.pte.Access`` value;
    ``first[k]`` says that access k is the first of its record (None: every access is).
    """

    name: str
    vaddr: np.ndarray  # uint64
    access: np.ndarray  # uint8
    records: int  # I/L/S/M lines read
    first: np.ndarray | None = None  # bool

    def __len__(self) -> int:
        return len(self.vaddr)

    @classmethod
    def from_arrays(cls, vaddr, access, name: str = "<arrays>") -> "Trace":
        """A trace built in memory (tests, benchmarks): one record per access."""
        vaddr = np.ascontiguousarray(vaddr, np.uint64)
        access = np.ascontiguousarray(access, np.uint8)
        if vaddr.shape != access.shape or vaddr.ndim != 1:
            raise ValueError("vaddr and access must be 1-D arrays of the same length")
        return cls(name, vaddr, access, len(vaddr))


class LackeyFile:
    """An open lackey trace (plain or gzip) read in chunks: memory stays bounded whatever its length.

    ``chunks()`` yields the page-level accesses of about 1 MiB of text at a time, as ``Trace`` objects
    (``records`` counts the chunk's own); ``position`` is how far into the file (compressed bytes for
    gzip) reading has got, against ``size``, for a progress bar.
    """

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.name = str(path)
        try:
            self._raw = self.path.open("rb")
        except OSError as e:
            raise TraceError(f"{path}: cannot read: {e.strerror}") from None
        self.size = self.path.stat().st_size
        magic = self._raw.read(2)
        self._raw.seek(0)
        self._file = gzip.GzipFile(fileobj=self._raw) if magic == b"\x1f\x8b" else self._raw

    @property
    def position(self) -> int:
        return self._raw.tell()

    def chunks(self):
        try:
            yield from _chunks(self._file, self.name)
        except (OSError, EOFError) as e:  # a damaged or truncated gzip stream
            raise TraceError(f"{self.name}: cannot read: {e}") from None

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "LackeyFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_lackey(path) -> Trace:
    """Read a whole lackey trace file (plain or gzip) into page-level accesses held in memory."""
    with LackeyFile(path) as f:
        return _concatenate(f.chunks(), f.name)


def parse_lackey(text: bytes | str, name: str = "<trace>") -> Trace:
    """Parse lackey trace text held in memory."""
    data = text.encode() if isinstance(text, str) else text
    return _concatenate(_chunks(io.BytesIO(data), name), name)


def _concatenate(chunks, name: str) -> Trace:
    parts = list(chunks)
    return Trace(name, np.concatenate([c.vaddr for c in parts]), np.concatenate([c.access for c in parts]),
                 sum(c.records for c in parts), np.concatenate([c.first for c in parts]))


_BLOCK = 1 << 20  # bytes per block: bounds the memory of the per-line arrays


def _chunks(f, name: str):
    """The ``Trace`` of each block of whole lines; a TraceError at the end if there were no records."""
    records = 0
    line0 = 0  # lines before the current block
    tail = b""
    while True:
        block = f.read(_BLOCK)
        data = tail + block
        if block:
            cut = data.rfind(b"\n") + 1
            data, tail = data[:cut], data[cut:]
        elif data and not data.endswith(b"\n"):
            data += b"\n"
        if data:
            v, a, first, nrec, nlines = _parse_block(data, name, line0)
            records += nrec
            line0 += nlines
            if nrec:
                yield Trace(name, v, a, nrec, first)
        if not block:
            break
    if not records:
        raise TraceError(f"{name}: no I/L/S/M records (was valgrind run with --tool=lackey --trace-mem=yes?)")


# --- the compiled parser -----------------------------------------------------------

_HEXVAL = np.full(256, 255, np.uint8)  # the value of a hex digit, 255 for any other character
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEXVAL[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEXVAL[_c] = 10 + _i
_DIGIT, _SPACE, _NL, _COMMA = ord("0"), ord(" "), ord("\n"), ord(",")
_I, _L, _S, _M, _EQ, _DASH = (ord(c) for c in "ILSM=-")
_READ, _WRITE, _FETCH = int(Access.READ), int(Access.WRITE), int(Access.FETCH)


@numba.njit(cache=True, nogil=True)
def _parse(buf, hexval, vaddr, access, first):
    """Parse whole lines (``buf`` ends with a newline) into page accesses (module docstring); returns
    (accesses, records, lines, bad): ``bad`` is the index of the first line that breaks a rule, or -1."""
    n = len(buf)
    i = out = records = lines = 0
    while i < n:
        c0 = buf[i]
        if c0 == _EQ or c0 == _DASH:  # a valgrind message: ==pid== or --pid--, then anything
            ok = i + 1 < n and buf[i + 1] == c0
            j = i + 2
            while j < n and _DIGIT <= buf[j] <= _DIGIT + 9:
                j += 1
            ok = ok and j > i + 2 and j + 1 < n and buf[j] == c0 and buf[j + 1] == c0
            while buf[i] != _NL:
                i += 1
            i += 1
            if not ok:
                return out, records, lines, lines
            lines += 1
            continue
        if i + 3 >= n or buf[i + 2] != _SPACE:
            return out, records, lines, lines
        c1 = buf[i + 1]
        if c0 == _I and c1 == _SPACE:
            kind = _FETCH
        elif c0 == _SPACE and (c1 == _L or c1 == _S or c1 == _M):
            kind = _READ if c1 == _L else _WRITE if c1 == _S else 3
        else:
            return out, records, lines, lines
        i += 3
        addr = np.uint64(0)
        digits = 0
        while hexval[buf[i]] != 255:
            addr = (addr << np.uint64(4)) | np.uint64(hexval[buf[i]])
            i += 1
            digits += 1
        if digits < 1 or digits > 16 or buf[i] != _COMMA:
            return out, records, lines, lines
        i += 1
        size = 0
        digits = 0
        while _DIGIT <= buf[i] <= _DIGIT + 9:
            size = 10 * size + (buf[i] - _DIGIT)
            i += 1
            digits += 1
        if digits < 1 or digits > 4 or size < 1 or size > 4096 or buf[i] != _NL:
            return out, records, lines, lines
        last = addr + np.uint64(size - 1)
        if last < addr:
            return out, records, lines, lines
        i += 1
        lines += 1
        records += 1
        cross = (last >> np.uint64(12)) != (addr >> np.uint64(12))
        page2 = ((addr >> np.uint64(12)) + np.uint64(1)) << np.uint64(12)
        for op in range(2 if kind == 3 else 1):
            a = kind if kind != 3 else (_READ if op == 0 else _WRITE)
            vaddr[out] = addr
            access[out] = a
            first[out] = op == 0
            out += 1
            if cross:
                vaddr[out] = page2
                access[out] = a
                first[out] = False
                out += 1
    return out, records, lines, -1


def _parse_block(data: bytes, name: str, line0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Parse whole lines (``data`` ends with a newline); returns vaddr, access, first, records, lines."""
    buf = np.frombuffer(data, np.uint8)
    most = 4 * (len(data) // 6 + 1)  # a record line has at least 6 characters and gives at most 4 accesses
    vaddr, access, first = np.empty(most, np.uint64), np.empty(most, np.uint8), np.empty(most, np.bool_)
    count, records, lines, bad = _parse(buf, _HEXVAL, vaddr, access, first)
    if bad >= 0:
        _report_first_error(data, name, line0)
        raise AssertionError(f"{name}: line {line0 + bad + 1} failed the compiled parser but breaks no rule")
    return vaddr[:count].copy(), access[:count].copy(), first[:count].copy(), records, lines


def _report_first_error(data: bytes, name: str, line0: int) -> None:
    for i, line in enumerate(data.split(b"\n")[:-1]):
        rule = check_line(line)
        if rule is not None:
            text = line.decode("utf-8", "replace")
            raise TraceError(f"{name}:{line0 + i + 1}: {RULES[rule]}: {text[:80]!r}")
