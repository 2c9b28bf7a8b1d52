"""Latency of small requests: what the coordinator adds to a single-row request.

One coordinator and one worker (`--intra-op-threads 1`) serving the small demo MLP
(64->256x2->10, ~0.1 ms of compute per row). Single-row requests go either through the
coordinator or straight to the worker (TLS, trusting its certificate), in alternating
blocks within one network, so both paths see the same machine state:

1. sequential: one client, one request at a time; p50/p99 per path. Goal: the coordinator
   adds at most 2 ms at p50.
2. concurrent: N client threads (own gRPC channel each) sending back to back; throughput
   and p50/p99 per path.
3. dynamic batching (when the coordinator has `--max-queue-delay-ms`): many concurrent
   single-row clients through a coordinator with batching off (0) vs on (2 ms, by
   default), one network per setting, all up at once, taking turns; throughput and
   p50/p99.

The clients are Python threads in this process, so on a small machine the client side is
part of what is measured (it competes with the servers for the cores).

    python benchmarks/latency.py [--requests 600] [--clients 8] [--batch-clients 32] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchlib import network, percentile, print_table, save_plot

from shardnet.client import Client
from shardnet.config import CoordinatorConfig
from shardnet.demo import DEMO_MODEL_NAME, demo_inputs, write_demo_model
from shardnet.launch import LocalNetwork

WORKER = ("--intra-op-threads", "1")
ADDED_P50_GOAL_MS = 2.0
BLOCK = 50  # requests per block when alternating the two paths


@dataclass
class Run:
    label: str
    latencies_ms: list[float]
    wall_s: float

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.wall_s


def timed_requests(client: Client, x: np.ndarray, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.infer(DEMO_MODEL_NAME, {"x": x})
        latencies.append((time.perf_counter() - t0) * 1e3)
    return latencies


def clients_for(net: LocalNetwork, path: str, count: int) -> list[Client]:
    if path == "coordinator":
        return [Client(net.coordinator.address) for _ in range(count)]
    worker = net.workers[0]
    return [Client(worker.address, tls_certificate=worker.tls_certificate) for _ in range(count)]


def concurrent(clients: list[Client], x: np.ndarray, per_client: int) -> tuple[list[float], float]:
    """Every client in its own thread, all released at once; (latencies ms, wall s)."""
    for client in clients:
        timed_requests(client, x, 3)  # warm-up: channel, TLS handshake
    results: list[list[float]] = [[] for _ in clients]
    barrier = threading.Barrier(len(clients) + 1)

    def body(i: int) -> None:
        barrier.wait()
        results[i] = timed_requests(clients[i], x, per_client)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return [ms for r in results for ms in r], wall


def compare_paths(net: LocalNetwork, x, requests: int, clients: int) -> list[Run]:
    """Sequential and concurrent runs of both paths, alternating in blocks."""
    lat = {"coordinator": [], "worker": []}
    wall = {"coordinator": 0.0, "worker": 0.0}
    for path in lat:
        (client,) = clients_for(net, path, 1)
        with client:
            timed_requests(client, x, 20)  # warm-up
    sequential = {p: clients_for(net, p, 1)[0] for p in lat}
    for _ in range(max(1, requests // BLOCK)):
        for path, client in sequential.items():
            t0 = time.perf_counter()
            lat[path] += timed_requests(client, x, BLOCK)
            wall[path] += time.perf_counter() - t0
    for client in sequential.values():
        client.close()
    runs = [Run(f"sequential via {p}", lat[p], wall[p]) for p in lat]

    per_client = max(BLOCK, requests // clients)
    clat = {"coordinator": [], "worker": []}
    cwall = {"coordinator": 0.0, "worker": 0.0}
    for _ in range(2):  # two alternating rounds
        for path in clat:
            group = clients_for(net, path, clients)
            ms, seconds = concurrent(group, x, per_client // 2)
            for client in group:
                client.close()
            clat[path] += ms
            cwall[path] += seconds
    runs += [Run(f"{clients} clients via {p}", clat[p], cwall[p]) for p in clat]
    return runs


def batching_runs(tmp: Path, models: Path, x, clients: int, per_client: int, delays) -> list[Run]:
    """One network per delay, all up at once, taking turns for two rounds."""
    lat = {delay: [] for delay in delays}
    wall = dict.fromkeys(delays, 0.0)
    with contextlib.ExitStack() as stack:
        nets = {}
        for delay in delays:
            flags = ("--max-queue-delay-ms", str(delay))
            workdir = tmp / f"batch-{delay}"
            nets[delay] = stack.enter_context(
                network(workdir, models, 1, *flags, worker_flags=WORKER)
            )
        for _ in range(2):
            for delay, net in nets.items():
                group = clients_for(net, "coordinator", clients)
                ms, seconds = concurrent(group, x, per_client // 2)
                for client in group:
                    client.close()
                lat[delay] += ms
                wall[delay] += seconds
    runs = []
    for delay in delays:
        label = f"{clients} clients, delay {delay:g} ms" + (" (off)" if delay == 0 else "")
        runs.append(Run(label, lat[delay], wall[delay]))
    return runs


def print_runs(runs: list[Run]) -> None:
    print_table(
        ("run", "requests", "req/s", "p50 ms", "p99 ms"),
        [(r.label, len(r.latencies_ms), f"{r.throughput:,.0f}", r.p50, r.p99) for r in runs],
    )


def report_paths(runs: list[Run]) -> None:
    print_runs(runs)
    by = {r.label: r for r in runs}
    coord, worker = by["sequential via coordinator"], by["sequential via worker"]
    added = coord.p50 - worker.p50
    ok = "yes" if added <= ADDED_P50_GOAL_MS else "NO"
    print(
        f"coordinator adds (sequential): p50 {added:+.3f} ms, p99 {coord.p99 - worker.p99:+.3f} ms"
        f"  (goal: p50 <= {ADDED_P50_GOAL_MS} ms: {ok})"
    )
    conc = [r for r in runs if not r.label.startswith("sequential")]
    if len(conc) == 2:
        c, w = conc
        print(
            f"coordinator adds (concurrent): p50 {c.p50 - w.p50:+.3f} ms, "
            f"throughput {c.throughput / w.throughput:.2f}x of direct"
        )


def report_batching(runs: list[Run]) -> None:
    print_runs(runs)
    off = runs[0]
    for r in runs[1:]:
        print(
            f"{r.label} vs off: throughput {r.throughput / off.throughput:.2f}x, "
            f"p50 {r.p50 / off.p50:.2f}x, p99 {r.p99 / off.p99:.2f}x"
        )


def plot(runs: list[Run]) -> None:
    def draw(plt):
        _, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            ordered = np.sort(r.latencies_ms)
            ax.plot(ordered, np.linspace(0, 1, len(ordered)), label=r.label)
        ax.set(
            xlabel="latency ms (log)",
            ylabel="fraction of requests",
            xscale="log",
            title="single-row requests",
        )
        ax.legend(fontsize=7)

    save_plot("latency", draw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="per path and mode")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (part 2)")
    parser.add_argument("--batch-clients", type=int, default=32, help="clients (part 3)")
    parser.add_argument("--batch-delays", type=float, nargs="+", default=[0, 2])
    parser.add_argument("--quick", action="store_true", help="200 requests per path and mode")
    args = parser.parse_args()
    requests = 200 if args.quick else args.requests
    has_batching = "max_queue_delay_ms" in CoordinatorConfig.model_fields

    started = time.perf_counter()
    x = demo_inputs(1)["x"]
    with tempfile.TemporaryDirectory(prefix="shardnet-bench-") as tmp:
        tmp = Path(tmp)
        models = tmp / "models"
        write_demo_model(models)
        with network(tmp / "paths", models, 1, worker_flags=WORKER) as net:
            runs = compare_paths(net, x, requests, args.clients)
        batch = []
        if has_batching:
            per_client = max(20, 2 * requests // args.batch_clients)
            batch = batching_runs(tmp, models, x, args.batch_clients, per_client, args.batch_delays)

    print()
    print("single-row requests, small MLP 64->256x2->10, 1 worker (1 intra-op thread)")
    report_paths(runs)
    print()
    if batch:
        print("dynamic batching (coordinator --max-queue-delay-ms), 1 worker")
        report_batching(batch)
    else:
        print("dynamic batching: this coordinator has no --max-queue-delay-ms; skipped")
    plot(runs + batch)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
