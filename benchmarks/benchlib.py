"""What the benchmark scripts share: the compute-heavy model, how a network is started, how
time is measured, and how tables and plots are written. Not a benchmark itself."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import onnxruntime as ort

from shardnet.launch import LocalNetwork

# Compute-bound enough that a shard's arithmetic dwarfs its transport: 256->1024x4->10
# is ~3.4 M multiply-adds per row (8192 rows: ~0.5 s on one core of the dev machine).
HEAVY = {"d_in": 256, "hidden": 1024, "depth": 4, "d_out": 10, "name": "heavy"}
# Every worker gets the same compute: one onnxruntime thread, one shard at a time.
WORKER_FLAGS = ("--intra-op-threads", "1", "--max-concurrency", "1")
OUT_DIR = Path(__file__).resolve().parent / "out"


def describe(model: dict) -> str:
    return f"MLP {model['d_in']}->{model['hidden']}x{model['depth']}->{model['d_out']}"


def walls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeats` calls of `fn`, after `warmup` untimed ones (session init,
    connections, the coordinator's first throughput sample)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_wall(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    return statistics.median(walls(fn, repeats, warmup))


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall seconds of each function, `rounds` times, taking turns (a, b, c, a, b, c, ...)
    so that load from elsewhere on the machine falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {label: statistics.median(values) for label, values in times.items()}


def machine_note() -> str:
    """Cores and load average: other work on the machine shows up in every figure."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} CPU cores, load average {load}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def local_session(model_path: Path, threads: int = 1) -> ort.InferenceSession:
    """In-process onnxruntime with the compute one worker gets."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def network(
    workdir: Path,
    models: Path,
    workers: int,
    *coordinator_flags: str,
    worker_flags: Sequence[str] = WORKER_FLAGS,
) -> Iterator[LocalNetwork]:
    """A coordinator and `workers` workers as real processes, all stopped on exit."""
    with LocalNetwork(workdir, models) as net:
        net.start_coordinator(*coordinator_flags)
        for _ in range(workers):
            net.start_worker(*worker_flags)
        net.wait_for_workers(workers)
        yield net


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Right-aligned columns; floats with 3 decimals unless already formatted."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def goal(ok: bool) -> str:
    return "yes" if ok else "NO"


def save_plot(name: str, draw: Callable, out_dir: Path = OUT_DIR) -> Path | None:
    """Call `draw(plt)` and save the current figure as OUT_DIR/name.png; a no-op (with a
    note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    draw(plt)
    plt.tight_layout()
    plt.savefig(path, dpi=110)
    plt.close("all")
    print(f"plot: {path}")
    return path
