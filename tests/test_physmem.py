"""Simulated physical memory: x86 byte order, bounds and alignment rules, sparse storage, raw images."""

import os
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.errors import UserError
from model.x86.physmem import PhysMem

GiB = 1 << 30
MiB = 1 << 20


def test_untouched_memory_reads_zero_and_costs_nothing():
    mem = PhysMem(64 * MiB)
    assert mem.read64(0x1000) == 0
    assert mem.read(0x3FF0, 64) == bytes(64)
    assert mem.read_frame(5) == bytes(4096)
    assert mem.touched_frames == 0


def test_read64_is_little_endian():
    """SDM Vol. 1 1.3.1: x86 stores the least significant byte at the lowest address."""
    mem = PhysMem(1 * MiB)
    mem.write(0x2000, bytes([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]))
    assert mem.read64(0x2000) == 0x0807060504030201
    mem.write64(0x3008, 0x1122334455667788)
    assert mem.read(0x3008, 8) == bytes([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])


@given(addr=st.integers(min_value=0, max_value=(1 * MiB - 8) // 8).map(lambda q: q * 8),
       value=st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_write64_then_read64_returns_the_value(addr, value):
    mem = PhysMem(1 * MiB)
    mem.write64(addr, value)
    assert mem.read64(addr) == value


@pytest.mark.parametrize("addr", [1, 4, 0x1003, 0xFFF])
def test_64bit_access_must_be_8_byte_aligned(addr):
    """Page-table entries are 8 bytes at 8-byte aligned addresses (SDM 4.5); so is our memory port."""
    mem = PhysMem(1 * MiB)
    with pytest.raises(UserError, match=rf"{addr:#x}.*8-byte aligned"):
        mem.read64(addr)
    with pytest.raises(UserError, match="8-byte aligned"):
        mem.write64(addr, 0)


@pytest.mark.parametrize("addr", [-8, 1 * MiB, 1 * MiB + 8, 1 << 40])
def test_access_outside_memory_names_the_address(addr):
    mem = PhysMem(1 * MiB)
    with pytest.raises(UserError, match="outside physical memory"):
        mem.read64(addr)
    with pytest.raises(UserError, match="outside physical memory"):
        mem.write64(addr, 1)
    with pytest.raises(UserError, match="outside physical memory"):
        mem.read(addr, 1)


def test_byte_range_may_not_run_past_the_end():
    mem = PhysMem(1 * MiB)
    with pytest.raises(UserError, match="outside physical memory"):
        mem.write(1 * MiB - 4, bytes(8))
    with pytest.raises(UserError, match="outside physical memory"):
        mem.read(1 * MiB - 4, 8)


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_write64_refuses_a_value_wider_than_64_bits(value):
    with pytest.raises(UserError, match="64-bit"):
        PhysMem(1 * MiB).write64(0, value)


@pytest.mark.parametrize("size", [0, 4095, 4096 + 8, -4096])
def test_size_must_be_whole_frames(size):
    with pytest.raises(UserError, match="multiple of 4 KiB"):
        PhysMem(size)


def test_write_and_read_may_cross_frames():
    mem = PhysMem(1 * MiB)
    data = bytes(range(256)) * 40  # 10240 bytes: spans three frames
    mem.write(0x1F00, data)
    assert mem.read(0x1F00, len(data)) == data
    assert mem.read64(0x2000) == int.from_bytes(data[0x100:0x108], "little")
    assert mem.touched_frames == 4  # frames 1, 2, 3 and 4


def test_64gib_memory_with_a_few_mib_written_costs_a_few_mib():
    """Sparse storage: a 64 GiB machine with 4 MiB written spread across it holds 4 MiB of frames."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        mem = PhysMem(64 * GiB)
        for i in range(1024):  # one 4 KiB write every 64 MiB, each straddling two frames
            mem.write(i * (64 * MiB) + 24, b"\xAA" * 4096)  # crosses into the next frame
        cost = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert mem.nr_frames == 64 * GiB // 4096
    assert mem.touched_frames == 2048
    assert mem.resident_bytes == 8 * MiB
    assert cost < 12 * MiB
    assert mem.read64(63 * GiB) == 0


def test_zero_frame_clears_and_releases_storage():
    mem = PhysMem(1 * MiB)
    mem.write64(0x5008, 0xDEAD)
    mem.zero_frame(5)
    assert mem.read_frame(5) == bytes(4096)
    assert mem.touched_frames == 0


def test_copy_frame_copies_all_4096_bytes_and_is_independent():
    mem = PhysMem(1 * MiB)
    data = os.urandom(4096)
    mem.write(0x7000, data)
    mem.copy_frame(9, 7)
    assert mem.read_frame(9) == data
    mem.write64(0x7000, 0)
    assert mem.read_frame(9) == data
    mem.copy_frame(9, 3)  # copying an untouched (zero) frame zeroes the destination
    assert mem.read_frame(9) == bytes(4096)


@pytest.mark.parametrize("call", [lambda m: m.zero_frame(256), lambda m: m.read_frame(-1),
                                  lambda m: m.copy_frame(0, 256), lambda m: m.copy_frame(256, 0)])
def test_frame_numbers_outside_memory_are_refused(call):
    with pytest.raises(UserError, match="page frame"):
        call(PhysMem(1 * MiB))


def test_export_image_byte_at_offset_x_is_physical_address_x(tmp_path):
    mem = PhysMem(4 * MiB)
    mem.write64(0x8, 0x0102030405060708)
    mem.write(0x3FFFF8, b"TAILTAIL")
    mem.write(0x123456, b"middle")
    path = tmp_path / "mem.img"
    mem.export_image(path)
    image = path.read_bytes()
    assert len(image) == mem.size
    assert image[0x8:0x10] == (0x0102030405060708).to_bytes(8, "little")
    assert image[0x123456:0x12345C] == b"middle"
    assert image[-8:] == b"TAILTAIL"
    assert image.count(0) == len(image) - 8 - 6 - 8


def test_export_image_of_large_memory_is_sparse_on_disk(tmp_path):
    """The image is truncated to size and only touched frames are written (holes elsewhere)."""
    mem = PhysMem(16 * GiB)
    mem.write64(15 * GiB, 42)
    path = tmp_path / "big.img"
    mem.export_image(path)
    assert os.path.getsize(path) == 16 * GiB
    with open(path, "rb") as f:
        f.seek(15 * GiB)
        assert int.from_bytes(f.read(8), "little") == 42
    assert os.stat(path).st_blocks * 512 < 64 * MiB


_op = st.one_of(
    st.tuples(st.just("write64"), st.integers(0, 4 * 512 - 1), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("write"), st.integers(0, 4 * 4096 - 1), st.binary(min_size=0, max_size=5000)),
    st.tuples(st.just("page"), st.integers(0, 3), st.lists(st.sampled_from([0, 0, 0, 7, 1 << 63]),
                                                           min_size=512, max_size=512)),
    st.tuples(st.just("copy"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("zero"), st.integers(0, 3), st.just(0)),
)


@settings(derandomize=True, max_examples=300)
@given(ops=st.lists(_op, max_size=60))
def test_sparse_frames_read_back_exactly_what_a_flat_byte_array_holds(ops):
    """Frames kept as one word, a few words or 4 KiB behave as one flat memory, whatever the mix of writes."""
    mem, flat = PhysMem(4 * 4096), bytearray(4 * 4096)
    for op, a, b in ops:
        if op == "write64":
            mem.write64(a * 8, b)
            flat[a * 8:a * 8 + 8] = b.to_bytes(8, "little")
        elif op == "write":
            data = b[:len(flat) - a]
            mem.write(a, data)
            flat[a:a + len(data)] = data
        elif op == "page":
            data = b"".join(w.to_bytes(8, "little") for w in b)
            mem.write(a * 4096, data)
            flat[a * 4096:(a + 1) * 4096] = data
        elif op == "copy":
            mem.copy_frame(a, b)
            flat[a * 4096:(a + 1) * 4096] = flat[b * 4096:(b + 1) * 4096]
        else:
            mem.zero_frame(a)
            flat[a * 4096:(a + 1) * 4096] = bytes(4096)
    assert mem.read(0, len(flat)) == bytes(flat)
    assert all(mem.read_frame(i) == bytes(flat[i * 4096:(i + 1) * 4096]) for i in range(4))
    assert all(mem.read64(i * 8) == int.from_bytes(flat[i * 8:i * 8 + 8], "little") for i in range(0, 2048, 37))


def test_a_stamped_page_costs_a_word_not_a_frame():
    mem = PhysMem(64 * MiB)
    for pfn in range(1000):
        mem.write64((pfn << 12) + 0x10, pfn + 1)
    assert mem.touched_frames == 1000 and mem.resident_bytes == 8000
    mem.write(0x5000 + 1, b"x")  # a byte write makes that frame a full one
    assert mem.resident_bytes == 7992 + 4096 and mem.read64(0x5010) == 6
