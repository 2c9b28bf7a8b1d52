"""Spot checks: how often a cheater is caught, measured against 1 - (1 - p)^k.

A coordinator with spot-check probability p, 2 honest workers and 1 cheater (`--fault
noise`, wrong on every shard). The coordinator cuts each worker's share into exactly k
shards (`--shards-per-worker k`, `--min-shard-rows 1`, jobs big enough that every share
has >= k rows), so the cheater computes k shards per job as primary. Many independent jobs
(distinct inputs, random job ids, so a fresh spot check sample each) are run per (p, k)
cell; a job counts as caught when one of its verdicts names the cheater among `losers`.
The cheater is never excluded (`--max-strikes` very high), so every job sees the same
three workers. Measured rates are printed next to `detection_probability(p, k) = 1 - (1 -
p)^k` with the binomial standard error at that probability. Two rates are measured: the
cheater caught on one of its own k shards (what the formula models), and caught in any
role, which also counts the checks of honest workers' shards that the coordinator sent to
the cheater. The p = 0 column checks that nobody is caught without checks and measures k
itself.

What spot checks cost in wall time is measured by benchmarks/spot_check_overhead.py.

Every worker gets one onnxruntime thread and computes one shard at a time, so they are
alike. Their row shares still follow measured throughput and drift apart between jobs, so
k is pinned by shard count, not rows: each share is cut into min(k, share rows) shards,
and the p = 0 cell of each k checks that the cheater got exactly k in every job. The
networks are real processes on loopback, restarted for every cell (p and k are
coordinator flags). A PNG plot is written too when matplotlib is importable.

    python benchmarks/detection.py [--jobs 60] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import WORKER_FLAGS, save_plot

from shardnet.client import Client, InferResult
from shardnet.demo import demo_inputs, write_demo_model
from shardnet.launch import LocalNetwork
from shardnet.verification import detection_probability

CHEATER = "cheater"
HONEST = ("honest-1", "honest-2")

DETECTION_P = (0.0, 0.05, 0.1, 0.2, 0.5)
DETECTION_K = (1, 2, 4, 8)
# Rows per detection job. Measured rates drift apart between jobs (3 single-threaded workers
# share 2 cores here, and a worker given more rows looks faster), so leave every share
# far more than k rows: with 384 rows the cheater's share was seen to fall below 4 rows.
DETECTION_ROWS = 4096


@dataclass
class Cell:
    """What the jobs of one (p, k) network showed."""

    p: float
    k: int
    jobs: int = 0
    caught_as_primary: int = 0  # a verdict on one of the cheater's own shards
    caught_any: int = 0  # also counting checks of honest shards that ran on the cheater
    checker_verdicts: int = 0  # verdicts the cheater lost as the checker
    honest_losses: int = 0  # verdicts an honest worker lost (should stay 0)
    k_seen: list[int] = field(default_factory=list)  # cheater's shards, in uncaught jobs

    @property
    def theory(self) -> float:
        return detection_probability(self.p, self.k)

    @property
    def standard_error(self) -> float:
        """Binomial standard error of a rate measured over `jobs` at the theoretical rate."""
        return math.sqrt(self.theory * (1 - self.theory) / self.jobs)


def record_job(cell: Cell, result: InferResult) -> None:
    losses = [(v, loser) for v in result.verdicts for loser in v["losers"]]
    as_primary = any(loser == CHEATER and v["primary"] == CHEATER for v, loser in losses)
    as_checker = [v for v, loser in losses if loser == CHEATER and v["checker"] == CHEATER]
    cell.jobs += 1
    cell.caught_as_primary += as_primary
    cell.caught_any += as_primary or bool(as_checker)
    cell.checker_verdicts += len(as_checker)
    cell.honest_losses += sum(loser != CHEATER for _, loser in losses)
    if not losses:
        # A caught cheater's shards are all redone by others, so only an uncaught job
        # shows how many shards the cheater was given.
        cell.k_seen.append(sum(s["worker"] == CHEATER for s in result.shards))


def start_cheater_network(net: LocalNetwork, models: Path, p: float, k: int) -> None:
    net.start_coordinator(
        "--spot-check-p",
        str(p),
        "--shards-per-worker",
        str(k),
        "--min-shard-rows",
        "1",
        "--max-strikes",
        "1000000",
        "--referee-models-dir",
        str(models),
    )
    for name in HONEST:
        net.start_worker(*WORKER_FLAGS, name=name)
    net.start_worker(*WORKER_FLAGS, "--fault", "noise", name=CHEATER)
    net.wait_for_workers(len(HONEST) + 1)


def run_detection_cell(workdir: Path, models: Path, p: float, k: int, jobs: int) -> Cell:
    cell = Cell(p, k)
    with LocalNetwork(workdir, models) as net:
        start_cheater_network(net, models, p, k)
        with Client(net.coordinator.address) as client:
            for job in range(jobs):
                x = demo_inputs(DETECTION_ROWS, seed=1000 * k + job)["x"]
                record_job(cell, client.infer("mlp", {"x": x}))
    return cell


def check_plan(cell: Cell) -> None:
    """At p = 0 nothing is checked, so every job shows the cheater's k shards."""
    if cell.honest_losses or cell.caught_any:
        raise RuntimeError(f"verdicts at p = 0 (k = {cell.k}): the setup is broken")
    if set(cell.k_seen) != {cell.k}:
        raise RuntimeError(
            f"the cheater got {sorted(set(cell.k_seen))} shards per job, planned {cell.k}"
        )


