"""Jobs paid end to end on a real Anvil: escrow, one settle per job, refunds, staking."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from eth_account import Account

from shardnet.chain import DEV_KEYS, Anvil, TxReverted
from shardnet.client import Client, verify_receipts
from shardnet.demo import demo_inputs
from shardnet.errors import RemoteError
from shardnet.launch import LaunchError, LocalNetwork
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol.tensors import add_inputs, set_param
from shardnet.receipts import Domain
from shardnet.wallet import start_dev_chain

pytestmark = pytest.mark.slow


def run(coro):
    return asyncio.run(coro)


def start(net, workers=2, *coordinator_args, worker_args=()):
    net.start_coordinator(*coordinator_args)
    for i in range(workers):
        net.start_worker(f"worker-{i + 1}", *(worker_args if i == 0 else ()))
    net.net.wait_for_workers(workers)


def test_a_job_is_paid_end_to_end(paid_network, reference):
    net = paid_network
    start(net)
    x = demo_inputs(1200, seed=2)["x"]
    with Client(net.net.coordinator.address) as client:
        result = client.infer("mlp", {"x": x}, payer=net.payer())
        (escrow,) = result.escrow_jobs
        settlement = client.wait_settled(escrow)
    assert result.outputs["logits"].tobytes() == reference(x)["logits"].tobytes()
    assert settlement.status == "settled", settlement.last_error
    charge = int(settlement.charge_wei)
    assert charge == 1200 * 10**12
    paid = {p.worker_address: int(p.amount_wei) for p in settlement.payments}
    assert set(paid) == {w.address for w in net.workers.values()}
    assert sum(paid.values()) + int(settlement.coordinator_fee_wei) == charge
    rows = {w.address: 0 for w in net.workers.values()}
    address_of = {name: w.address for name, w in net.workers.items()}
    for shard in result.shards:
        rows[address_of[shard["worker"]]] += shard["rows"][1] - shard["rows"][0]
    fee = charge * 500 // 10_000
    for address, amount in paid.items():
        assert abs(amount - (charge - fee) * rows[address] / 1200) <= 1

    async def check_chain():
        async with await net.chain(DEV_KEYS[0]) as chain:
            job = bytes.fromhex(escrow[2:])
            assert await chain.count_settlements(job) == 1
            (event,) = await chain.settlements(job)
            assert event.tx_hash == settlement.tx_hash and event.total == charge
            for address, amount in paid.items():
                assert await chain.credit_of(address) == amount

    run(check_chain())

    # The client checks the workers' signed receipts offline against its own data.
    domain = Domain(net.deployment.chain_id, net.deployment.escrow)
    addresses = {name: w.address for name, w in net.workers.items()}
    assert len(result.receipts) == len(result.shards)
    assert verify_receipts(result, {"x": x}, domain, addresses) == []
    tampered = np.array(result.outputs["logits"])
    tampered[0, 0] += 1
    result.outputs["logits"] = tampered
    problems = verify_receipts(result, {"x": x}, domain, addresses)
    assert problems == ["shard 0: output digest differs from your outputs"]

    # The worker withdraws its earnings from the CLI.
    worker = net.workers["worker-1"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardnet",
            "withdraw",
            *net.accounts.node_args(net.workdir / "keys" / "worker-1"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "withdrew" in done.stdout

    async def after_withdraw():
        async with await net.chain(DEV_KEYS[0]) as chain:
            assert await chain.credit_of(worker.address) == 0

    run(after_withdraw())


def test_a_second_settle_is_rejected(paid_network):
    net = paid_network
    start(net, 1)
    with Client(net.net.coordinator.address) as client:
        result = client.infer("mlp", demo_inputs(50), payer=net.payer())
        settlement = client.wait_settled(result.escrow_jobs[0])
    assert settlement.status == "settled"

    async def settle_again():
        async with await net.chain(net.coordinator_identity.account.key) as chain:
            job = bytes.fromhex(settlement.escrow_job_id[2:])
            with pytest.raises(TxReverted) as info:
                await chain.settle(job, [], [], 0, bytes(32))
            assert info.value.error_name == "JobNotOpen"
            assert await chain.count_settlements(job) == 1

    run(settle_again())


def test_an_escrow_pays_for_one_request_only(paid_network):
    net = paid_network
    start(net, 1)
    x = demo_inputs(10)
    with Client(net.net.coordinator.address) as client:
        result = client.infer("mlp", x, payer=net.payer())
    (escrow,) = result.escrow_jobs

    def again(inputs):
        request = pb.ModelInferRequest(model_name="mlp")
        add_inputs(request, inputs)
        set_param(request.parameters, "shardnet.escrow_job", escrow)
        with grpc.insecure_channel(net.net.coordinator.address) as channel:
            return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)

    # The same request again (a retry): the stored answer, not a second job or payment.
    repeat = again(x)
    assert repeat.parameters["shardnet.job_id"].string_param == result.job_ids[0]
    assert repeat.raw_output_contents[0] == result.outputs["logits"].tobytes()
    # Other inputs with the same escrow: refused.
    with pytest.raises(grpc.RpcError) as info:
        again(demo_inputs(10, seed=99))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already paid for job" in info.value.details()


def test_refund_after_the_deadline(paid_network):
    net = paid_network
    _, client = net.accounts.create("client")
    job = bytes(range(32))

    async def scenario():
        async with await net.chain(client.account.key) as chain:
            now = await chain.block_timestamp()
            before = await chain.balance()
            coordinator = Account.from_key(DEV_KEYS[1]).address
            opened = await chain.open_job(job, coordinator, now + 100, 10**15, 10**15)
            with pytest.raises(TxReverted) as info:
                await chain.refund(job)  # refused before the deadline (not sent: no gas spent)
            assert info.value.error_name == "DeadlineNotPassed"
            await chain.increase_time(101)
            refunded = await chain.refund(job)
            assert await chain.balance() == before - opened.fee_wei - refunded.fee_wei

    run(scenario())


def test_unstaked_workers_get_no_work(paid_network):
    net = paid_network
    start(net, 1)
    # No stake and none offered: the worker refuses to start, saying why.
    with pytest.raises(LaunchError, match="not registered; pass --stake-wei"):
        net.start_worker("worker-poor", stake=False)
    # A worker without chain keys is refused by the paying coordinator.
    net.net.start_worker("--intra-op-threads", "1", name="worker-plain")
    deadline = time.monotonic() + 10
    while "names no chain address" not in net.net.coordinator.log_tail(50):
        assert time.monotonic() < deadline, net.net.coordinator.log_tail()
        time.sleep(0.1)
    with Client(net.net.coordinator.address) as client:
        assert [w.info.worker_id for w in client.workers()] == ["worker-1"]
        result = client.infer("mlp", demo_inputs(500))
    assert {s["worker"] for s in result.shards} == {"worker-1"}


def test_required_policy_refuses_unpaid_requests(paid_network):
    net = paid_network
    start(net, 1, "--payment-policy", "required")
    with Client(net.net.coordinator.address) as client:
        with pytest.raises(RemoteError) as info:
            client.infer("mlp", demo_inputs(5))
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "requires payment" in info.value.details
        paid = client.infer("mlp", demo_inputs(5), payer=net.payer())
        assert client.wait_settled(paid.escrow_jobs[0]).status == "settled"


def test_chain_down_at_settle_time_is_paid_exactly_once_after_restart(paid_network, reference):
    net = paid_network
    # worker-1 holds its shards 2 s: the chain goes down while the job runs.
    start(net, 1, worker_args=("--fault-delay-s", "2"))
    x = demo_inputs(300, seed=8)["x"]
    outcome = {}

    def submit():
        with Client(net.net.coordinator.address) as client:
            outcome["result"] = client.infer("mlp", {"x": x}, payer=net.payer())

    thread = threading.Thread(target=submit)
    thread.start()
    time.sleep(1.0)  # escrow opened and admitted; shards held by the worker
    assert thread.is_alive()
    port, state = net.anvil.port, net.anvil.state_path
    net.anvil.stop()  # graceful: anvil writes its state
    thread.join(30)
    result = outcome["result"]
    assert result.outputs["logits"].tobytes() == reference(x)["logits"].tobytes()
    (escrow,) = result.escrow_jobs
    with Client(net.net.coordinator.address) as client:
        deadline = time.monotonic() + 10
        while (s := client.settlement(escrow)).attempts < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert s.status == "pending" and s.last_error, s
        print(f"chain down: {s.status} after {s.attempts} attempts ({s.last_error})")
        t0 = time.monotonic()
        net.anvil = Anvil.start(port=port, state_path=state, log_path=net.workdir / "anvil2.log")
        settled = client.wait_settled(escrow, timeout_s=30)
        recovery = time.monotonic() - t0
    assert settled.status == "settled", settled.last_error
    assert recovery < 10
    print(f"settled {recovery:.2f}s after the chain came back")

    async def once():
        async with await net.chain(DEV_KEYS[0]) as chain:
            assert await chain.count_settlements(bytes.fromhex(escrow[2:])) == 1

    run(once())
    np.testing.assert_array_equal(result.outputs["probs"], reference(x)["probs"])


def test_fresh_nodes_generate_and_fund_their_keys(tmp_path, models_dir, monkeypatch):
    """What a container does on its first start (docker-compose.yml)."""
    anvil, deployment = start_dev_chain(tmp_path / "chain")
    monkeypatch.setenv("SHARDNET_PASSPHRASE", "test-only")
    dep = str(tmp_path / "chain" / "deployment.json")
    try:
        with LocalNetwork(tmp_path, models_dir, join="register") as net:
            net.start_coordinator(
                "--chain",
                dep,
                "--key-dir",
                str(tmp_path / "keys" / "c"),
                "--generate-keys",
                "--faucet-wei",
                str(10**20),
                "--ledger",
                str(tmp_path / "ledger.sqlite"),
            )
            net.start_worker(
                "--chain",
                dep,
                "--key-dir",
                str(tmp_path / "keys" / "w"),
                "--generate-keys",
                "--faucet-wei",
                str(10**19),
                "--stake-wei",
                str(deployment.min_stake_wei),
            )
            net.wait_for_workers(1)
            with Client(net.coordinator.address) as client:
                assert client.infer("mlp", demo_inputs(10)).outputs["logits"].shape == (10, 10)
    finally:
        anvil.stop()
