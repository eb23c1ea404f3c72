"""One frozen description of an MMU instance.

The same object parameterises the Amaranth design (`hw/`), the reference MMU
(`model/reference/ref_mmu.py`) and the testbench (`sim/`), so changing one value here
changes all three together.  ``PRESETS`` names the configurations the regression,
the hardware tests and the benches share (``--preset NAME`` on every command that
takes a configuration).  Every rule is checked in ``__post_init__`` so an
impossible configuration is refused with a message naming the field and the
rule, before any hardware is elaborated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum

from model.errors import UserError


class ConfigError(UserError):
    """An impossible configuration: the message names the field and the rule."""


class Policy(str, Enum):
    """TLB replacement policies (the hardware implements each one)."""

    LRU = "lru"
    PLRU = "plru"  # tree pseudo-LRU
    FIFO = "fifo"  # round-robin pointer per set
    RANDOM = "random"  # 16-bit Galois LFSR, seeded

    @classmethod
    def parse(cls, text: str) -> "Policy":
        try:
            return cls(text.lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ConfigError(f"policy {text!r}: must be one of {names}") from None


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# LRU keeps a full recency order per set; in hardware that is an age matrix whose
# size grows with ways squared, so it is offered for small associativity only.
MAX_LRU_WAYS = 16


@dataclass(frozen=True)
class TLBConfig:
    """One TLB: a main array for 4 KiB pages plus a small fully associative
    array for 2 MiB and 1 GiB pages (see docs/reference.md, "TLB organisation").

    ``ways == entries`` makes the main array fully associative.  ``model_only`` lifts the limits that exist
    only because the TLB is built in hardware (LRU's way count): the reference model and the trace replay
    simulate any power-of-two geometry.  It is not part of the configuration's value (equality, JSON): a
    model-only TLB that the hardware could not build is refused wherever hardware is made from it
    (:meth:`check_buildable`).
    """

    entries: int = 32
    ways: int = 4
    policy: Policy = Policy.PLRU
    superpage_entries: int = 4
    model_only: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", Policy.parse(str(getattr(self.policy, "value", self.policy))))
        if not _is_pow2(self.entries):
            raise ConfigError(f"entries={self.entries}: must be a power of two >= 1")
        if not _is_pow2(self.ways) or self.ways > self.entries:
            raise ConfigError(f"ways={self.ways}: must be a power of two no larger than entries={self.entries}")
        if not _is_pow2(self.superpage_entries):
            raise ConfigError(f"superpage_entries={self.superpage_entries}: must be a power of two >= 1")
        if not self.model_only:
            self.check_buildable()

    def check_buildable(self) -> None:
        """Refuse what the hardware cannot build (a ConfigError naming the field and the rule)."""
        for name, ways in (("ways", self.ways), ("superpage_entries", self.superpage_entries)):
            if self.policy is Policy.LRU and ways > MAX_LRU_WAYS:
                raise ConfigError(f"{name}={ways} with policy lru: LRU is for at most {MAX_LRU_WAYS} ways in "
                                  "hardware; use plru (the reference model and `mmu trace` take any)")

    @property
    def sets(self) -> int:
        return self.entries // self.ways

    @property
    def set_bits(self) -> int:
        return self.sets.bit_length() - 1


MAX_DRAM_CYCLES = 1024  # any one DRAM timing parameter


@dataclass(frozen=True)
class DRAMTiming:
    """Latency of the DRAM model behind the memory port, in MMU clock cycles.

    ``kind="fixed"`` answers every read after ``latency`` cycles.  ``kind="ddr"``
    models ``banks`` banks with one open row each: a row hit costs tCL, a miss on
    an idle bank tRCD + tCL, a conflict with another open row tRP + tRCD + tCL.
    ``jitter`` adds a seeded random 0..jitter cycles; ``ready_drop`` is the
    probability that the model deasserts ready on a cycle (stress).
    """

    kind: str = "fixed"
    latency: int = 4
    tRCD: int = 4
    tCL: int = 4
    tRP: int = 4
    banks: int = 8
    row_bytes: int = 2048
    jitter: int = 0
    ready_drop: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "ddr"):
            raise ConfigError(f"dram kind {self.kind!r}: must be 'fixed' or 'ddr'")
        for name in ("latency", "tRCD", "tCL", "tRP", "jitter"):
            if not 0 <= getattr(self, name) <= MAX_DRAM_CYCLES:
                raise ConfigError(f"dram {name}={getattr(self, name)}: must be 0..{MAX_DRAM_CYCLES} cycles "
                                  "(DRAM answers in tens to hundreds of MMU cycles; more only slows the simulators)")
        if not _is_pow2(self.banks) or not _is_pow2(self.row_bytes) or self.row_bytes < 8:
            raise ConfigError("dram banks and row_bytes: must be powers of two (row_bytes >= 8)")
        if not 0.0 <= self.ready_drop < 1.0:
            raise ConfigError(f"dram ready_drop={self.ready_drop}: must be in [0, 1)")

    @property
    def worst_read_cycles(self) -> int:
        """The longest one read can take: what a testbench's no-progress timeout must allow per access."""
        base = self.latency if self.kind == "fixed" else self.tRP + self.tRCD + self.tCL
        return base + self.jitter


@dataclass(frozen=True)
class MMUConfig:
    """An MMU instance: two TLBs, the page-walk cache, address width, DRAM timing."""

    itlb: TLBConfig = field(default_factory=lambda: TLBConfig(entries=16, ways=16, policy=Policy.LRU))
    dtlb: TLBConfig = field(default_factory=TLBConfig)
    pwc_entries: int = 8  # 0 turns the page-walk cache off
    maxphyaddr: int = 40  # M in the SDM: physical address width
    lfsr_seed: int = 0xACE1  # seed of the RANDOM policy's LFSR (hardware reset value)
    id_bits: int = 8  # width of the request tag the response echoes
    dram: DRAMTiming = field(default_factory=DRAMTiming)

    def __post_init__(self) -> None:
        if not 32 <= self.maxphyaddr <= 52:
            raise ConfigError(f"maxphyaddr={self.maxphyaddr}: must be between 32 and 52 (SDM: MAXPHYADDR <= 52)")
        if self.pwc_entries < 0 or (self.pwc_entries and not _is_pow2(self.pwc_entries)):
            raise ConfigError(f"pwc_entries={self.pwc_entries}: must be 0 or a power of two")
        if not 0 < self.lfsr_seed < 1 << 16:
            raise ConfigError(f"lfsr_seed={self.lfsr_seed:#x}: must be a non-zero 16-bit value")
        if not 1 <= self.id_bits <= 32:
            raise ConfigError(f"id_bits={self.id_bits}: must be between 1 and 32")

    def replace(self, **changes) -> "MMUConfig":
        return dataclasses.replace(self, **changes)

    def check_buildable(self) -> None:
        """Refuse a model-only configuration that the hardware cannot build (``TLBConfig.check_buildable``)."""
        self.itlb.check_buildable()
        self.dtlb.check_buildable()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for t in ("itlb", "dtlb"):
            d[t]["policy"] = d[t]["policy"].value
            del d[t]["model_only"]
        return d

    @classmethod
    def from_dict(cls, d: dict, *, model_only: bool = False) -> "MMUConfig":
        """The configuration of a ``to_dict`` object; ``model_only``: its TLBs are for the model only."""
        d = dict(d)
        for t in ("itlb", "dtlb"):
            if t in d:
                d[t] = TLBConfig(**{**d[t], "model_only": model_only})
        if "dram" in d:
            d["dram"] = DRAMTiming(**d["dram"])
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"config: {e}") from None



