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

Traces run to tens of millions of lines, so no Python code runs per line: the
file is read in blocks of whole lines, and each block is parsed with numpy
operations on 64-bit words.  Every line is short, so the 8 bytes at its start
hold the record kind, the 8 bytes before its newline hold the comma and the
size, and the 16 bytes before the comma hold the address.  Each character is
first classified through a 256-entry table (digit value, hex digit, decimal
digit), and the words of classes are gathered once per line and decoded and
validated eight characters at a time (SWAR: SIMD within a register).  Only when a block fails validation is it
re-read line by line, by :func:`check_line`, to name the first bad line and
the rule it breaks; that function is also the plain statement of the format.
A gzip file (recognised by its magic bytes) is read the same way.
"""

from __future__ import annotations

import gzip
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import UserError
from model.x86.pte import PAGE_SHIFT, PAGE_SIZE, Access

# The real program trace shipped with the package (replay/traces/listwalk.c made it; docs/traces.md).
SHIPPED_TRACE = Path(__file__).resolve().parent / "traces" / "listwalk.lackey.gz"


class TraceError(UserError):
    """A trace that cannot be read: the message names file, line and the rule broken."""


# Record kinds, in the order of _KIND_ACCESS.
KIND_I, KIND_L, KIND_S, KIND_M = range(4)
_KIND_ACCESS = np.array([Access.FETCH, Access.READ, Access.WRITE, Access.READ], np.uint8)
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


# --- the vectorised parser ---------------------------------------------------------

_PAD = 16  # zero bytes on each side of a block: every word gathered below stays in bounds
_PADDING = bytes(_PAD)
_U = np.uint64
_HEX_BIT = _U(0x1010101010101010)  # per byte of a class word: a hex digit
_DEC_BIT = _U(0x2020202020202020)  # per byte of a class word: a decimal digit
_VALUE = _U(0x0F0F0F0F0F0F0F0F)  # per byte of a class word: the digit's value
# _CLASS[c]: the digit value of character c in the low nibble, plus _HEX_BIT and _DEC_BIT flags.
_CLASS = np.zeros(256, np.uint8)
for _c in b"0123456789":
    _CLASS[_c] = 0x30 | (_c - ord("0"))
for _i, _c in enumerate(b"abcdef"):
    _CLASS[_c] = _CLASS[_c - 32] = 0x10 | (10 + _i)
# _KEEP[n]: the top n bytes of a word (the n characters just before the word's end).
_KEEP = np.array([0] + [((1 << 8 * n) - 1) << 8 * (8 - n) for n in range(1, 9)], np.uint64)
_PREFIX_CODE = [int.from_bytes(p, "little") for p in _KIND_PREFIX]


def _words(a: np.ndarray) -> np.ndarray:
    """``w[i]`` = the 8 bytes ``a[i:i+8]`` as a little-endian integer (first byte lowest)."""
    return np.ndarray((len(a) - 7,), "<u8", a, strides=(1,))


def _hex8(cls: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value of the last ``n`` (0..8) characters of class words read as hex, and whether all are hex digits."""
    keep = _KEEP[n]
    ok = (cls & keep & _HEX_BIT) == (keep & _HEX_BIT)
    nib = cls & keep & _VALUE  # byte 0 holds the most significant digit
    nib = ((nib << _U(4)) | (nib >> _U(8))) & _U(0x00FF00FF00FF00FF)
    nib = ((nib << _U(8)) | (nib >> _U(16))) & _U(0x0000FFFF0000FFFF)
    nib = ((nib << _U(16)) | (nib >> _U(32))) & _U(0xFFFFFFFF)
    return nib, ok


