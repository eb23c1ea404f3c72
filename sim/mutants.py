"""Mutation testing of the hardware: does the regression notice a realistic bug in ``hw/``?

The catalogue (``sim/mutants.toml``) lists hardware mutants, each a file of ``hw/``, an exact snippet of
it, its replacement and what bug it models.  For every mutant the harness copies the packages (``hw``,
``model``, ``sim``, ``replay``) into a scratch folder, checks that the snippet occurs exactly once there
(so a refactor of ``hw/`` breaks the catalogue loudly instead of silently testing nothing), replaces it,
and runs the regression subset on the copy in a child process (its own Verilog builds): the random tests
first, then the directed ones, stopping at the first failure.  The working tree is never written.

A mutant is *killed* by the first test that fails on it; the kill only counts if the same test with the same
seed passes on the unmutated copy (checked once per test).  The table lists each mutant, the test that
killed it and whether that test is random or directed; the last line reads
``N of M mutants killed, K by random tests alone``.

    python -m sim.mutants [--seed N] [--seeds K] [-j J] [--random-only] [--ops N] [--only NAME,...]

``make mutants`` runs it (``SEED``, ``SEEDS``, ``MUTANTS`` and ``JOBS`` pass through).  Every random
test's seed is printed; the same ``--seed`` replays the whole table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from model.errors import UserError

CATALOGUE = Path(__file__).with_name("mutants.toml")
PKG_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hw", "model", "sim", "replay")  # what the regression needs on the simulator side
CHILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Mutant:
    name: str
    bug_class: str
    file: str  # relative to the package root, under hw/
    original: str
    replacement: str
    description: str

    def check(self, root: Path) -> str:
        """The text of ``root / file``; refuse unless the snippet occurs in it exactly once."""
        text = (root / self.file).read_text()
        count = text.count(self.original)
        if count != 1:
            raise UserError(f"mutant {self.name}: its snippet occurs {count} times in {self.file} "
                            f"(must be exactly once; update sim/mutants.toml to the current hw/)")
        return text

    def apply(self, root: Path) -> None:
        """Replace the snippet in ``root / file`` (a copy: never the working tree)."""
        (root / self.file).write_text(self.check(root).replace(self.original, self.replacement))


def load(path: Path = CATALOGUE) -> list[Mutant]:
    data = tomllib.loads(path.read_text())
    mutants = []
    for entry in data.get("mutant", []):
        try:
            m = Mutant(entry["name"], entry["class"], entry["file"], entry["original"], entry["replacement"],
                       entry["description"])
        except KeyError as e:
            raise UserError(f"{path}: mutant {entry.get('name', '?')} has no {e.args[0]!r}") from None
        if not m.file.startswith("hw/"):
            raise UserError(f"{path}: mutant {m.name} edits {m.file}: mutants change hw/ only")
        if m.original == m.replacement:
            raise UserError(f"{path}: mutant {m.name}: the replacement equals the original")
        mutants.append(m)
    names = [m.name for m in mutants]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise UserError(f"{path}: mutant names must be unique: {', '.join(dups)}")
    return mutants


def copy_tree(src: Path, dest: Path) -> Path:
    """The packages of ``src`` copied into ``dest`` (no caches, no builds)."""
    for pkg in PACKAGES:
        shutil.copytree(src / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def check_all(mutants: list[Mutant], root: Path = PKG_ROOT) -> None:
    """Every snippet occurs exactly once in ``root``'s hw/ (raises UserError naming the first that does not)."""
    for m in mutants:
        m.check(root)


# ---------------------------------------------------------------------------------------------
# the regression subset, run inside a copy


@dataclass(frozen=True)
class Step:
    kind: str  # "random" or "directed"
    module: str
    test: str
    config: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.test}-{self.config}" + (f" seed {self.seed}" if self.kind == "random" else "")


def plan(seed: int, seeds: int, random_only: bool) -> list[Step]:
    """The order tests are tried in: every random test with each seed, then the directed tests."""
    from sim import regression as G

    steps = [Step("random", G.RANDOM, t, c, seed + i) for i in range(seeds) for t, cfgs in G.RANDOM_TESTS
             for c in cfgs]
    if not random_only:
        steps += [Step("directed", G.DIRECTED, t, c, seed) for t, cfgs in G.DIRECTED_TESTS for c in cfgs]
    return steps


def run_steps(steps: list[Step], ops: int | None) -> dict:
    """Child side: run ``steps`` in order on this tree, stop at the first failure."""
    from model.config import PRESETS
    from sim import regression as G
    from sim import runner as R

    for step in steps:
        params = dict(G.PARAMS.get((step.test, step.config)) or {})
        if ops and step.kind == "random":
            params["ops"] = ops
        out = R.run_test(step.module, step.test, PRESETS[step.config], step.config, seed=step.seed,
                         test_id=f"{step.test}-{step.config}-{step.seed}", params=params,
                         replay=f"python -m sim.mutants --seed {step.seed}")
        if not out.passed:
            first = (out.message or "failed").strip().splitlines()[0]
            return {"killed_by": step.__dict__, "message": first}
    return {"killed_by": None, "message": ""}


