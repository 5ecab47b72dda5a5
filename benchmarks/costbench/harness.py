"""The child-process harness of the cost benchmark: the runner that starts one child per configuration, the
timing and peak-memory helpers the children use, and the probe of the environment recorded with the results."""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

GB = 1024 ** 3
MB = 1024 ** 2

Work = Callable[[Dict[str, Any]], Dict[str, Any]]


# ============================================================================================ child side
def now() -> float:
    """The clock the children time with (``time.perf_counter``)."""
    return time.perf_counter()


def sync(device) -> None:
    """Wait for the pending work of ``device`` (CUDA) before reading the clock; nothing on CPU."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Memory:
    """Peak memory rise of this (child) process from the moment it is created.

    Args:
        device: the ``torch.device`` measured: CUDA reads ``torch.cuda.max_memory_allocated`` (peak statistics
            reset here), CPU the peak resident set size ``resource.getrusage(RUSAGE_SELF).ru_maxrss``.
    """

    def __init__(self, device):
        import torch
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.base = torch.cuda.memory_allocated(device)
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux

    def rise_mb(self) -> float:
        """The peak since creation minus the memory in use at creation, in MiB."""
        import torch
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / MB
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base) / MB

    def peak_mb(self) -> float:
        """The peak of the process (CUDA: of the device since creation), in MiB."""
        import torch
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def adaptive_counts(first_s: float, warmup: int, repeats: int, budget_s: float) -> Tuple[int, int]:
    """Fewer warm-ups and repeats for slow configurations: keep one configuration near ``budget_s``.

    At least one repeat (two when ``repeats >= 2``) is always kept.

    Args:
        first_s: the duration of the first (warm-up) iteration.
        warmup: the warm-up iterations asked for, the first one included.
        repeats: the timed repeats asked for.
        budget_s: the seconds one configuration may take.

    Returns:
        The warm-up iterations still to run after the first one, and the timed repeats.
    """
    left = max(budget_s - first_s, 0.0)
    extra_warmup = max(warmup - 1, 0)
    if extra_warmup and first_s * (extra_warmup + repeats) > left:
        extra_warmup = 0
    fit = int(left // max(first_s, 1e-9)) - extra_warmup
    return extra_warmup, max(min(repeats, fit), min(2, repeats))


def _child_entry(conn, work: Work, cfg: Dict[str, Any]) -> None:
    """Run ``work(cfg)`` in this child process and send its result (or the error) back through ``conn``."""
    import warnings
    warnings.filterwarnings("ignore")
    try:
        result = work(cfg)
        result["status"] = "ok"
    except Exception as exc:           # reported as a failed row, never hidden
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500],
                  "traceback": traceback.format_exc()[-2000:]}
    import torch
    result["threads"] = torch.get_num_threads()
    conn.send(result)
    conn.close()


# ============================================================================================ parent side
class Runner:
    """Starts one child process per configuration and keeps the run's clock.

    Args:
        start_method: ``"forkserver"`` (``"spawn"`` where the platform has no forkserver) or ``"spawn"``.
        budget_s: the time budget of the whole run, in seconds.
        child_timeout_s: a child still running after this many seconds is killed.
    """

    def __init__(self, start_method: str, budget_s: float, child_timeout_s: float):
        if start_method == "forkserver" and "forkserver" not in mp.get_all_start_methods():
            start_method = "spawn"
        self.start_method = start_method
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # The children unpickle the workload functions by module name: each child takes this process's
            # sys.path (benchmarks/ on it) before unpickling, so it imports costbench.workloads itself when the
            # server has not. The server preloads it where it inherits sys.path (CPython gh-117378: fixed in
            # 3.12.8 and 3.13.1; before, a preload that is not found on the default path is skipped silently).
            self.ctx.set_forkserver_preload(["torch", "torch_geometric", "gca.model", "gca.testing.dense",
                                             "gca.backbones", "gca.train.step", "costbench.workloads"])
        self.spawn_ctx = mp.get_context("spawn")
        self.t_start = time.monotonic()
        self.deadline = self.t_start + budget_s
        self.child_timeout_s = child_timeout_s

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t_start

    def left(self) -> float:
        """Seconds left of the run's budget (negative once it is spent)."""
        return self.deadline - time.monotonic()

    def run(self, work: Work, cfg: Dict[str, Any], env: Optional[Dict[str, str]] = None,
            fresh: bool = False) -> Dict[str, Any]:
        """Run ``work(cfg)`` in a child and return its result with ``wall_s`` and the load average.

        Args:
            work: a workload function of :mod:`costbench.workloads` (pickled by reference).
            cfg: its configuration.
            env: run in a fresh ``spawn`` interpreter whose environment has ``env`` applied (a value of
                ``None`` removes the variable), for settings read when the libraries load, such as
                ``OMP_WAIT_POLICY``.
            fresh: run in a fresh ``spawn`` interpreter.

        Returns:
            The child's result (``status`` ``"ok"`` or ``"failed"`` with a ``reason``), with ``wall_s``,
            ``load_avg_1min_start`` and ``load_avg_1min_end`` added.
        """
        ctx = self.spawn_ctx if (env or fresh) else self.ctx
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_entry, args=(send, work, cfg), daemon=True)
        load_start = os.getloadavg()[0]
        saved = {key: os.environ.get(key) for key in (env or {})}
        t0 = time.monotonic()
        try:
            for key, value in (env or {}).items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            proc.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        send.close()
        result: Optional[Dict[str, Any]] = None
        if recv.poll(self.child_timeout_s):
            try:
                result = recv.recv()
            except EOFError:
                result = None
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        if result is None:
            code = proc.exitcode
            why = ("killed (signal 9: out of memory?)" if code == -9 else
                   f"timed out after {self.child_timeout_s:.0f} s" if code in (None, -15) else f"exit code {code}")
            result = {"status": "failed", "reason": f"child process {why}"}
        result["wall_s"] = time.monotonic() - t0
        result["load_avg_1min_start"] = load_start
        result["load_avg_1min_end"] = os.getloadavg()[0]
        return result


def environment(args, device: str) -> Dict[str, Any]:
    """Versions, threads, CPU and allocator settings recorded with the results.

    Args:
        args: the parsed command line (:func:`costbench.cli.parse_args`).
        device: the device the run measures (``"cpu"``, ``"cuda"``, ...).

    Returns:
        The ``environment`` row of ``cost.json``.
    """
    import torch
    import torch_geometric
    import torch_geometric.typing as pyg_typing
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    env = {key: os.environ.get(key, "unset") for key in
           ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
            "MKL_NUM_THREADS")}
    row = {
        "suite": "environment", "status": "ok",
        "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
        "torch_scatter_installed": bool(pyg_typing.WITH_TORCH_SCATTER),
        "threads": args.threads or torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpu_model": cpu,
        "device": device, "python": platform.python_version(), "platform": platform.platform(),
        "allocator": {k: env[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")},
        "thread_env": {k: env[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
        "load_avg_1min_start": os.getloadavg()[0], "start_method": args.start_method,
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick, "seed": args.seed,
        "max_memory_gb": args.max_memory_gb, "time_cap_s": args.time_cap, "budget_min": args.budget_min,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(Exception):
        row["mem_total_gb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return row
