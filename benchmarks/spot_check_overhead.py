"""Verification overhead: what spot re-execution at probability p costs in wall time.

One network per p (coordinator `--spot-check-p p`, honest workers with one onnxruntime
thread and one shard at a time each), all up at once; a batch of jobs of a compute-heavy
MLP is timed on each in turn, round after round, so load from elsewhere on the machine
falls on all alike; medians. wall(p) / wall(0) is printed next to 1 + p (the ideal when a
fraction p of the shards is computed twice) and the goal (1 + p) * 1.05, with the fraction
of shards actually re-executed (`checked` in the job's shard report).

How often a cheater is caught is measured by benchmarks/detection.py.

    python benchmarks/spot_check_overhead.py [--repeats 5] [--jobs 6] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import (
    HEAVY,
    describe,
    goal,
    interleaved,
    machine_note,
    medians,
    network,
    print_table,
    save_plot,
)

from shardnet.client import Client
from shardnet.demo import demo_inputs, write_demo_model

P_VALUES = (0.0, 0.1, 0.25, 0.5, 1.0)
ROWS = 4096
SLACK = 1.05  # goal: wall(p) / wall(0) <= (1 + p) * 1.05


@dataclass
class Point:
    p: float
    wall_s: float = 0.0  # median wall time of one batch of jobs
    checked: int = 0  # shards re-executed, over all jobs run
    shards: int = 0


def batch_job(client: Client, point: Point, x, jobs: int):
    def job():
        for _ in range(jobs):
            result = client.infer(HEAVY["name"], {"x": x}, outputs=["logits"])
            point.checked += sum(s["checked"] for s in result.shards)
            point.shards += len(result.shards)

    return job


def measure(tmp: Path, p_values, workers: int, jobs: int, repeats: int) -> list[Point]:
    models = tmp / "models"
    write_demo_model(models, **HEAVY)
    x = demo_inputs(ROWS, d_in=HEAVY["d_in"])["x"]
    points = {p: Point(p) for p in p_values}
    with contextlib.ExitStack() as stack:
        fns = {}
        for p, point in points.items():
            flags = ("--spot-check-p", str(p))
            net = stack.enter_context(network(tmp / f"p{p}", models, workers, *flags))
            client = stack.enter_context(Client(net.coordinator.address))
            fns[p] = batch_job(client, point, x, jobs)
        for p, wall in medians(interleaved(fns, repeats)).items():
            points[p].wall_s = wall
    return list(points.values())


def report(points: list[Point], workers: int, jobs: int, repeats: int) -> None:
    print(
        f"model: {describe(HEAVY)}, {ROWS} rows per job, {jobs} jobs per batch, "
        f"{workers} workers (1 intra-op thread each), median of {repeats} rounds; "
        f"{machine_note()}"
    )
    base = points[0].wall_s
    rows = []
    for pt in points:
        ratio = pt.wall_s / base
        limit = (1 + pt.p) * SLACK
        rows.append(
            (
                f"{pt.p:.2f}",
                pt.wall_s,
                ratio,
                f"{1 + pt.p:.2f}",
                f"{limit:.3f}",
                goal(ratio <= limit),
                f"{pt.checked}/{pt.shards} = {pt.checked / max(pt.shards, 1):.2f}",
            )
        )
    print_table(
        ("p", "batch wall s", "wall/wall(0)", "1+p", "(1+p)*1.05", "ok", "re-executed"), rows
    )


def plot(points: list[Point]) -> None:
    ps = [pt.p for pt in points]

    def draw(plt):
        _, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot(ps, [pt.wall_s / points[0].wall_s for pt in points], "o-", label="measured")
        ax.plot(ps, [1 + p for p in ps], "--", color="grey", label="1 + p")
        ax.plot(ps, [(1 + p) * SLACK for p in ps], ":", color="red", label="goal (1 + p) * 1.05")
        ax.set(
            xlabel="spot-check probability p",
            ylabel="wall / wall(p = 0)",
            title="verification overhead",
        )
        ax.legend()

    save_plot("spot_check_overhead", draw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per timed batch")
    parser.add_argument("--workers", type=int, default=2, help="a check needs a 2nd worker")
    parser.add_argument("--p", type=float, nargs="+", default=list(P_VALUES))
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 jobs")
    args = parser.parse_args()
    repeats, jobs = (3, 3) if args.quick else (args.repeats, args.jobs)
    p_values = sorted({0.0, *args.p})

    started = time.perf_counter()
    print(f"{machine_note()}; networks taking turns, {repeats} rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="shardnet-bench-") as tmp:
        points = measure(Path(tmp), p_values, args.workers, jobs, repeats)
    print()
    report(points, args.workers, jobs, repeats)
    plot(points)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