def _child(tree: Path, steps: list[Step], ops: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMU_COSIM") and k not in ("SEED", "SEEDS")}
    env.update(PYTHONPATH=str(tree), MMU_SIM_BUILD=str(tree / "sim_build"), WAVES="")
    spec = json.dumps({"steps": [s.__dict__ for s in steps], "ops": ops})
    try:
        proc = subprocess.run([sys.executable, "-m", "sim.mutants", "--child", spec], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"killed_by": None, "message": "", "error": f"timed out after {CHILD_TIMEOUT_S} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"killed_by": None, "message": "", "error": f"child exited {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def hunt(mutant: Mutant | None, steps: list[Step], ops: int | None, scratch: Path) -> dict:
    """Copy, mutate (None: the original), run ``steps``; the scratch copy is removed afterwards."""
    tree = Path(tempfile.mkdtemp(prefix=f"mutant-{mutant.name if mutant else 'original'}-", dir=scratch))
    try:
        copy_tree(PKG_ROOT, tree)
        if mutant is not None:
            mutant.apply(tree)
        return _child(tree, steps, ops)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.mutants", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", help="seed of the random tests (default: $SEED, else a fresh one)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per random test: SEED, SEED+1, ... (default 1)")
    p.add_argument("-j", "--jobs", type=int, default=None, help="mutants run at once (default: $JOBS, else 1)")
    p.add_argument("--random-only", action="store_true", help="only the random tests")
    p.add_argument("--ops", type=int, help="operations per random test (default: the regression's)")
    p.add_argument("--only", help="comma-separated mutant names (default: the whole catalogue)")
    p.add_argument("--catalogue", type=Path, default=CATALOGUE)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(run_steps([Step(**s) for s in spec["steps"]], spec["ops"])), flush=True)
        return 0
    try:
        return _table(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _int_option(text: str | None, env: str, default: int, what: str) -> int:
    text = text if text is not None else os.environ.get(env, "").strip() or None
    if text is None:
        return default
    try:
        value = int(str(text), 0)
    except ValueError:
        raise UserError(f"{what} {text!r}: must be an integer") from None
    if value < 0:
        raise UserError(f"{what} {value}: must not be negative")
    return value


def _table(args) -> int:
    from sim import runner as R

    mutants = load(args.catalogue)
    check_all(mutants)
    if args.only or os.environ.get("MUTANTS", "").strip():
        wanted = [n.strip() for n in (args.only or os.environ["MUTANTS"]).split(",") if n.strip()]
        known = {m.name: m for m in mutants}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise UserError(f"--only {','.join(unknown)}: not in {args.catalogue.name}")
        mutants = [known[n] for n in wanted]
    seed = _int_option(args.seed, "SEED", R.fresh_seed(), "--seed")
    seeds = max(1, _int_option(args.seeds, "SEEDS", 1, "--seeds"))
    jobs = max(1, _int_option(args.jobs, "JOBS", 1, "-j"))
    steps = plan(seed, seeds, args.random_only)
    print(f"mutants: {len(mutants)} from {args.catalogue.name}, seed {seed} ({seeds} per random test), "
          f"{len(steps)} tests each at most, {jobs} at a time; replay: python -m sim.mutants --seed {seed}"
          + (" --random-only" if args.random_only else "") + (f" --ops {args.ops}" if args.ops else ""),
          flush=True)
    t0 = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="mmu-mutants-"))
    try:
        with ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(hunt, m, steps, args.ops, scratch): m for m in mutants}
            done = {}
            for n, f in enumerate(as_completed(futures), 1):
                m, r = futures[f], f.result()
                done[m.name] = r
                verdict = Step(**r["killed_by"]).label if r.get("killed_by") else r.get("error") or "survived"
                print(f"  [{n}/{len(mutants)}] {m.name}: {verdict}", flush=True)
            results = [(m, done[m.name]) for m in mutants]
            # a kill counts only if the killing test passes on the original design with the same seed
            killers = {json.dumps(r["killed_by"], sort_keys=True) for _, r in results if r.get("killed_by")}
            baseline = dict(pool.map(lambda k: (k, hunt(None, [Step(**json.loads(k))], args.ops, scratch)),
                                     sorted(killers)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    width = max(len(m.name) for m in mutants)
    print(f"\n{'mutant':<{width}}  {'class':<12} {'killed by':<34} kind")
    killed = by_random = 0
    broken = []
    for m, r in results:
        k = r.get("killed_by")
        key = json.dumps(k, sort_keys=True) if k else None
        if key and baseline[key].get("killed_by"):
            broken.append(f"{Step(**k).label} fails on the original design too: {baseline[key]['message']}")
            k = None
        if k:
            step = Step(**k)
            killed += 1
            by_random += step.kind == "random"
            print(f"{m.name:<{width}}  {m.bug_class:<12} {step.label:<34} {step.kind}")
        else:
            print(f"{m.name:<{width}}  {m.bug_class:<12} {'SURVIVED':<34} -" + (f"  ({r['error']})" if r.get("error") else ""))
    for line in sorted(set(broken)):
        print(f"warning: {line}")
    print(f"\nwall {time.monotonic() - t0:.0f} s")
    print(f"{killed} of {len(mutants)} mutants killed, {by_random} by random tests alone")
    return 0 if killed == len(mutants) and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
