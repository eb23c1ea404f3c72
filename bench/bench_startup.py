"""Start-up time of `mmu run --list`, as a ratio to the interpreter's own start-up (`python -c pass`).

Both commands run alternately in the same process tree, ``--reps`` times each, and
the medians are compared, so the ratio holds on a busy machine where the absolute
times do not.  `mmu run --list` imports the kernel model but neither Amaranth nor
cocotb (the handlers import those when they run; tests/test_cli_startup.py checks it).

    python bench/bench_startup.py [--reps 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "mmu run --list": [sys.executable, "-m", "cli.main", "run", "--list"],
    "mmu quiz translate": [sys.executable, "-m", "cli.main", "quiz", "translate", "-s", "1"],
    "mmu verilog --help": [sys.executable, "-m", "cli.main", "verilog", "--help"],
}


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15, help="runs of each command (default 15)")
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.reps):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd))
    base = statistics.median(times["python -c pass"])
    print(f"start-up, median of {args.reps} alternating runs (wall clock; the ratio is the figure)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<20} {med * 1000:7.1f} ms   {med / base:5.1f} x python -c pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
