"""procps-ng's own ``free`` as the oracle for model/user/procps.py: the installed 4.x and procps-ng 3.3.17
from Debian 11's packages (downloaded once with apt-get into a private apt directory, extracted, never
installed) read the model's /proc/meminfo, bind-mounted over the kernel's, and must print what
``free_text(..., procps="4"|"3.3")`` and ``mmu free --procps 4|3.3`` print, byte for byte, for every option set.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from proc_bind import namespace_problem, require, run_with_proc

from cli.main import main
from model.proc import show_mem
from model.user.procps import free_text
from model.user.workload import run_workload

# Debian 11 (bullseye) ships procps-ng 3.3.17 as the packages procps (free) and libprocps8 (libprocps.so.8).
BULLSEYE = ("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bullseye\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
PACKAGES = ("procps", "libprocps8")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmu-cosim" / "procps-3.3.17"
LIB_DIR = "lib/x86_64-linux-gnu"

# The option words of free and what each means, after free.c's getopt loop (both versions).
UNIT_WORDS = {"-b": ("b", False), "-k": ("k", False), "-m": ("m", False), "-g": ("g", False),
              "--tebi": ("t", False), "--pebi": ("p", False), "--kilo": ("k", True), "--mega": ("m", True),
              "--giga": ("g", True), "--tera": ("t", True), "--peta": ("p", True), "-h": ("h", False)}
FLAG_WORDS = {"--si": "si", "-w": "wide", "-l": "lohi", "-t": "total", "-v": "committed"}
OPTION_SETS = ([""] + list(UNIT_WORDS) + [f"{u} --si".strip() for u in ("", "-b", "-k", "-m", "-g", "--tebi", "-h")]
               + ["-w", "-l", "-t", "-w -l -t", "-h -w -l -t", "-m --si -w -t", "-v", "-h -v -w -l -t"])


def free_options(option: str, procps: str) -> dict:
    """free_text's arguments for the free command line ``option``."""
    kw = {"unit": None, "si": False, "procps": procps}
    for word in option.split():
        if word in UNIT_WORDS:
            unit, si = UNIT_WORDS[word]
            kw["unit"], kw["si"] = unit, kw["si"] or si
        else:
            kw[FLAG_WORDS[word]] = True
    return kw


def options_for(procps: str) -> list[str]:
    """The option sets that version has: -v (--committed) came with 4.0.1."""
    return [o for o in OPTION_SETS if procps == "4" or "-v" not in o.split()]


def _free_version(free: str, env: dict[str, str]) -> str:
    run = subprocess.run([free, "-V"], capture_output=True, text=True, check=False, env={**os.environ, **env})
    return (run.stdout + run.stderr).strip()