def _parse_block(data: bytes, name: str, line0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Parse whole lines (``data`` ends with a newline); returns vaddr, access, first, records, lines."""
    buf = np.frombuffer(_PADDING + data + _PADDING, np.uint8)
    word, cls = _words(buf), _words(_CLASS[buf])
    body = buf[_PAD:-_PAD]
    ends = np.flatnonzero(body == ord("\n")) + _PAD
    nlines = len(ends)
    starts = np.empty_like(ends)
    starts[0] = _PAD
    starts[1:] = ends[:-1] + 1

    head = word[starts]
    two = head & _U(0xFFFF)
    valgrind = (two == _U(0x3D3D)) | (two == _U(0x2D2D))  # "==" or "--"
    ok = True
    commas_elsewhere = 0
    for i in np.flatnonzero(valgrind):
        line = data[starts[i] - _PAD:ends[i] - _PAD]
        ok &= _VALGRIND_LINE.match(line) is not None
        commas_elsewhere += line.count(b",")

    rec = np.flatnonzero(~valgrind)
    s, e, head = starts[rec], ends[rec], head[rec]
    prefix = head & _U(0xFFFFFF)
    kind = np.full(len(rec), 255, np.uint8)
    for k, code in enumerate(_PREFIX_CODE):
        kind[prefix == _U(code)] = k

    # The comma is one of the 2nd..5th characters before the newline (sizes of 1..4 digits).
    tail = word[e - 8]
    slen = np.zeros(len(rec), np.int64)
    for n in range(MAX_DEC, 0, -1):
        slen[((tail >> _U(8 * (7 - n))) & _U(0xFF)) == _U(ord(","))] = n
    comma = e - 1 - slen
    alen = comma - s - 3
    good = (kind != 255) & (slen > 0) & (alen >= 1) & (alen <= MAX_HEX) & (e - s >= 6)

    keep = _KEEP[slen]
    digits = cls[e - 8] & keep
    good &= (digits & _DEC_BIT) == (keep & _DEC_BIT)
    d = (digits & _VALUE) >> _U(32)  # the last four characters, most significant first
    d = (d * _U(10) + (d >> _U(8))) & _U(0x00FF00FF)
    size = (d * _U(100) + (d >> _U(16))) & _U(0xFFFF)
    good &= (size >= _U(1)) & (size <= _U(MAX_SIZE))

    comma = np.where(good, comma, _PAD + 16)  # keep the gathers in bounds on bad lines
    alen = np.where(good, alen, 1)
    lo, lo_ok = _hex8(cls[comma - 8], np.minimum(alen, 8))
    hi, hi_ok = _hex8(cls[comma - 16], np.clip(alen - 8, 0, 8))
    addr = (hi << _U(32)) | lo
    last = addr + (size - _U(1))
    good &= lo_ok & hi_ok & (last >= addr)

    # A second comma anywhere in a record line shows in the block's comma count.
    commas = int(np.count_nonzero(body == ord(",")))
    if not (ok and good.all() and commas == len(rec) + commas_elsewhere):
        _report_first_error(data, name, line0)
        raise AssertionError(f"{name}: block at line {line0 + 1} failed the fast checks but no line is bad")

    vaddr, access, first = _expand(addr, last, kind)
    return vaddr, access, first, len(rec), nlines


def _report_first_error(data: bytes, name: str, line0: int) -> None:
    for i, line in enumerate(data.split(b"\n")[:-1]):
        rule = check_line(line)
        if rule is not None:
            text = line.decode("utf-8", "replace")
            raise TraceError(f"{name}:{line0 + i + 1}: {RULES[rule]}: {text[:80]!r}")


def _expand(addr: np.ndarray, last: np.ndarray, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One access per (operation, page): M is read then write, each over every page touched; and which
    accesses are the first of their record.

    Almost every record gives exactly one access, so each record's first access
    is written at ``pos`` and only the rare extras are scattered after it.
    """
    shift = _U(PAGE_SHIFT)
    cross = (last >> shift) != (addr >> shift)
    is_m = kind == KIND_M
    access = _KIND_ACCESS[kind]
    if not cross.any() and not is_m.any():
        return addr, access, np.ones(len(addr), bool)
    count = (1 + cross.view(np.uint8)) << is_m.view(np.uint8)
    pos = np.cumsum(count, dtype=np.int64) - count
    total = int(pos[-1] + count[-1])
    out_v = np.empty(total, np.uint64)
    out_a = np.empty(total, np.uint8)
    out_v[pos] = addr
    out_a[pos] = access
    page2 = ((addr >> shift) + _U(1)) << shift
    c = np.flatnonzero(cross)  # second page, same operation: right after the first
    out_v[pos[c] + 1] = page2[c]
    out_a[pos[c] + 1] = access[c]
    m = np.flatnonzero(is_m)  # the writes of M, after its reads
    w = pos[m] + 1 + cross[m]
    out_v[w] = addr[m]
    out_a[w] = Access.WRITE
    mc = np.flatnonzero(is_m & cross)
    out_v[pos[mc] + 3] = page2[mc]
    out_a[pos[mc] + 3] = Access.WRITE
    first = np.zeros(total, bool)
    first[pos] = True
    return out_v, out_a, first
