"""What the bench scripts share: CPU-time measurement and the synthetic-trace options (printing the seed)."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass


def synthetic_args(description: str) -> argparse.Namespace:
    """--accesses and --seed of the synthetic-trace benches; prints the seed so a run replays."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--accesses", type=int, default=12_000_000, help="synthetic trace length (default 12 million)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("MMU_SEED", "1")))
    args = ap.parse_args()
    print(f"seed {args.seed} (replay with --seed {args.seed} or MMU_SEED={args.seed})")
    return args


@dataclass
class Took:
    """CPU and wall-clock seconds; rates use CPU time, which other jobs on the machine do not inflate."""

    cpu: float
    wall: float

    def rate(self, n: int) -> str:
        return f"{n / self.cpu:12,.0f}"

    def __str__(self) -> str:
        return f"{self.cpu:.2f} s CPU, {self.wall:.2f} s wall"


def timed(fn) -> tuple[object, Took]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, Took(time.process_time() - c, time.perf_counter() - w)
