"""The chain layer against a real Anvil with the committed contract artifacts (no mocks)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from shardnet.chain import (
    DEV_KEYS,
    JOB_OPEN,
    JOB_REFUNDED,
    JOB_SETTLED,
    Anvil,
    Chain,
    ChainError,
    ChainUnavailable,
    Deployment,
    Receipt,
    TxResult,
    TxReverted,
    deploy,
    find_binary,
    free_port,
    sign_receipt,
)
from shardnet.chain.contracts import RECEIPT_TYPES, make_web3

pytestmark = pytest.mark.slow

ETH = 10**18
DEPLOYER, CLIENT, COORDINATOR = DEV_KEYS[0], DEV_KEYS[1], DEV_KEYS[2]


def run(coro):
    return asyncio.run(coro)


def new_id() -> bytes:
    return os.urandom(32)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("anvil")
    with Anvil.start(state_path=folder / "state.json", log_path=folder / "anvil.log") as anvil:
        yield anvil


@pytest.fixture(scope="module")
def dep(node) -> Deployment:
    return run(deploy(node.rpc_url, DEPLOYER, min_stake_wei=ETH, unbonding_s=3600))


async def fresh_worker(dep: Deployment, *, fund: int = 5 * ETH, stake: int | None = ETH) -> Chain:
    """A new key, funded by the deployer, registered with `stake` unless None."""
    key = "0x" + Account.create().key.hex()
    async with await Chain.connect(dep, DEPLOYER) as funder:
        await funder.transfer(Account.from_key(key).address, fund)
    worker = await Chain.connect(dep, key)
    if stake is not None:
        await worker.register(os.urandom(32), stake)
    return worker


# ─── Anvil, keys, deployment ───


def test_dev_keys_are_anvils_funded_accounts(node):
    async def main():
        w3 = make_web3(node.rpc_url, 5)
        try:
            return await w3.eth.accounts
        finally:
            await w3.provider.disconnect()

    assert len(DEV_KEYS) == 10
    assert DEV_KEYS[0] == "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    assert [Account.from_key(k).address for k in DEV_KEYS] == run(main())


def test_find_binary(monkeypatch, tmp_path):
    assert find_binary("anvil").is_file()
    fake = tmp_path / "anvil"
    fake.write_text("")
    monkeypatch.setenv("SHARDNET_ANVIL", str(fake))
    assert find_binary("anvil") == fake
    monkeypatch.setenv("SHARDNET_ANVIL", str(tmp_path / "missing"))
    with pytest.raises(ChainError, match="SHARDNET_ANVIL"):
        find_binary("anvil")
    monkeypatch.delenv("SHARDNET_ANVIL")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ChainError, match="npm ci --prefix contracts"):
        find_binary("no-such-foundry-tool")


def test_anvil_start_fails_with_log_tail_when_port_taken(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ChainError, match="anvil exited"):
            Anvil.start(port=s.getsockname()[1], log_path=tmp_path / "a.log", ready_timeout_s=10)


def test_deployment_save_load_round_trip(dep, tmp_path):
    path = tmp_path / "sub" / "deployment.json"
    dep.save(path)
    assert Deployment.load(path) == dep
    assert [p.name for p in path.parent.iterdir()] == ["deployment.json"]  # no temp left

    with pytest.raises(ChainError, match="no deployment file"):
        Deployment.load(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(ChainError, match="cannot read"):
        Deployment.load(path)
    path.write_text(json.dumps({**dataclasses.asdict(dep), "escrow": "0x1234"}))
    with pytest.raises(ChainError, match="escrow"):
        Deployment.load(path)


def test_deploy_sets_parameters_and_wires_escrow(dep):
    async def main():
        async with await Chain.connect(dep, CLIENT) as chain:
            reg, esc = chain.registry.functions, chain.escrow.functions
            return (
                await reg.minStake().call(),
                await reg.unbondingPeriod().call(),
                await reg.escrow().call(),
                await esc.registry().call(),
                await esc.slashBps().call(),
            )

    assert run(main()) == (ETH, 3600, dep.escrow, dep.registry, 5000)


def test_connect_checks_chain_id_and_code(dep):
    with pytest.raises(ChainError, match="chain id"):
        run(Chain.connect(dataclasses.replace(dep, chain_id=1), CLIENT))
    with pytest.raises(ChainError, match="no escrow contract"):
        run(Chain.connect(dataclasses.replace(dep, escrow="0x" + "00" * 19 + "01"), CLIENT))


def test_unreachable_rpc_is_chain_unavailable(dep):
    closed = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ChainUnavailable) as info:
        run(Chain.connect(dataclasses.replace(dep, rpc_url=closed), CLIENT))
    assert info.value.code.name == "UNAVAILABLE"
    with pytest.raises(ChainUnavailable):
        run(deploy(closed, DEPLOYER))
    assert time.monotonic() - t0 < 5  # no silent retry loop


def test_silent_rpc_times_out_as_chain_unavailable(dep):
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        silent = dataclasses.replace(dep, rpc_url=f"http://127.0.0.1:{s.getsockname()[1]}")
        t0 = time.monotonic()
        with pytest.raises(ChainUnavailable):
            run(Chain.connect(silent, CLIENT, timeout_s=0.5))
        assert time.monotonic() - t0 < 3


# ─── WorkerRegistry ───


def test_register_and_stake(dep):
    async def main():
        worker = await fresh_worker(dep, stake=None)
        async with worker, await Chain.connect(dep, CLIENT) as other:
            peer_key = os.urandom(32)
            assert not await other.is_staked(worker.address)
            assert not await other.is_registered(worker.address)

            with pytest.raises(TxReverted) as low:
                await worker.register(peer_key, ETH // 2)
            assert low.value.error_name == "StakeTooLow"
            assert low.value.error_args == {"stake": ETH // 2, "minStake": ETH}

            res = await worker.register(peer_key, ETH)
            assert res.gas_used > 21_000
            assert await other.is_staked(worker.address)
            assert await other.is_registered(worker.address)
            assert await other.peer_key_of(worker.address) == peer_key
            assert await other.worker_of_peer_key(peer_key) == worker.address
            assert await other.worker_of_peer_key(os.urandom(32)) is None
            await worker.add_stake(ETH // 4)
            assert await other.stake_of(worker.address) == ETH + ETH // 4

            with pytest.raises(TxReverted) as again:
                await worker.register(os.urandom(32), ETH)
            assert again.value.error_name == "AlreadyRegistered"

            await worker.begin_unbond()
            assert not await other.is_staked(worker.address)
            assert await other.is_registered(worker.address)
            with pytest.raises(TxReverted, match="UnbondingNotOver"):
                await worker.withdraw_stake()
            await other.increase_time(dep.unbonding_s)
            before = await worker.balance()
            res = await worker.withdraw_stake()
            assert await worker.balance() == before + ETH + ETH // 4 - res.fee_wei
            assert not await other.is_registered(worker.address)

    run(main())


def test_unregistered_address_is_not_staked(dep):
    async def main():
        async with await Chain.connect(dep, CLIENT) as chain:
            addr = Account.create().address
            return (
                await chain.is_staked(addr),
                await chain.is_registered(addr),
                await chain.stake_of(addr),
                await chain.peer_key_of(addr),
            )

    assert run(main()) == (False, False, 0, bytes(32))


# ─── JobEscrow ───


def test_open_settle_withdraw(dep):
    deposit, cap = 10**17, 8 * 10**16
    amounts, fee = [3 * 10**16, 2 * 10**16], 5 * 10**15

    async def main():
        w1, w2 = await fresh_worker(dep), await fresh_worker(dep)
        async with (
            w1,
            w2,
            await Chain.connect(dep, CLIENT) as client,
            await Chain.connect(dep, COORDINATOR) as coord,
        ):
            job = new_id()
            deadline = await client.block_timestamp() + 600
            credit_before = {a: await client.credit_of(a) for a in (client.address, coord.address)}
            await client.open_job(job, coord.address, deadline, cap, deposit)
            state = await client.get_job(job)
            assert (state.client, state.coordinator, state.status) == (
                client.address,
                coord.address,
                JOB_OPEN,
            )
            assert (state.deadline, state.deposit, state.price_cap) == (deadline, deposit, cap)

            with pytest.raises(TxReverted) as not_coord:
                await client.settle(job, [w1.address], [1], 0, bytes(32))
            assert not_coord.value.error_name == "NotCoordinator"
            with pytest.raises(TxReverted) as over:
                await coord.settle(job, [w1.address], [cap], 1, bytes(32))
            assert over.value.error_name == "OverPriceCap"

            root = new_id()
            await coord.settle(job, [w1.address, w2.address], amounts, fee, root)
            assert (await client.get_job(job)).status == JOB_SETTLED
            assert await client.credit_of(w1.address) == amounts[0]
            assert await client.credit_of(w2.address) == amounts[1]
            assert await client.credit_of(coord.address) == credit_before[coord.address] + fee
            change = deposit - sum(amounts) - fee
            assert await client.credit_of(client.address) == credit_before[client.address] + change

            with pytest.raises(TxReverted) as twice:
                await coord.settle(job, [w1.address, w2.address], amounts, fee, root)
            assert twice.value.error_name == "JobNotOpen"
            assert twice.value.error_args == {"jobId": job, "status": JOB_SETTLED}
            settlements = await client.settlements(job)
            assert len(settlements) == 1 == await client.count_settlements(job)
            assert (settlements[0].results_root, settlements[0].total) == (root, sum(amounts) + fee)
            assert settlements[0].client_refund == change
            assert await client.count_settlements(new_id()) == 0

            escrow_before = await w1.balance(dep.escrow)
            before = await w1.balance()
            res = await w1.withdraw()
            assert await w1.balance() == before + amounts[0] - res.fee_wei
            assert await w1.balance(dep.escrow) == escrow_before - amounts[0]
            assert await w1.credit_of(w1.address) == 0
            with pytest.raises(TxReverted) as nothing:
                await w1.withdraw()
            assert nothing.value.error_name == "NothingToWithdraw"

    run(main())


def test_refund_only_after_deadline(dep):
    async def main():
        async with (
            await Chain.connect(dep, CLIENT) as client,
            await Chain.connect(dep, COORDINATOR) as coord,
        ):
            job = new_id()
            deadline = await client.block_timestamp() + 60
            await client.open_job(job, coord.address, deadline, 10**16, 10**16)
            with pytest.raises(TxReverted) as early:
                await client.refund(job)
            assert early.value.error_name == "DeadlineNotPassed"
            with pytest.raises(TxReverted) as not_client:
                await coord.refund(job)
            assert not_client.value.error_name == "NotClient"

            assert await client.increase_time(61) > deadline
            with pytest.raises(TxReverted) as late:
                await coord.settle(job, [], [], 0, bytes(32))
            assert late.value.error_name == "DeadlinePassed"
            before = await client.balance()
            res = await client.refund(job)
            assert await client.balance() == before + 10**16 - res.fee_wei
            assert (await client.get_job(job)).status == JOB_REFUNDED
            with pytest.raises(TxReverted, match="JobNotOpen"):
                await client.refund(job)
            with pytest.raises(TxReverted) as reuse:
                await client.open_job(job, coord.address, deadline + 600, 1, 1)
            assert reuse.value.error_name == "JobExists"

    run(main())


def test_concurrent_transactions_from_one_account(dep):
    async def main():
        async with await Chain.connect(dep, CLIENT) as client:
            deadline = await client.block_timestamp() + 600
            jobs = [new_id() for _ in range(8)]
            await asyncio.gather(
                *(client.open_job(j, client.address, deadline, 1, 1) for j in jobs)
            )
            states = await asyncio.gather(*(client.get_job(j) for j in jobs))
            assert {s.status for s in states} == {JOB_OPEN}
            # A revert must not burn a nonce: the next transaction still goes through.
            with pytest.raises(TxReverted):
                await client.open_job(jobs[0], client.address, deadline, 1, 1)
            await client.open_job(new_id(), client.address, deadline, 1, 1)

    run(main())


def test_racing_settles_pay_once(dep):
    """Two settles of one job in flight at once: one pays, the other reverts with the
    decoded error whether it failed at estimation or after being mined."""

    async def main():
        worker = await fresh_worker(dep)
        async with (
            worker,
            await Chain.connect(dep, CLIENT) as client,
            await Chain.connect(dep, COORDINATOR) as coord,
        ):
            job = new_id()
            await client.open_job(job, coord.address, await client.block_timestamp() + 600, 9, 9)
            results = await asyncio.gather(
                *(coord.settle(job, [worker.address], [4], 1, new_id()) for _ in range(3)),
                return_exceptions=True,
            )
            paid = [r for r in results if not isinstance(r, BaseException)]
            failed = [r for r in results if isinstance(r, BaseException)]
            assert len(paid) == 1
            assert all(isinstance(e, TxReverted) and e.error_name == "JobNotOpen" for e in failed)
            print("\nracing settles, mined reverts:", sum(e.tx_hash is not None for e in failed))
            assert await client.count_settlements(job) == 1
            assert await client.credit_of(worker.address) == 4

    run(main())


def test_revert_after_mining_is_decoded(dep):
    """With automine off, two settles both pass estimation and land in one block; the
    second reverts on chain and the error is recovered by replaying it."""

    async def main():
        worker = await fresh_worker(dep)
        async with (
            worker,
            await Chain.connect(dep, CLIENT) as client,
            await Chain.connect(dep, COORDINATOR) as coord,
        ):
            job = new_id()
            await client.open_job(job, coord.address, await client.block_timestamp() + 600, 9, 9)
            await client._dev_rpc("evm_setAutomine", [False])
            try:
                tasks = [
                    asyncio.create_task(coord.settle(job, [worker.address], [4], 1, new_id()))
                    for _ in range(2)
                ]

                async def pending() -> int:
                    return int((await client._dev_rpc("txpool_status", []))["pending"], 16)

                # Polling the node's pool: there is no local event to wait on.
                async with asyncio.timeout(10):
                    while await pending() < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                await client._dev_rpc("evm_mine", [])
                results = await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                await client._dev_rpc("evm_setAutomine", [True])
            ok, err = results
            assert isinstance(ok, TxResult), ok
            assert isinstance(err, TxReverted), err
            assert err.error_name == "JobNotOpen"
            assert err.tx_hash is not None  # it was mined
            assert await client.count_settlements(job) == 1

    run(main())


def test_slash_with_conflicting_receipts(dep):
    async def main():
        cheat_key = "0x" + Account.create().key.hex()
        async with await Chain.connect(dep, DEPLOYER) as funder:
            await funder.transfer(Account.from_key(cheat_key).address, 5 * ETH)
        cheat = await Chain.connect(dep, cheat_key)
        await cheat.register(os.urandom(32), 2 * ETH)
        honest = await fresh_worker(dep)
        honest_key = honest._account.key.hex()
        async with (
            cheat,
            honest,
            await Chain.connect(dep, DEV_KEYS[3]) as client,
            await Chain.connect(dep, COORDINATOR) as coord,
        ):
            job = new_id()
            await client.open_job(job, coord.address, await client.block_timestamp() + 600, 1, 1)
            model, inp = new_id(), new_id()
            bad = Receipt(job, 0, model, inp, new_id(), cheat.address)
            good = Receipt(job, 7, model, inp, new_id(), honest.address)

            digest = await coord.receipt_digest(bad)
            domain = {
                "name": "shardnet",
                "version": "1",
                "chainId": dep.chain_id,
                "verifyingContract": dep.escrow,
            }
            message = dict(zip([f["name"] for f in RECEIPT_TYPES["Receipt"]], bad, strict=True))
            signable = encode_typed_data(domain, RECEIPT_TYPES, message)
            assert Account.sign_message(signable, cheat_key).message_hash == digest

            kw = {"chain_id": dep.chain_id, "escrow": dep.escrow}
            bad_sig = sign_receipt(bad, cheat_key, **kw)
            good_sig = sign_receipt(good, "0x" + honest_key, **kw)

            with pytest.raises(TxReverted) as forged:
                await coord.slash(bad, good_sig, good, good_sig)
            assert forged.value.error_name == "InvalidSignature"
            with pytest.raises(TxReverted) as not_coord:
                await client.slash(bad, bad_sig, good, good_sig)
            assert not_coord.value.error_name == "NotCoordinator"

            await coord.slash(bad, bad_sig, good, good_sig)
            assert await coord.stake_of(cheat.address) == ETH  # 50% of 2 ETH
            assert await coord.registry_credit_of(client.address) == ETH
            with pytest.raises(TxReverted) as reused:
                await coord.slash(bad, bad_sig, good, good_sig)
            assert reused.value.error_name == "EvidenceAlreadyUsed"

            before = await client.balance()
            res = await client.registry_withdraw()
            assert await client.balance() == before + ETH - res.fee_wei

    run(main())


def test_settle_gas_by_worker_count(dep):
    """Every payee fresh (worker, coordinator and client credit slots all new), as in the
    contracts README's per-transaction table."""

    async def main():
        workers = [await fresh_worker(dep, fund=2 * ETH) for _ in range(10)]
        gas = {}
        for n in (1, 3, 10):
            client = await fresh_worker(dep, fund=ETH, stake=None)
            coord = await fresh_worker(dep, fund=ETH, stake=None)
            async with client, coord:
                job = new_id()
                deadline = await client.block_timestamp() + 600
                await client.open_job(job, coord.address, deadline, n + 1, n + 2)
                addrs = [w.address for w in workers[:n]]
                gas[n] = (await coord.settle(job, addrs, [1] * n, 1, new_id())).gas_used
        for w in workers:
            await w.close()
        return gas

    gas = run(main())
    print("\nsettle gas_used by worker count:", gas)
    assert gas[1] < gas[3] < gas[10]


