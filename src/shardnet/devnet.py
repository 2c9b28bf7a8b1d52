"""`shardnet devnet`: a local Anvil chain with the contracts, a coordinator and N staked
workers on loopback, a paid demo job pushed through them, a summary printed (shards,
settlement transaction, earnings), and every child process stopped on exit or Ctrl-C."""

from __future__ import annotations

import functools
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shardnet.client import Client, Payer
from shardnet.demo import demo_inputs, write_demo_model
from shardnet.launch import DevAccounts, LocalNetwork
from shardnet.wallet import fmt_eth, start_dev_chain

# Flushed at once: the devnet's progress is read live by whoever started it.
_say = functools.partial(print, flush=True)


def run_devnet(
    *,
    workers: int,
    rows: int,
    workdir: Path | None,
    keep_running: bool,
    worker_args: list[str],
    chain: bool = True,
    cheat: str | None = None,
    spot_check_p: float = 0.1,
    out=_say,
) -> int:
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="shardnet-devnet-"))
            )
        workdir = Path(workdir).resolve()
        models_dir = workdir / "models"
        model_path = write_demo_model(models_dir)
        out(f"demo model {model_path.name} written to {models_dir}")
        t0 = time.monotonic()

        coordinator_args: list[str] = [
            "--referee-models-dir",
            str(models_dir),
            "--spot-check-p",
            str(spot_check_p),
        ]
        names_list = [f"worker-{i + 1}" for i in range(workers)] + (["cheater"] if cheat else [])
        worker_chain_args: list[list[str]] = [[] for _ in names_list]
        payer = None
        names: dict[str, str] = {}
        if chain:
            anvil, deployment = start_dev_chain(workdir / "chain")
            stack.callback(anvil.stop)
            out(f"{'anvil':<12} pid {anvil.pid:>7}  {anvil.rpc_url}  escrow {deployment.escrow}")
            accounts = DevAccounts(workdir, workdir / "chain" / "deployment.json")
            key_dir, _ = accounts.create("coordinator")
            coordinator_args += [
                *accounts.node_args(key_dir),
                "--ledger",
                str(workdir / "ledger.sqlite"),
            ]
            for i, name in enumerate(names_list):
                key_dir, identity = accounts.create(name)
                names[identity.address] = name
                worker_chain_args[i] = [
                    *accounts.node_args(key_dir),
                    "--stake-wei",
                    str(deployment.min_stake_wei),
                ]
            _, client_identity = accounts.create("client")
            payer = Payer(deployment, client_identity.account.key)

        net = stack.enter_context(LocalNetwork(workdir, models_dir))
        coordinator = net.start_coordinator(*coordinator_args)
        out(f"{'coordinator':<12} pid {coordinator.pid:>7}  {coordinator.address}")
        for i, name in enumerate(names_list):
            fault = ["--fault", cheat] if name == "cheater" else []
            w = net.start_worker(*worker_args, *worker_chain_args[i], *fault, name=name)
            label = f"  FAULT INJECTION: {cheat}" if fault else ""
            out(f"{w.name:<12} pid {w.pid:>7}  {w.address}{label}")
        net.wait_for_workers(len(names_list))
        out(f"network up in {time.monotonic() - t0:.2f}s; logs in {workdir}")

        inputs = demo_inputs(rows)
        with Client(coordinator.address) as client:
            t1 = time.monotonic()
            result = client.infer("mlp", inputs, payer=payer)
            wall = time.monotonic() - t1
            settlements = [client.wait_settled(e) for e in result.escrow_jobs]
            verdicts = client.verdicts(result.job_ids[0])
            live = [w.info.worker_id for w in client.workers()]
        expected = ort.InferenceSession(str(model_path)).run(None, inputs)
        _print_summary(out, rows, wall, result, expected)
        checked = sum(s["checked"] for s in result.shards)
        out(
            f"spot checks: {checked} of {len(result.shards)} shards re-executed on another "
            f"worker (p = {spot_check_p})"
        )
        for v in verdicts:
            out(
                f"VERDICT shard {v.shard}: {v.loser or 'nobody'} lost ({v.outcome}), referee "
                f"{v.referee}; slash {v.slash_status}\n    {v.reason}"
            )
        if cheat:
            caught = any(v.loser == "cheater" for v in verdicts)
            out(
                f"cheater {'caught and excluded' if 'cheater' not in live else 'not caught'}"
                if caught
                else "cheater not caught in this job (raise --spot-check-p)"
            )
        for s in settlements:
            _print_settlement(out, s, names)
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


def _print_settlement(out, s, names: dict[str, str]) -> None:
    out(f"\nescrow {s.escrow_job_id}: charged {fmt_eth(int(s.charge_wei))}, {s.status}")
    if s.tx_hash:
        out(f"settlement tx {s.tx_hash} ({s.gas_used:,} gas)")
    if s.last_error:
        out(f"settlement note: {s.last_error}")
    for p in s.payments:
        out(
            f"  {names.get(p.worker_address, p.worker_address):<12} {p.worker_address} "
            f"earned {fmt_eth(int(p.amount_wei))}"
        )
    out(
        f"  {'coordinator':<12} fee {fmt_eth(int(s.coordinator_fee_wei))}; "
        "workers collect with `shardnet withdraw`"
    )
