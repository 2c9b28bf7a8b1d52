"""Chain cost per job: transactions and gas for a paid job as its shard count grows.

Runs a local Anvil, a paying coordinator and 2 staked workers, submits one paid job cut
into 4 and then 400 shards, and counts the transactions the client and the coordinator
sent and the gas they used (the goal: the same for both, one openJob and one settle):

    python benchmarks/chain_cost.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from shardnet.chain import DEV_KEYS, Chain
from shardnet.client import Client, Payer
from shardnet.demo import demo_inputs, write_demo_model
from shardnet.launch import DevAccounts, LocalNetwork
from shardnet.wallet import start_dev_chain


async def counts(deployment, addresses) -> list[int]:
    async with await Chain.connect(deployment, DEV_KEYS[0]) as chain:
        return [await chain.transaction_count(a) for a in addresses]


def run(workdir: Path, shards: int, rows: int) -> tuple[int, int, int, int]:
    anvil, deployment = start_dev_chain(workdir / "chain")
    try:
        accounts = DevAccounts(workdir, workdir / "chain" / "deployment.json")
        models = workdir / "models"
        write_demo_model(models)
        with LocalNetwork(workdir, models) as net:
            key_dir, coordinator = accounts.create("coordinator")
            net.start_coordinator(
                *accounts.node_args(key_dir),
                "--ledger",
                str(workdir / "ledger.sqlite"),
                "--shards-per-worker",
                str(shards // 2),
                "--min-shard-rows",
                "1",
            )
            for i in range(2):
                key_dir, _ = accounts.create(f"worker-{i}")
                net.start_worker(
                    *accounts.node_args(key_dir), "--stake-wei", str(deployment.min_stake_wei)
                )
            net.wait_for_workers(2)
            _, client_id = accounts.create("client")
            who = [client_id.address, coordinator.address]
            before = asyncio.run(counts(deployment, who))
            with Client(net.coordinator.address) as client:
                result = client.infer(
                    "mlp", demo_inputs(rows), payer=Payer(deployment, client_id.account.key)
                )
                settlement = client.wait_settled(result.escrow_jobs[0])
            after = asyncio.run(counts(deployment, who))
            assert len(result.shards) == shards, len(result.shards)
            assert settlement.status == "settled", settlement.last_error
            return (
                after[0] - before[0],
                after[1] - before[1],
                settlement.gas_used,
                len(result.shards),
            )
    finally:
        anvil.stop()


def main() -> None:
    print(f"{'shards':>6} {'client txs':>10} {'coordinator txs':>15} {'settle gas':>10}")
    for shards in (4, 400):
        with tempfile.TemporaryDirectory(prefix="shardnet-chain-") as tmp:
            client_txs, coordinator_txs, gas, n = run(Path(tmp), shards, rows=4000)
        print(f"{n:>6} {client_txs:>10} {coordinator_txs:>15} {gas:>10,}")


if __name__ == "__main__":
    main()
