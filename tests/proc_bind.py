"""Run a real Linux tool over the model's /proc files: each file is bind-mounted over /proc/NAME in a private
mount namespace (``unshare -m``), so the tool reads the model's text where it reads the kernel's."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

_SEPARATOR = "---- next command ----"


def namespace_problem() -> str | None:
    """Why private mount namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root for unshare -m and bind mounts"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode:
        return "unshare -m is not permitted here"
    return None


def require(problem: str | None) -> None:
    """Skip for ``problem`` on a developer's machine; in CI (CI=true) a missing oracle is a failure."""
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the outside oracle cannot run in CI: {problem}")
    pytest.skip(problem)


def run_with_proc(tmp_path, files: dict[str, str], commands: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The stdout of each of ``commands`` (shell words), run in one namespace where each /proc/NAME reads the
    given text.  A command that fails fails the whole run, with its stderr."""
    mounts = []
    for name, text in files.items():
        path = tmp_path / name.replace("/", "_")
        path.write_text(text)
        mounts.append(f"mount --bind {shlex.quote(str(path))} /proc/{name}")
    runs = f" && echo '{_SEPARATOR}' && ".join(commands)
    script = " && ".join(mounts + [runs])
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=False,
                            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LC_ALL": "C", **(env or {})})
    assert result.returncode == 0, f"{script}\n{result.stderr}"
    return result.stdout.split(_SEPARATOR + "\n")
