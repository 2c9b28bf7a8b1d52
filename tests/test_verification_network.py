"""Spot re-execution with real workers: honest ones are never flagged, cheaters are caught,
lose their stake on a real Anvil, and get no more shards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from shardnet.chain import DEV_KEYS
from shardnet.client import Client
from shardnet.demo import demo_inputs

pytestmark = pytest.mark.slow


def test_honest_workers_on_different_settings_are_never_flagged(fresh_network, reference):
    net = fresh_network
    net.start_coordinator("--spot-check-p", "1.0")
    net.start_worker("--intra-op-threads", "1", "--graph-optimization", "all")
    net.start_worker("--intra-op-threads", "2", "--graph-optimization", "disable")
    net.start_worker("--intra-op-threads", "1", "--graph-optimization", "basic")
    net.wait_for_workers(3)
    checked = 0
    with Client(net.coordinator.address) as client:
        for seed in range(25):
            x = demo_inputs(400 + 37 * seed, seed=seed)["x"] * (1 + seed % 5)
            result = client.infer("mlp", {"x": x})
            checked += sum(s["checked"] for s in result.shards)
            assert not result.verdicts, result.verdicts
            np_ref = reference(x)
            for name, got in result.outputs.items():
                assert abs(got - np_ref[name]).max() < 1e-4
        workers = client.workers()
    assert checked >= 25 * 3
    assert all(w.strikes == 0 for w in workers)
    assert sum(w.checks_passed for w in workers) >= 2 * checked


@pytest.mark.parametrize("fault", ["noise", "zeros", "other-model", "replay"])
def test_a_cheater_is_caught_slashed_and_excluded(paid_network, reference, models_dir, fault):
    net = paid_network
    net.start_coordinator("--spot-check-p", "1.0", "--referee-models-dir", str(models_dir))
    net.start_worker("worker-1")
    net.start_worker("worker-2")
    net.start_worker("cheater", "--fault", fault)
    net.net.wait_for_workers(3)
    cheater = net.workers["cheater"].address
    x = demo_inputs(2400, seed=21)["x"]
    with Client(net.net.coordinator.address) as client:
        result = client.infer("mlp", {"x": x}, payer=net.payer())
        settlement = client.wait_settled(result.escrow_jobs[0])
        # The client gets correct outputs anyway: the cheater's shards were redone.
        for name, expected in reference(x).items():
            assert result.outputs[name].tobytes() == expected.tobytes(), name
        assert any("cheater" in v["losers"] for v in result.verdicts), result.verdicts
        assert "cheater" not in {s["worker"] for s in result.shards}
        assert cheater not in {p.worker_address for p in settlement.payments}
        assert settlement.status == "settled", settlement.last_error
        # Excluded: gone from the table, and the next job runs on the others.
        assert "cheater" not in [w.info.worker_id for w in client.workers()]
        again = client.infer("mlp", demo_inputs(600))
        assert "cheater" not in {s["worker"] for s in again.shards}

    async def stake_dropped():
        async with await net.chain(DEV_KEYS[0]) as chain:
            deadline = time.monotonic() + 20
            while await chain.stake_of(cheater) >= net.deployment.min_stake_wei:
                assert time.monotonic() < deadline, "the cheater was not slashed"
                await asyncio.sleep(0.2)
            return await chain.stake_of(cheater)

    stake = asyncio.run(stake_dropped())
    assert stake == net.deployment.min_stake_wei // 2  # slash_bps 5000
    # Every verdict is recorded with its evidence; the first one was slashed on chain.
    with Client(net.net.coordinator.address) as client:
        verdicts = [v for v in client.verdicts(result.job_ids[0]) if v.loser == "cheater"]
    assert verdicts and verdicts[0].offending_receipt and verdicts[0].witness_receipt
    assert [v.slash_status for v in verdicts].count("slashed") == 1
    assert json.loads(verdicts[0].offending_receipt)["worker"] == cheater
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardnet",
            "verdicts",
            "--coordinator",
            net.net.coordinator.address,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        done.returncode == 0 and "loser cheater" in done.stdout and "slash slashed" in done.stdout
    )
