"""Overhead and scaling: in-process onnxruntime vs the network with 1 and 2 workers.

Every party gets the same compute: one onnxruntime intra-op thread per worker (and for the
in-process baseline), one shard computed at a time per worker. Prints medians over
repeated runs, measured side by side in one run, and the ratios the foundation issue sets
as goals:

    python benchmarks/overhead_scaling.py [--rows 8192] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shardnet.client import Client
from shardnet.demo import demo_inputs, write_demo_model
from shardnet.launch import LocalNetwork

MODEL = {"d_in": 256, "hidden": 1024, "depth": 4, "d_out": 10, "name": "heavy"}


def median_wall(fn, repeats: int) -> float:
    fn()  # warm-up: session init, connections, first throughput sample
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def network_wall(workdir: Path, models: Path, workers: int, x, expected, repeats) -> float:
    with LocalNetwork(workdir, models) as net:
        net.start_coordinator()
        for _ in range(workers):
            net.start_worker("--intra-op-threads", "1", "--max-concurrency", "1")
        net.wait_for_workers(workers)
        with Client(net.coordinator.address) as client:

            def job():
                out = client.infer("heavy", {"x": x}, outputs=["logits"])
                assert np.array_equal(out.outputs["logits"], expected)

            return median_wall(job, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shardnet-bench-") as tmp:
        tmp = Path(tmp)
        model_path = write_demo_model(tmp / "models", **MODEL)
        x = demo_inputs(args.rows, d_in=MODEL["d_in"])["x"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(model_path), opts)
        expected = session.run(["logits"], {"x": x})[0]

        local = median_wall(lambda: session.run(["logits"], {"x": x}), args.repeats)
        one = network_wall(tmp / "net1", tmp / "models", 1, x, expected, args.repeats)
        two = network_wall(tmp / "net2", tmp / "models", 2, x, expected, args.repeats)

    mb = x.nbytes / 2**20
    print(
        f"model: MLP {MODEL['d_in']}->{MODEL['hidden']}x{MODEL['depth']}->{MODEL['d_out']}, "
        f"batch {args.rows} rows ({mb:.1f} MiB in), median of {args.repeats} runs, "
        f"1 intra-op thread per worker"
    )
    print(f"{'setup':<34} {'wall s':>8} {'rows/s':>10}")
    for label, wall in [
        ("in-process onnxruntime", local),
        ("coordinator + 1 worker", one),
        ("coordinator + 2 workers", two),
    ]:
        print(f"{label:<34} {wall:>8.3f} {args.rows / wall:>10,.0f}")
    print(f"1 worker / in-process wall:       {one / local:.3f}x  (goal <= 1.10)")
    print(f"2 workers / 1 worker throughput:  {one / two:.3f}x  (goal >= 1.85)")


if __name__ == "__main__":
    main()