T = TLBConfig
# (name, why it exists, configuration): the one table of named configurations.
_PRESET_TABLE: tuple[tuple[str, str, MMUConfig], ...] = (
    ("default", "the model/config.py defaults: ITLB 16 entries fully associative LRU, DTLB 32 x 4-way PLRU, PWC 8",
     MMUConfig()),
    ("fa_lru", "fully associative LRU TLBs: one set, every lookup compares every way",
     MMUConfig(itlb=T(8, 8, Policy.LRU, 4), dtlb=T(16, 16, Policy.LRU, 4))),
    ("fifo4", "small 4-way FIFO TLBs, so that replacement happens often; 4-bit ids wrap every 16 requests",
     MMUConfig(itlb=T(8, 4, Policy.FIFO, 2), dtlb=T(16, 4, Policy.FIFO, 2), id_bits=4)),
    ("fifo64x4", "FIFO pointers in many sets: a 64-entry 4-way DTLB (16 sets) and a 2-way ITLB",
     MMUConfig(itlb=T(16, 2, Policy.FIFO, 2), dtlb=T(64, 4, Policy.FIFO, 4))),
    ("random", "LFSR (random) replacement with a non-default seed; MAXPHYADDR 44",
     MMUConfig(itlb=T(8, 2, Policy.RANDOM, 2), dtlb=T(16, 4, Policy.RANDOM, 4), lfsr_seed=0x1D0F, maxphyaddr=44)),
    ("nopwc", "page-walk cache off (every walk reads four levels), 2-way PLRU, MAXPHYADDR 36",
     MMUConfig(itlb=T(8, 2, Policy.PLRU, 2), dtlb=T(16, 2, Policy.PLRU, 2), pwc_entries=0, maxphyaddr=36)),
    ("tiny_m52", "the smallest legal design: 1- and 2-entry direct-mapped TLBs, a 1-entry PWC, 1-bit ids, "
                 "MAXPHYADDR 52 (the widest)",
     MMUConfig(itlb=T(1, 1, Policy.PLRU, 1), dtlb=T(2, 1, Policy.LRU, 1), pwc_entries=1, maxphyaddr=52,
               id_bits=1)),
    ("m32_plru", "MAXPHYADDR 32 (the narrowest), 8-way PLRU, 3-bit ids",
     MMUConfig(itlb=T(4, 4, Policy.PLRU, 4), dtlb=T(16, 8, Policy.PLRU, 2), pwc_entries=4, maxphyaddr=32,
               id_bits=3)),
    ("plru128x8", "a large DTLB (128 x 8-way PLRU, 8 superpage entries) and a 16-entry PWC: the size end",
     MMUConfig(itlb=T(32, 4, Policy.PLRU, 4), dtlb=T(128, 8, Policy.PLRU, 8), pwc_entries=16)),
)
del T

PRESETS: dict[str, MMUConfig] = {name: cfg for name, _, cfg in _PRESET_TABLE}
PRESET_DOCS: dict[str, str] = {name: doc for name, doc, _ in _PRESET_TABLE}


def hardware_key(cfg: MMUConfig) -> str:
    """Configurations that build the same hardware have the same key (DRAM timing is testbench-only)."""
    d = cfg.to_dict()
    d.pop("dram", None)
    return json.dumps(d, sort_keys=True)


def hardware_name(cfg: MMUConfig) -> str:
    """A name for the hardware ``cfg`` builds: the preset's (``PRESETS``) when it is one, else ``cfg-`` and a hash,
    so that builds and Verilog files of two configurations never share a name."""
    key = hardware_key(cfg)
    for name, known in PRESETS.items():
        if hardware_key(known) == key:
            return name
    return "cfg-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def preset(name: str) -> MMUConfig:
    """The preset called ``name``; an unknown name is a ``ConfigError`` that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"--preset {name}: unknown preset (known: {', '.join(PRESETS)})") from None
