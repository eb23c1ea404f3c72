"""Simulated physical memory: the bytes the kernel model writes and the MMU walks.

Memory is sparse: only 4 KiB frames that hold data have host storage, so a
64 GiB machine with a few MiB in use costs a few MiB.  A frame that was never
written, or was zeroed, reads as zeros and has no storage.  A frame holding
only a few 64-bit words (a page the kernel model stamped once, a page table
with a few entries) keeps just those words: one as an ``(offset, value)``
tuple, up to ``SPARSE_WORDS`` as ``{offset: value}``; more words, or a partial
byte write, make it a full 4 KiB bytearray.  Touching a page with one store
costs the host about 90 bytes of frame storage, not 4 KiB.
"""

from __future__ import annotations

import struct

from model.errors import UserError
from model.x86.pte import PAGE_SHIFT, PAGE_SIZE

_Q = struct.Struct("<Q")
_FRAME_WORDS = struct.Struct(f"<{PAGE_SIZE // 8}Q")
_ZERO_FRAME = bytes(PAGE_SIZE)
SPARSE_WORDS = 16  # words a frame keeps as {offset: value} before it becomes a bytearray


class PhysMemError(UserError):
    """An access outside physical memory or breaking an alignment rule."""


class PhysMem:
    """``size`` bytes of physical memory, a whole number of 4 KiB frames.

    Multi-byte values are little-endian, as on x86.
    """

    def __init__(self, size: int = 256 << 20) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise PhysMemError(f"physical memory size {size:#x}: must be a positive multiple of 4 KiB")
        self.size = size
        self.nr_frames = size >> PAGE_SHIFT
        self._frames: dict[int, bytearray] = {}

    @property
    def touched_frames(self) -> int:
        """Frames with host storage (written since they were last zeroed)."""
        return len(self._frames)

    @property
    def resident_bytes(self) -> int:
        """Host bytes spent on frame contents (8 per word of a sparse frame): the cost of the sparse store."""
        return sum(PAGE_SIZE if f.__class__ is bytearray else 8 * len(_words(f)) for f in self._frames.values())

    # --- 64-bit entries: the walker's hot path --------------------------------

    def read64(self, addr: int) -> int:
        if addr & 7 or not 0 <= addr < self.size:
            self._bad(addr, 8)
        frame = self._frames.get(addr >> PAGE_SHIFT)
        if frame is None:
            return 0
        cls = frame.__class__
        if cls is tuple:
            return frame[1] if frame[0] == addr & (PAGE_SIZE - 1) else 0
        if cls is dict:
            return frame.get(addr & (PAGE_SIZE - 1), 0)
        return _Q.unpack_from(frame, addr & (PAGE_SIZE - 1))[0]

    def write64(self, addr: int, value: int) -> None:
        if addr & 7 or not 0 <= addr < self.size:
            self._bad(addr, 8)
        if not 0 <= value < 1 << 64:
            raise PhysMemError(f"write64 at {addr:#x}: value {value:#x} is not a 64-bit unsigned integer")
        pfn, off = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
        frame = self._frames.get(pfn)
        if frame is None or (frame.__class__ is tuple and frame[0] == off):
            self._frames[pfn] = (off, value)
        elif frame.__class__ is tuple:
            self._frames[pfn] = {frame[0]: frame[1], off: value}
        elif frame.__class__ is dict:
            frame[off] = value
            if len(frame) > SPARSE_WORDS:
                self._frames[pfn] = _dense(frame)
        else:
            _Q.pack_into(frame, off, value)

    # --- byte ranges --------------------------------------------------------

    def read(self, addr: int, n: int) -> bytes:
        self._check_range(addr, n)
        out = bytearray(n)
        pos = 0
        while pos < n:
            pfn, off = divmod(addr + pos, PAGE_SIZE)
            chunk = min(n - pos, PAGE_SIZE - off)
            frame = self._frames.get(pfn)
            if frame is not None:
                out[pos:pos + chunk] = _dense(frame)[off:off + chunk]
            pos += chunk
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        self._check_range(addr, len(data))
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            pfn, off = divmod(addr + pos, PAGE_SIZE)
            chunk = min(len(view) - pos, PAGE_SIZE - off)
            if chunk == PAGE_SIZE:
                self._frames[pfn] = _compact(view[pos:pos + chunk])
            else:
                self._frame(pfn)[off:off + chunk] = view[pos:pos + chunk]
            pos += chunk

    # --- whole frames -------------------------------------------------------

    def zero_frame(self, pfn: int) -> None:
        """Clear a frame; its host storage is released (zeros need none)."""
        self._check_pfn(pfn)
        self._frames.pop(pfn, None)

    def copy_frame(self, dst_pfn: int, src_pfn: int) -> None:
        self._check_pfn(dst_pfn)
        self._check_pfn(src_pfn)
        src = self._frames.get(src_pfn)
        if src is None:
            self._frames.pop(dst_pfn, None)
        elif dst_pfn != src_pfn:
            self._frames[dst_pfn] = src if src.__class__ is tuple else src.copy()

    def read_frame(self, pfn: int) -> bytes:
        self._check_pfn(pfn)
        frame = self._frames.get(pfn)
        if frame is None:
            return _ZERO_FRAME
        return bytes(_dense(frame))

    def export_image(self, path) -> None:
        """Write a raw image: the byte at file offset X is physical address X.

        The file is ``size`` bytes long but written sparsely (truncate, then
        only the stored frames), so untouched memory costs no disk blocks on
        file systems with holes.
        """
        with open(path, "wb") as f:
            f.truncate(self.size)
            for pfn in sorted(self._frames):
                f.seek(pfn << PAGE_SHIFT)
                frame = self._frames[pfn]
                f.write(_dense(frame))

    # --- helpers ------------------------------------------------------------

    def _frame(self, pfn: int) -> bytearray:
        """The frame as a bytearray, made dense for a byte write."""
        frame = self._frames.get(pfn)
        if frame is None:
            frame = self._frames[pfn] = bytearray(PAGE_SIZE)
        elif frame.__class__ is not bytearray:
            frame = self._frames[pfn] = _dense(frame)
        return frame

    def _bad(self, addr: int, n: int) -> None:
        if addr & 7:
            raise PhysMemError(f"physical address {addr:#x}: a 64-bit access must be 8-byte aligned")
        self._check_range(addr, n)

    def _check_range(self, addr: int, n: int) -> None:
        if n < 0:
            raise PhysMemError(f"access of {n} bytes at {addr:#x}: length must be >= 0")
        if addr < 0 or addr + n > self.size:
            raise PhysMemError(
                f"physical address {addr:#x} (+{n} bytes): outside physical memory [0, {self.size:#x})")

    def _check_pfn(self, pfn: int) -> None:
        if not 0 <= pfn < self.nr_frames:
            raise PhysMemError(f"page frame {pfn:#x}: outside physical memory (0 .. {self.nr_frames - 1:#x})")


def _words(frame: tuple | dict) -> dict[int, int]:
    """A sparse frame's words, {offset: value}."""
    return {frame[0]: frame[1]} if frame.__class__ is tuple else frame


def _dense(frame) -> bytearray:
    """Any stored frame as 4 KiB of bytes (the bytearray itself when it is one)."""
    if frame.__class__ is bytearray:
        return frame
    out = bytearray(PAGE_SIZE)
    for off, value in _words(frame).items():
        _Q.pack_into(out, off, value)
    return out


def _compact(data) -> tuple | dict[int, int] | bytearray:
    """A whole frame's new contents in the cheapest form: its non-zero words, or the bytes."""
    words = _FRAME_WORDS.unpack(data)
    nonzero = [i for i, w in enumerate(words) if w]
    if len(nonzero) > SPARSE_WORDS:
        return bytearray(data)
    if len(nonzero) == 1:
        return nonzero[0] * 8, words[nonzero[0]]
    return {i * 8: words[i] for i in nonzero}
