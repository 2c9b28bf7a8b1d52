"""Chain cost per job: transactions and gas for a paid job as its shard count grows.

One local Anvil with the contracts, a paying coordinator and 2 staked workers. For each
shard count S the coordinator is restarted with `--shards-per-worker S/2 --min-shard-rows 1`
and one paid job of 4000 rows is submitted; the transactions the client and the coordinator
sent are counted (nonces before and after) and the settle transaction's gas is read from
the coordinator. The goal: the same for every S, one openJob and one settle per job. A
first job on the fresh chain runs before them and is shown apart: its settle writes
storage slots from zero and costs more gas than every later job.

    python benchmarks/chain_cost.py [--shards 2 4 16 64 400] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import print_table, save_plot

from shardnet.chain import DEV_KEYS, Chain, Deployment
from shardnet.client import Client, Payer
from shardnet.demo import DEMO_MODEL_NAME, demo_inputs, write_demo_model
from shardnet.launch import DevAccounts, LocalNetwork
from shardnet.wallet import start_dev_chain

SHARDS = (2, 4, 16, 64, 400)
ROWS = 4000
WORKERS = 2


@dataclass
class Cost:
    shards: int
    client_txs: int
    coordinator_txs: int
    settle_gas: int
    wall_s: float  # submit to settled
    first: bool = False  # the chain's first job: storage slots written from zero cost more


async def nonces(deployment: Deployment, addresses) -> list[int]:
    async with await Chain.connect(deployment, DEV_KEYS[0]) as chain:
        return [await chain.transaction_count(a) for a in addresses]


def start_paying_network(
    net: LocalNetwork, accounts: DevAccounts, deployment: Deployment, workdir: Path, shards: int
):
    key_dir, coordinator = accounts.create("coordinator")
    net.start_coordinator(
        *accounts.node_args(key_dir),
        "--ledger",
        str(workdir / "ledger.sqlite"),
        "--shards-per-worker",
        str(shards // WORKERS),
        "--min-shard-rows",
        "1",
    )
    for i in range(WORKERS):
        key_dir, _ = accounts.create(f"worker-{i}")
        net.start_worker(*accounts.node_args(key_dir), "--stake-wei", str(deployment.min_stake_wei))
    net.wait_for_workers(WORKERS)
    return coordinator


def job_cost(workdir: Path, accounts: DevAccounts, deployment: Deployment, shards: int) -> Cost:
    with LocalNetwork(workdir / f"net-{shards}", workdir / "models") as net:
        coordinator = start_paying_network(net, accounts, deployment, workdir, shards)
        _, client_id = accounts.create("client")
        who = [client_id.address, coordinator.address]
        before = asyncio.run(nonces(deployment, who))
        t0 = time.perf_counter()
        with Client(net.coordinator.address) as client:
            result = client.infer(
                DEMO_MODEL_NAME, demo_inputs(ROWS), payer=Payer(deployment, client_id.account.key)
            )
            settlement = client.wait_settled(result.escrow_jobs[0])
        wall = time.perf_counter() - t0
        after = asyncio.run(nonces(deployment, who))
    if len(result.shards) != shards:
        raise RuntimeError(f"planned {shards} shards, the job had {len(result.shards)}")
    if settlement.status != "settled":
        raise RuntimeError(f"settlement {settlement.status}: {settlement.last_error}")
    return Cost(shards, after[0] - before[0], after[1] - before[1], settlement.gas_used, wall)


def measure(workdir: Path, shard_counts) -> list[Cost]:
    anvil, deployment = start_dev_chain(workdir / "chain")
    try:
        write_demo_model(workdir / "models")
        accounts = DevAccounts(workdir, workdir / "chain" / "deployment.json")
        first = job_cost(workdir, accounts, deployment, shard_counts[0])
        first.first = True
        costs = [first]
        for shards in shard_counts:
            costs.append(job_cost(workdir, accounts, deployment, shards))
            print(f"  {shards} shards: settle gas {costs[-1].settle_gas:,}", flush=True)
        return costs
    finally:
        anvil.stop()


def report(costs: list[Cost]) -> None:
    print(f"one paid job of {ROWS} rows, {WORKERS} staked workers, Anvil")
    print_table(
        (
            "shards",
            "client txs",
            "coordinator txs",
            "txs per job",
            "settle gas",
            "submit->settled s",
        ),
        [
            (
                f"{c.shards}{' (first job)' if c.first else ''}",
                c.client_txs,
                c.coordinator_txs,
                c.client_txs + c.coordinator_txs,
                f"{c.settle_gas:,}",
                c.wall_s,
            )
            for c in costs
        ],
    )
    gas = [c.settle_gas for c in costs if not c.first]
    flat = all(c.client_txs == 1 and c.coordinator_txs == 1 for c in costs)
    print(
        f"txs per job constant at 2 (1 openJob + 1 settle): {'yes' if flat else 'NO'}; "
        f"settle gas after the first job {min(gas):,}..{max(gas):,} "
        f"({max(gas) / min(gas):.3f}x across shard counts)"
    )
    print(
        "the chain's first job costs more: its settle writes the workers' and the "
        "coordinator's credit slots from zero (cold SSTORE)"
    )


def plot(costs: list[Cost]) -> None:
    costs = [c for c in costs if not c.first]
    shards = [c.shards for c in costs]

    def draw(plt):
        _, (gas_ax, tx_ax) = plt.subplots(1, 2, figsize=(9, 3.8))
        gas_ax.plot(shards, [c.settle_gas for c in costs], "o-")
        gas_ax.set(
            xscale="log",
            xlabel="shards per job",
            ylabel="settle gas",
            ylim=(0, None),
            title="settle gas per job",
        )
        tx_ax.plot(shards, [c.client_txs + c.coordinator_txs for c in costs], "o-")
        tx_ax.set(
            xscale="log",
            xlabel="shards per job",
            ylabel="transactions",
            ylim=(0, 4),
            title="chain transactions per job",
        )

    save_plot("chain_cost", draw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=list(SHARDS))
    parser.add_argument("--quick", action="store_true", help="2, 16 and 400 shards")
    args = parser.parse_args()
    shard_counts = (2, 16, 400) if args.quick else args.shards
    if any(s % WORKERS or s > ROWS for s in shard_counts):
        parser.error(f"shard counts must be multiples of {WORKERS}, at most {ROWS}")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shardnet-chain-") as tmp:
        costs = measure(Path(tmp), shard_counts)
    print()
    report(costs)
    plot(costs)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
