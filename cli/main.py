"""The `mmu` command: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to the handler.  Registering imports only argparse and the model's
light modules: each handler imports what is heavy (Amaranth, cocotb, numpy) when
it runs, so ``mmu run --list`` or ``mmu quiz`` starts without them
(tests/test_cli_startup.py checks it, bench/bench_startup.py measures it).  A :class:`model.errors.UserError` raised anywhere
becomes one line on stderr and exit status 2; argparse's own usage errors exit 2 too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from model.errors import UserError

# Subcommand modules, in the order `mmu --help` lists them.
COMMANDS = [
    "cli.cmd_config",
    "cli.cmd_verilog",
    "cli.cmd_sim",
    "cli.cmd_trace",
    "cli.cmd_sweep",
    "cli.cmd_run",
    "cli.cmd_snapshot",
    "cli.cmd_views",
    "cli.cmd_explain",
    "cli.cmd_quiz",
]


DISTRIBUTION = "mmu-cosim"  # pyproject.toml [project] name


def version() -> str:
    """The installed package's version (a checkout run without installing has none to report)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmu",
        description="x86-64 MMU co-simulation: Amaranth hardware, Icarus, and a Linux-like golden model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(title="subcommands", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"mmu: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