# ─── Persistence across an anvil restart ───


def test_state_survives_graceful_restart(tmp_path):
    """SIGTERM dumps `--state`; a restart on the same port and state file keeps the
    deployment, stakes, credits, jobs and the JobSettled logs (settle-exactly-once relies
    on this). SIGKILL keeps what the last `--state-interval` dump held."""
    state = tmp_path / "state.json"
    log = tmp_path / "anvil.log"

    async def before_restart(rpc_url):
        dep = await deploy(rpc_url, DEPLOYER)
        worker = await fresh_worker(dep)
        async with (
            worker,
            await Chain.connect(dep, CLIENT) as client,
            await Chain.connect(dep, COORDINATOR) as coord,
        ):
            job = new_id()
            await client.open_job(job, coord.address, await client.block_timestamp() + 600, 5, 9)
            await coord.settle(job, [worker.address], [3], 2, new_id())
            return dep, worker.address, job, await client.balance()

    async def after_restart(dep, worker, job):
        async with (
            await Chain.connect(dep, CLIENT) as client,
            await Chain.connect(dep, COORDINATOR) as coord,
        ):
            snapshot = (
                await client.is_staked(worker),
                await client.credit_of(worker),
                (await client.get_job(job)).status,
                await client.count_settlements(job),
                await client.balance(),
            )
            with pytest.raises(TxReverted, match="JobNotOpen"):
                await coord.settle(job, [worker], [3], 2, new_id())
            await client.open_job(
                new_id(), coord.address, await client.block_timestamp() + 60, 1, 1
            )
            return snapshot

    node = Anvil.start(state_path=state, log_path=log)
    port = node.port
    try:
        dep, worker, job, client_balance = run(before_restart(node.rpc_url))
    finally:
        assert node.stop() == 0
    assert state.exists()

    node = Anvil.start(port=port, state_path=state, log_path=log)
    try:
        assert node.rpc_url == dep.rpc_url
        assert run(after_restart(dep, worker, job)) == (True, 3, JOB_SETTLED, 1, client_balance)
        time.sleep(1.5)  # let a --state-interval dump happen, then crash
        node.kill()
        node = Anvil.start(port=port, state_path=state, log_path=log)
        assert run(after_restart(dep, worker, job))[:4] == (True, 3, JOB_SETTLED, 1)
    finally:
        node.stop()
