"""Wall time and peak memory of a whole process tree: one runner, its children, Ray's processes.

:func:`run_tree` starts a command and samples, every ``interval`` seconds (0.1 by default),
the process and all of its descendants with psutil (``Process.children(recursive=True)``),
summing their resident set sizes; the peak of that sum is the runner's peak memory. Under
Ray's default executor the driver's ``ray.init()`` starts the GCS server, raylet, dashboard
and log monitor as its children and the raylet starts the workers and actors, so all of
them are descendants of the CLI process and are counted; a process that daemonized itself
away from the tree would not be (the largest number of processes seen is reported, so the
reader can tell). RSS double-counts pages shared between processes (shared libraries,
Ray's object store in ``/dev/shm``): the sum is an upper bound of the memory used.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class TreeRun:
    """One finished command: wall seconds, peak summed RSS (MiB), most processes seen, output."""

    seconds: float
    peak_rss_mb: float
    processes: int
    stdout: str
    stderr: str


@dataclasses.dataclass
class _Peak:
    rss: int = 0
    processes: int = 0


def tree_rss(pid: int) -> tuple[int, int]:
    """Summed RSS in bytes of ``pid`` and all its descendants, and how many processes that is.

    Processes that end while being read are skipped; (0, 0) when ``pid`` itself is gone.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = seen = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
            seen += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total, seen


def _sample(pid: int, peak: _Peak, stop: threading.Event, interval: float) -> None:
    while not stop.is_set():
        rss, n = tree_rss(pid)
        peak.rss = max(peak.rss, rss)
        peak.processes = max(peak.processes, n)
        stop.wait(interval)


def child_env(threads: int | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every runner gets: this worktree first on ``PYTHONPATH``, Ray without
    auth prompts, and (when ``threads``) the same OpenMP/MKL thread count for everyone."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    env.update(extra or {})
    return env


def run_tree(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    interval: float = 0.1,
    timeout: float = 7200,
) -> TreeRun:
    """Run ``cmd`` (cwd: the repository root) and sample its process tree until it exits.

    Raises RuntimeError with the end of stderr when the command fails.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        cwd=ROOT,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, stop = _Peak(), threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, peak, stop, interval), daemon=True)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise RuntimeError(f"{' '.join(cmd)} ran past {timeout} s:\n{stderr[-3000:]}") from None
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    return TreeRun(seconds, peak.rss / 2**20, peak.processes, stdout, stderr)
