"""`shardnet devnet`: a coordinator and N workers on loopback, a demo job pushed through
them, a summary printed, and every child process stopped on exit or Ctrl-C."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shardnet.client import Client
from shardnet.demo import demo_inputs, write_demo_model
from shardnet.launch import LocalNetwork


def run_devnet(
    *,
    workers: int,
    rows: int,
    workdir: Path | None,
    keep_running: bool,
    worker_args: list[str],
    out=print,
) -> int:
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="shardnet-devnet-")
        workdir = Path(tmp.name)
    workdir = Path(workdir).resolve()
    models_dir = workdir / "models"
    model_path = write_demo_model(models_dir)
    out(f"demo model {model_path.name} written to {models_dir}")
    try:
        with LocalNetwork(workdir, models_dir) as net:
            t0 = time.monotonic()
            coordinator = net.start_coordinator()
            out(f"coordinator  pid {coordinator.pid:>7}  {coordinator.address}")
            for _ in range(workers):
                w = net.start_worker(*worker_args)
                out(f"{w.name:<12} pid {w.pid:>7}  {w.address}")
            net.wait_for_workers(workers)
            out(f"network up in {time.monotonic() - t0:.2f}s; logs in {workdir}")

            inputs = demo_inputs(rows)
            with Client(coordinator.address) as client:
                t1 = time.monotonic()
                result = client.infer("mlp", inputs)
                wall = time.monotonic() - t1
            expected = ort.InferenceSession(str(model_path)).run(None, inputs)
            _print_summary(out, rows, wall, result, expected)
            if keep_running:
                out(
                    f"\nnetwork running; submit jobs with:\n"
                    f"  shardnet submit --coordinator {coordinator.address} mlp INPUT.npy\n"
                    f"Ctrl-C stops it."
                )
                while all(p.alive() for p in [coordinator, *net.workers]):
                    time.sleep(0.5)
                out("a process exited; stopping the network")
                return 1
        out("all processes stopped")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def _print_summary(out, rows, wall, result, expected) -> None:
    out(
        f"\njob {', '.join(result.job_ids)}: {rows} rows of mlp in {wall * 1000:.1f} ms "
        f"({rows / wall:,.0f} rows/s)"
    )
    out(f"{'shard':>5}  {'rows':>13}  {'worker':<12} {'attempts':>8} {'ms':>8}")
    for s in result.shards:
        start, stop = s["rows"]
        out(
            f"{s['shard']:>5}  {start:>6}..{stop:<6}  {s['worker']:<12} {s['attempts']:>8} "
            f"{s['ms']:>8.1f}"
        )
    per_worker = Counter()
    for s in result.shards:
        per_worker[s["worker"]] += s["rows"][1] - s["rows"][0]
    out("rows per worker: " + ", ".join(f"{w} {n}" for w, n in sorted(per_worker.items())))
    names = list(result.outputs)
    same = all(np.array_equal(result.outputs[n], e) for n, e in zip(names, expected, strict=True))
    diff = max(
        float(np.max(np.abs(result.outputs[n] - e))) for n, e in zip(names, expected, strict=True)
    )
    out(
        f"outputs {', '.join(f'{n} {result.outputs[n].shape}' for n in names)}; "
        f"{'bit-identical to' if same else f'max |diff| {diff:.3g} vs'} in-process onnxruntime"
    )
