"""Helpers shared by the benchmarks: peer-tool virtual environments and measured subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

VENVS = Path(__file__).resolve().parent.parent / "bench-out" / "venvs"


def bench_n(default: int, quick: int) -> int:
    """The benchmark size: REACT_BENCH_N=quick gives each benchmark its quick trial size, a number that size."""
    value = os.environ.get("REACT_BENCH_N", "")
    return quick if value == "quick" else int(value) if value else default


def revision() -> str:
    """The commit measured, marked "+dirty" when packages/ differ from it (benchmarks run the working tree)."""
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "packages"], cwd=root).returncode != 0
    return head.strip() + ("+dirty" if dirty else "")


def tool(name: str) -> str:
    """A console script installed beside the Python running the benchmarks (the nox or dev venv)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name}: not installed in {Path(sys.executable).parent}")
    return found


def peer_venv(name: str, requirements: list[str]) -> Path:
    """bench-out/venvs/NAME with `requirements` installed (created once, reused while they are unchanged)."""
    path = VENVS / name
    marker = path / "bench-requirements.txt"
    wanted = "\n".join(requirements)
    if marker.exists() and marker.read_text() == wanted:
        return path
    print(f"creating the {name} venv: pip install {' '.join(requirements)}", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", *requirements], check=True)
    marker.write_text(wanted)
    return path


def busy_cpu_seconds() -> float:
    """CPU seconds this machine spent busy (or stolen by the hypervisor) since boot, all cores."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(max_wait_s: float = 600) -> None:
    """Wait until the machine has been idle for 5 s (others may share it); give up after `max_wait_s`."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        busy = busy_cpu_seconds()
        time.sleep(5)
        if (busy_cpu_seconds() - busy) / (5 * os.cpu_count()) < 0.03:
            return
    print("warning: the machine is still busy; measuring anyway", flush=True)


# Runs the command as the child of a small Python process and reports its rusage. Measured from here
# instead, ru_maxrss would include this (large) process's RSS: Linux carries the pre-exec RSS of a
# forked child into its maxrss.
_RUSAGE = """import json, os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
usage, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
with open(sys.argv[1], "w") as f:
    json.dump({"wall": time.perf_counter() - start, "maxrss_kb": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime, "wrapper_cpu": own.ru_utime + own.ru_stime}, f)
sys.exit(code)
"""


def measure(cmd: list[str], log: Path, before=None, tries: int = 3) -> dict:
    """Run `cmd` to completion with output to `log`, after `before()` (e.g. removing its outputs); its wall
    time, peak RSS and CPU use. A run disturbed by other processes is retried; the least disturbed counts.

    Peak RSS is the kernel's ru_maxrss: exact (no sampling), for the largest single process of the
    command's process tree (DataLoader workers are not summed with their parent).
    `other_cpu_share` is the share of the machine's CPU time that went to anything else meanwhile.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    usage_file = log.with_suffix(".rusage.json")
    best = None
    for attempt in range(tries):
        if before:
            before()
        wait_until_quiet()
        print("$ " + " ".join(cmd), flush=True)
        with open(log, "w") as f:
            busy = busy_cpu_seconds()
            code = subprocess.call([sys.executable, "-c", _RUSAGE, str(usage_file), *cmd], stdout=f,
                                   stderr=subprocess.STDOUT)
            busy = busy_cpu_seconds() - busy
        if code:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"exit status {code}: {' '.join(cmd)}\n(log: {log})\n{tail}")
        usage = json.loads(usage_file.read_text())
        wall, other = usage["wall"], busy - usage["cpu"] - usage["wrapper_cpu"]
        run = {"wall_s": round(wall, 2), "peak_rss_mb": round(usage["maxrss_kb"] / 1024),
               "cpu_s": round(usage["cpu"], 1), "other_cpu_share": round(max(0.0, other) / (wall * os.cpu_count()), 3)}
        if best is None or run["other_cpu_share"] < best["other_cpu_share"]:
            best = run
        if run["other_cpu_share"] <= 0.03:
            break
        print(f"  disturbed: {run['other_cpu_share']:.0%} of the CPU went to other processes"
              + ("; again" if attempt + 1 < tries else ""), flush=True)
    return best