def run_detection(tmp: Path, p_values, k_values, jobs: int) -> list[Cell]:
    models = tmp / "models-mlp"
    write_demo_model(models)
    cells = []
    for k in k_values:
        for p in p_values:
            t0 = time.perf_counter()
            cell = run_detection_cell(tmp / f"detect-p{p}-k{k}", models, p, k, jobs)
            if p == 0:
                check_plan(cell)
            cells.append(cell)
            print(
                f"  k={k} p={p:<4}: caught {cell.caught_any}/{cell.jobs} "
                f"({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
    return cells


def format_k_seen(cell: Cell) -> str:
    return f"{statistics.mean(cell.k_seen):.2f}" if cell.k_seen else "-"


def print_detection_table(cells: list[Cell]) -> None:
    print(
        f"{'p':>5} {'k':>3} {'jobs':>5} {'k seen':>7} {'theory':>7} {'±se':>6} "
        f"{'caught as primary':>18} {'z':>6} {'caught any role':>16} {'checker verdicts/job':>21}"
    )
    for c in cells:
        measured = c.caught_as_primary / c.jobs
        z = (measured - c.theory) / c.standard_error if c.standard_error else 0.0
        print(
            f"{c.p:>5.2f} {c.k:>3} {c.jobs:>5} {format_k_seen(c):>7} {c.theory:>7.3f} "
            f"{c.standard_error:>6.3f} {measured:>18.3f} {z:>6.1f} "
            f"{c.caught_any / c.jobs:>16.3f} {c.checker_verdicts / c.jobs:>21.2f}"
        )
    honest = sum(c.honest_losses for c in cells)
    print(f"verdicts lost by honest workers: {honest} (should be 0)")


def plot(cells: list[Cell]) -> None:
    def draw(plt):
        _, ax = plt.subplots(figsize=(5.5, 4))
        for p in sorted({c.p for c in cells}):
            row = [c for c in cells if c.p == p]
            ks = [c.k for c in row]
            line = ax.errorbar(
                ks,
                [c.caught_as_primary / c.jobs for c in row],
                yerr=[c.standard_error for c in row],
                fmt="o",
                label=f"p={p}",
            )
            ax.plot(ks, [c.theory for c in row], "--", color=line[0].get_color())
        ax.set(
            xlabel="k (cheater's shards per job)",
            ylabel="caught as primary",
            xscale="log",
            title="measured (points) vs 1-(1-p)^k (dashed)",
        )
        ax.legend()

    save_plot("detection", draw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="jobs per (p, k) cell (default 60, quick 15)")
    parser.add_argument("--quick", action="store_true", help="fewer cells: a smoke run")
    args = parser.parse_args()
    if args.quick:
        detection_p, detection_k = (0.0, 0.2, 0.5), (1, 4)
    else:
        detection_p, detection_k = DETECTION_P, DETECTION_K
    jobs = args.jobs or (15 if args.quick else 60)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shardnet-bench-") as tmp:
        print("detection: 2 honest workers + 1 cheater (--fault noise) per cell", flush=True)
        cells = run_detection(Path(tmp), detection_p, detection_k, jobs)

    print()
    print(
        f"DETECTION: {DETECTION_ROWS} rows per job, {jobs} jobs per cell; theory = 1-(1-p)^k, "
        f"se = sqrt(theory(1-theory)/jobs), z = (caught as primary - theory) / se"
    )
    print_detection_table(cells)
    plot(cells)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
