"""Overhead and scaling: in-process onnxruntime vs a coordinator with 1, 2 and 3 workers.

Every party gets the same compute: one onnxruntime intra-op thread (the in-process
baseline too), one shard computed at a time per worker. The same batch of a compute-heavy
MLP is timed in each setup; all networks are up at once and the setups take turns, round
after round, so load from elsewhere on the machine falls on all alike; medians. Goals:
1 worker within 1.10x of in-process wall time (the network's overhead), 2 workers at least
1.85x the throughput of 1.

The machine's own ceiling is measured beside them: the same batch split over 2 plain
processes running onnxruntime (no network). When that ceiling is far below 2x (a busy or
small machine), no network can scale 2x there either. On a 2-core machine a third worker
has no core of its own (the coordinator and the client share them too), so 3 workers are
shown, not held to a goal.

    python benchmarks/overhead_scaling.py [--rows 8192] [--repeats 7] [--workers 1 2 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from benchlib import (
    HEAVY,
    describe,
    goal,
    interleaved,
    local_session,
    machine_note,
    medians,
    network,
    print_table,
    save_plot,
)

from shardnet.client import Client
from shardnet.demo import demo_inputs, write_demo_model

OVERHEAD_GOAL = 1.10  # 1 worker wall / in-process wall
SCALING_GOAL = 1.85  # 2 workers throughput / 1 worker throughput
IN_PROCESS = "in-process onnxruntime"
TWO_PROCESSES = "2 processes, no network"

_session = None  # the model in a ceiling process


def _load(model_path: str) -> None:
    global _session
    _session = local_session(Path(model_path))


def _run(x: np.ndarray) -> int:
    return len(_session.run(["logits"], {"x": x})[0])


def workers_label(n: int) -> str:
    return f"coordinator + {n} worker{'s' if n > 1 else ''}"


def network_job(client: Client, x: np.ndarray, expected: np.ndarray):
    def job():
        out = client.infer(HEAVY["name"], {"x": x}, outputs=["logits"])
        assert np.array_equal(out.outputs["logits"], expected)

    return job


def ceiling_job(pool: ProcessPoolExecutor, x: np.ndarray):
    halves = np.array_split(x, 2)

    def job():
        assert sum(pool.map(_run, halves)) == len(x)

    return job


def measure(tmp: Path, rows: int, repeats: int, worker_counts) -> dict[str, float]:
    """Median wall seconds per setup, by label."""
    model_path = write_demo_model(tmp / "models", **HEAVY)
    x = demo_inputs(rows, d_in=HEAVY["d_in"])["x"]
    session = local_session(model_path)
    expected = session.run(["logits"], {"x": x})[0]
    jobs = {IN_PROCESS: lambda: session.run(["logits"], {"x": x})}
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(
            ProcessPoolExecutor(
                2,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_load,
                initargs=(str(model_path),),
            )
        )
        jobs[TWO_PROCESSES] = ceiling_job(pool, x)
        for n in worker_counts:
            net = stack.enter_context(network(tmp / f"net{n}", tmp / "models", n))
            client = stack.enter_context(Client(net.coordinator.address))
            jobs[workers_label(n)] = network_job(client, x, expected)
        return medians(interleaved(jobs, repeats, warmup=2))


def report(results: dict[str, float], rows: int, repeats: int) -> None:
    print(
        f"model: {describe(HEAVY)}, batch {rows} rows "
        f"({rows * HEAVY['d_in'] * 4 / 2**20:.1f} MiB in), median of {repeats} rounds, "
        f"1 intra-op thread per worker; {machine_note()}"
    )
    local = results[IN_PROCESS]
    one = results.get(workers_label(1))
    table = []
    for label, wall in results.items():
        vs_one = f"{one / wall:.3f}" if one and label.startswith("coord") else "-"
        table.append((label, wall, f"{rows / wall:,.0f}", local / wall, vs_one))
    print_table(
        ("setup", "wall s", "rows/s", "throughput / in-process", "throughput / 1 worker"), table
    )
    ceiling = local / results[TWO_PROCESSES]
    print(f"machine ceiling (2 processes / 1): {ceiling:.3f}x")
    if one:
        ratio = one / local
        print(
            f"1 worker / in-process wall:       {ratio:.3f}x  "
            f"(goal <= {OVERHEAD_GOAL}: {goal(ratio <= OVERHEAD_GOAL)})"
        )
    two = results.get(workers_label(2))
    if one and two:
        ratio = one / two
        print(
            f"2 workers / 1 worker throughput:  {ratio:.3f}x  "
            f"(goal >= {SCALING_GOAL}: {goal(ratio >= SCALING_GOAL)}; "
            f"{ratio / ceiling:.0%} of the machine ceiling)"
        )
    three = results.get(workers_label(3))
    if one and three:
        cores = os.cpu_count() or 0
        note = f"no goal: 3 single-threaded workers on {cores} cores" if cores < 4 else ""
        print(f"3 workers / 1 worker throughput:  {one / three:.3f}x  ({note})")


def plot(results: dict[str, float], worker_counts, rows: int) -> None:
    one = results[workers_label(1)]
    counts = list(worker_counts)

    def draw(plt):
        _, ax = plt.subplots(figsize=(5.5, 4))
        speedup = [one / results[workers_label(n)] for n in counts]
        ax.plot(counts, speedup, "o-", label="shardnet")
        ax.plot(counts, counts, "--", color="grey", label="ideal (n x)")
        ax.axhline(
            one / results[TWO_PROCESSES],
            color="red",
            ls=":",
            label="machine ceiling: 2 processes, no network",
        )
        ax.axhline(one / results[IN_PROCESS], color="green", ls=":", label="in-process, 1 thread")
        ax.set(
            xlabel="workers (1 intra-op thread each)",
            ylabel="throughput / 1 worker",
            xticks=counts,
            title=f"{describe(HEAVY)}, {rows} rows",
        )
        ax.legend(fontsize=8)

    save_plot("overhead_scaling", draw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7, help="rounds")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats

    started = time.perf_counter()
    print(f"{machine_note()}; setups taking turns, {repeats} rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="shardnet-bench-") as tmp:
        results = measure(Path(tmp), args.rows, repeats, args.workers)
    print()
    report(results, args.rows, repeats)
    if 1 in args.workers:
        plot(results, args.workers, args.rows)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