def _download_3_3_17(dest: Path) -> None:
    """apt-get download of the bullseye packages with a private sources list, lists and cache (nothing of
    the machine's apt state is read or changed), then dpkg-deb -x of each into ``dest``."""
    with tempfile.TemporaryDirectory(prefix="procps-3.3.17-") as tmp:
        work = Path(tmp)
        (work / "lists" / "partial").mkdir(parents=True)
        (work / "archives" / "partial").mkdir(parents=True)
        (work / "bullseye.sources").write_text(BULLSEYE)
        (work / "status").write_text("")
        apt = [f"-oDir::Etc::sourcelist={work / 'bullseye.sources'}", "-oDir::Etc::sourceparts=/nonexistent",
               f"-oDir::State::Lists={work / 'lists'}", f"-oDir::State::status={work / 'status'}",
               f"-oDir::Cache={work}", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root",
               "-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false", "-qq"]
        for step in (["update"], ["download", *PACKAGES]):
            run = subprocess.run(["apt-get", *apt, *step], cwd=work, capture_output=True, text=True, check=False,
                                 timeout=600)
            if run.returncode:
                raise RuntimeError(f"`apt-get {' '.join(step)}` failed: {run.stderr.strip()}")
        dest.mkdir(parents=True)
        for deb in sorted(work.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def free_3_3_17() -> list[str]:
    """The command words that run procps-ng 3.3.17's free: its binary with LD_LIBRARY_PATH at its own
    libprocps.so.8.  Downloaded into CACHE on first use."""
    require(namespace_problem())
    for tool in ("apt-get", "dpkg-deb"):
        require(None if shutil.which(tool) else f"`{tool}` is not installed (Debian's apt and dpkg)")
    env = {"LD_LIBRARY_PATH": str(CACHE / LIB_DIR)}
    free = str(CACHE / "usr" / "bin" / "free")
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(CACHE.with_name(CACHE.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one downloads, the others wait for it
        if "procps-ng 3.3.17" not in (_free_version(free, env) if Path(free).exists() else ""):
            shutil.rmtree(CACHE, ignore_errors=True)
            partial = CACHE.with_name(CACHE.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            try:
                _download_3_3_17(partial)
            except (RuntimeError, subprocess.SubprocessError) as e:
                pytest.fail(f"procps-ng 3.3.17 could not be fetched from Debian 11's packages {PACKAGES}: {e}")
            partial.rename(CACHE)
    version = _free_version(free, env)
    assert "procps-ng 3.3.17" in version, f"{free} -V printed {version!r}"
    return ["env", f"LD_LIBRARY_PATH={CACHE / LIB_DIR}", free]


@pytest.fixture(scope="session")
def free_4() -> list[str]:
    """The installed free, which must be procps-ng 4.x."""
    require(namespace_problem())
    free = shutil.which("free")
    require(None if free else "`free` is not installed (Debian's procps)")
    version = _free_version(free, {})
    require(None if "procps-ng 4." in version else f"the installed free is not procps-ng 4.x: {version!r}")
    return [free]


@pytest.fixture(params=["3.3", "4"])
def real_free(request) -> tuple[str, list[str]]:
    return request.param, request.getfixturevalue("free_3_3_17" if request.param == "3.3" else "free_4")


def synthetic_meminfo(rng: random.Random) -> tuple[str, int]:
    """A /proc/meminfo (the fields procps reads, in the kernel's format) with sizes drawn from every
    magnitude free's scaling treats apart: 0, under a MiB, around MiB/GiB/TiB boundaries; and the
    min_free_kbytes 3.3.x reads when MemAvailable is 0."""
    def size(limit: int) -> int:
        scale = rng.choice((0, 1, 10, 1 << 10, 1 << 20, 1 << 30))
        return min(limit, rng.choice((scale, max(scale - 1, 0), scale + 1, rng.randrange(scale * 10 + 2))))

    total = rng.choice((rng.randrange(1 << 10, 1 << 32), (1 << 20) - 1, 1 << 20, (1 << 30) + 1))
    free = size(total)
    buffers, cached, sreclaimable = size(total - free), size(total), size(total >> 4)
    fields = {"MemTotal": total, "MemFree": free,
              "MemAvailable": rng.choice((0, size(total), total + 1, free + cached)),
              "Buffers": buffers, "Cached": cached, "Active": size(total), "Inactive": size(total),
              "Active(file)": size(cached), "Inactive(file)": size(cached), "SwapTotal": size(1 << 32),
              "Shmem": size(cached), "SReclaimable": sreclaimable, "CommitLimit": size(1 << 33),
              "Committed_AS": size(1 << 33)}
    fields["SwapFree"] = rng.randrange(fields["SwapTotal"] + 1)
    fields["CommitLimit"] = max(fields["CommitLimit"], fields["Committed_AS"])  # free -v would print a wrap
    text = "".join(f"{name + ':':<16}{value:8d} kB\n" for name, value in fields.items())
    return text, rng.randrange(1 << 8, 1 << 17)


@pytest.fixture(scope="module")
def model_meminfos() -> dict[str, tuple[str, int]]:
    """The meminfo and min_free_kbytes of finished model runs (page cache, swap in use, an OOM kill, COW,
    hugetlb)."""
    out = {}
    for name in ("swap-pressure", "oom", "file-read", "fork-cow", "hugepages"):
        k, _ = run_workload(name, mem=48 << 20 if name == "swap-pressure" else None)
        out[name] = (show_mem.meminfo(k), k.buddy.min_free_kbytes)
    return out


def compare(tmp_path, procps: str, command: list[str], meminfo: str, min_free_kbytes: int) -> list[str]:
    """Run the real free with every option set over ``meminfo``; the option sets where it differs."""
    options = options_for(procps)
    files = {"meminfo": meminfo, "sys/vm/min_free_kbytes": f"{min_free_kbytes}\n"}
    real = run_with_proc(tmp_path, files, [" ".join([*command, o]) for o in options])
    misses = []
    for option, text in zip(options, real, strict=True):
        ours = free_text(meminfo, **free_options(option, procps), min_free_kbytes=min_free_kbytes)
        if ours != text:
            misses.append(f"free {option}\n--- procps-ng {procps}:\n{text}--- model:\n{ours}")
    return misses


def test_real_free_prints_the_same_over_the_models_meminfo(tmp_path, real_free, model_meminfos):
    procps, command = real_free
    misses = [miss for text, mfk in model_meminfos.values() for miss in compare(tmp_path, procps, command, text, mfk)]
    n = len(model_meminfos) * len(options_for(procps))
    assert not misses, f"{len(misses)} of {n} outputs differ; first:\n{misses[0]}"


def test_real_free_prints_the_same_over_random_meminfos(tmp_path, real_free):
    procps, command = real_free
    seed = random.randrange(1 << 32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    misses, n = [], 0
    for _ in range(25):
        text, mfk = synthetic_meminfo(rng)
        misses += compare(tmp_path, procps, command, text, mfk)
        n += len(options_for(procps))
    assert not misses, f"seed {seed}: {len(misses)} of {n} outputs differ; first:\n{misses[0]}"


@pytest.mark.parametrize("option", ["--si", "-h -w -l -t"])
def test_mmu_free_prints_what_the_real_free_prints(tmp_path, capsys, real_free, option):
    """The command itself, not only free_text: `mmu free oom OPTIONS --procps V` against the real tool over
    the /proc/meminfo of the same run (seed 0)."""
    procps, command = real_free
    k, _ = run_workload("oom", seed=0)
    files = {"meminfo": show_mem.meminfo(k), "sys/vm/min_free_kbytes": f"{k.buddy.min_free_kbytes}\n"}
    [real] = run_with_proc(tmp_path, files, [" ".join([*command, option])])
    assert main(["free", "oom", *option.split(), "--procps", procps]) == 0
    assert capsys.readouterr().out == real
