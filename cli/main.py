"""The `mmu` command: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to the handler.  Only the named subcommand's module is imported, and
it registers with light imports: each handler imports what is heavy (Amaranth,
cocotb, numpy) when it runs, so ``mmu run --list`` or ``mmu quiz`` starts without
them (tests/test_cli_startup.py checks it, bench/bench_startup.py measures it).  A :class:`model.errors.UserError` raised anywhere
becomes one line on stderr and exit status 2; argparse's own usage errors exit 2 too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from model.errors import UserError

# Subcommand -> the module that registers it, in the order `mmu --help` lists them.  A command line
# that names a subcommand imports only its module (tests/test_cli_startup.py checks this table).
COMMANDS = {
    "config": "cli.cmd_config",
    "verilog": "cli.cmd_verilog",
    "sim": "cli.cmd_sim",
    "trace": "cli.cmd_trace",
    "sweep": "cli.cmd_sweep",
    "run": "cli.cmd_run",
    "snapshot": "cli.cmd_snapshot",
    **dict.fromkeys(("free", "top", "vmstat", "maps", "buddyinfo", "slabinfo"), "cli.cmd_views"),
    "explain": "cli.cmd_explain",
    "quiz": "cli.cmd_quiz",
}


DISTRIBUTION = "mmu-cosim"  # pyproject.toml [project] name


def version() -> str:
    """The installed package's version (a checkout run without installing has none to report)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install .)"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line with a pointer to --help, instead of the usage text.

    Subcommand parsers are of the same class (``add_subparsers`` makes them with ``type(self)``).
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with a known subcommand first, only that subcommand's module is imported."""
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    wanted = COMMANDS.get(words[0]) if words else None
    parser = OneLineParser(
        prog="mmu",
        description="x86-64 MMU co-simulation: Amaranth hardware, Icarus, and a Linux-like golden model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(title="subcommands", metavar="COMMAND", required=True)
    for module in [wanted] if wanted else dict.fromkeys(COMMANDS.values()):
        importlib.import_module(module).register(sub)
    for command in sub.choices.values():
        command.set_defaults(parser=command)  # so that leftover words are blamed on the subcommand
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser(argv).parse_known_args(argv)
    if extra:
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"mmu: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
