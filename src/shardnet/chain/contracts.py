"""Typed async wrappers around the WorkerRegistry and JobEscrow contracts.

One `Chain` is one account acting on one deployment. Every method is a thin shell over one
contract call: amounts, verdicts and who gets paid are decided elsewhere. Transactions are
signed locally with the account's key (never anvil's unlocked accounts), nonces are
assigned under a lock so concurrent calls from one process do not collide, and each
transaction method waits for its receipt. web3/aiohttp exceptions become `ChainError`s here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import aiohttp
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from eth_utils.abi import collapse_if_tuple
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    Web3RPCError,
)

from shardnet.chain.errors import ChainError, ChainUnavailable, TxReverted

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from shardnet.chain.deploy import Deployment

JOB_NONE, JOB_OPEN, JOB_SETTLED, JOB_REFUNDED = 0, 1, 2, 3
GAS_HEADROOM = 1.2  # estimates are exact on anvil; headroom covers state moving underneath


# ─── ABI artifacts and revert decoding ──────────────────────────────────────────────────


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """`{"contractName", "abi", "bytecode"}` of a committed contract artifact."""
    text = resources.files("shardnet.chain").joinpath("artifacts", f"{name}.json").read_text()
    return json.loads(text)


@cache
def _error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """4-byte selector → (error name, arg names, arg ABI types), over both contracts."""
    table = {}
    for contract in ("WorkerRegistry", "JobEscrow"):
        for item in load_artifact(contract)["abi"]:
            if item["type"] != "error":
                continue
            types = [collapse_if_tuple(i) for i in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            table[selector] = (item["name"], [i["name"] for i in item["inputs"]], types)
    return table


def decode_revert(data: str | bytes | None) -> tuple[str, dict[str, Any]] | None:
    """Decodes a custom error from revert data: `(name, {arg: value})`, or None if the
    data is not one of the contracts' errors."""
    if isinstance(data, str):
        if not data.startswith("0x"):
            return None
        try:
            data = bytes.fromhex(data[2:])
        except ValueError:
            return None
    if not data or len(data) < 4:
        return None
    entry = _error_table().get(bytes(data[:4]))
    if entry is None:
        return None
    name, arg_names, types = entry
    try:
        values = abi_decode(types, bytes(data[4:]))
    except Exception:
        return None
    return name, dict(zip(arg_names, values, strict=True))


def _reverted(exc: ContractLogicError, what: str, tx_hash: str | None = None) -> TxReverted:
    data = exc.data if isinstance(exc.data, str) else None
    decoded = decode_revert(data)
    if decoded is None:
        return TxReverted(f"{what} reverted: {exc.message}", data=data, tx_hash=tx_hash)
    name, args = decoded
    return TxReverted(f"{what} reverted", error_name=name, args=args, data=data, tx_hash=tx_hash)


@asynccontextmanager
async def _boundary(what: str) -> AsyncIterator[None]:
    """Translates web3/aiohttp exceptions raised inside into ChainErrors."""
    try:
        yield
    except ContractLogicError as exc:
        raise _reverted(exc, what) from exc
    except (aiohttp.ClientError, OSError, TimeoutError, ProviderConnectionError) as exc:
        raise ChainUnavailable(f"{what}: chain RPC unreachable: {exc!r}") from exc
    except TimeExhausted as exc:
        raise ChainUnavailable(f"{what}: no receipt in time: {exc}") from exc
    except Web3RPCError as exc:
        raise ChainError(f"{what}: RPC error: {exc.message}") from exc


# ─── Plain data ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class JobState:
    """JobEscrow's record of one job (`status` is one of JOB_NONE..JOB_REFUNDED)."""

    client: str
    deadline: int
    status: int
    coordinator: str
    deposit: int
    price_cap: int


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    gas_used: int
    block_number: int
    fee_wei: int = 0  # gas_used × effective gas price: what the sender paid for gas


@dataclass(frozen=True)
class Settlement:
    """One `JobSettled` event."""

    job_id: bytes
    results_root: bytes
    total: int
    coordinator_fee: int
    client_refund: int
    tx_hash: str
    block_number: int


class Receipt(NamedTuple):
    """A worker's EIP-712 shard receipt, field for field as JobEscrow's `Receipt` struct."""

    job_id: bytes
    shard_id: int
    model_sha256: bytes
    input_digest: bytes
    output_digest: bytes
    worker: str


RECEIPT_TYPES = {
    "Receipt": [
        {"name": "jobId", "type": "bytes32"},
        {"name": "shardId", "type": "uint64"},
        {"name": "modelSha256", "type": "bytes32"},
        {"name": "inputDigest", "type": "bytes32"},
        {"name": "outputDigest", "type": "bytes32"},
        {"name": "worker", "type": "address"},
    ]
}


def sign_receipt(receipt: Receipt, private_key: str, *, chain_id: int, escrow: str) -> bytes:
    """The 65-byte (r‖s‖v) EIP-712 signature JobEscrow's `slash` checks."""
    domain = {"name": "shardnet", "version": "1", "chainId": chain_id, "verifyingContract": escrow}
    message = dict(zip((f["name"] for f in RECEIPT_TYPES["Receipt"]), receipt, strict=True))
    signable = encode_typed_data(domain, RECEIPT_TYPES, message)
    return bytes(Account.sign_message(signable, private_key).signature)


def _b32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {value!r}")
    return bytes(value)


def _receipt_arg(r: Sequence[Any]) -> tuple[Any, ...]:
    job_id, shard_id, model, inp, out, worker = r
    return (
        _b32(job_id, "jobId"),
        int(shard_id),
        _b32(model, "modelSha256"),
        _b32(inp, "inputDigest"),
        _b32(out, "outputDigest"),
        to_checksum_address(worker),
    )


def make_web3(rpc_url: str, timeout_s: float) -> AsyncWeb3:
    """An AsyncWeb3 over HTTP with a per-request timeout and no silent retries (callers
    see `ChainUnavailable` at once and decide themselves)."""
    provider = AsyncHTTPProvider(
        rpc_url,
        request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_s)},
        exception_retry_configuration=None,
    )
    return AsyncWeb3(provider)


# ─── The chain client ───────────────────────────────────────────────────────────────────


class Chain:
    """One account acting on one deployment. Create with `await Chain.connect(...)`."""

    def __init__(
        self, w3: AsyncWeb3, deployment: Deployment, account: LocalAccount, timeout_s: float
    ) -> None:
        self._w3 = w3
        self.deployment = deployment
        self._account = account
        self._timeout_s = timeout_s
        self._nonce: int | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False
        self.registry = w3.eth.contract(
            address=to_checksum_address(deployment.registry),
            abi=load_artifact("WorkerRegistry")["abi"],
        )
        self.escrow = w3.eth.contract(
            address=to_checksum_address(deployment.escrow), abi=load_artifact("JobEscrow")["abi"]
        )

    @classmethod
    async def connect(
        cls, deployment: Deployment, private_key: str, *, timeout_s: float = 10
    ) -> Chain:
        """Connects to `deployment.rpc_url` and checks the node serves the deployment's chain
        and that the contracts exist there."""
        w3 = make_web3(deployment.rpc_url, timeout_s)
        chain = cls(w3, deployment, Account.from_key(private_key), timeout_s)
        try:
            async with _boundary("connect"):
                chain_id = await w3.eth.chain_id
                if chain_id != deployment.chain_id:
                    raise ChainError(
                        f"{deployment.rpc_url} serves chain id {chain_id}, the deployment "
                        f"is for {deployment.chain_id}"
                    )
                for name, addr in (
                    ("registry", deployment.registry),
                    ("escrow", deployment.escrow),
                ):
                    if not await w3.eth.get_code(to_checksum_address(addr)):
                        raise ChainError(
                            f"no {name} contract at {addr} on {deployment.rpc_url}: the chain "
                            "was reset or the deployment file is stale; deploy again"
                        )
        except BaseException:
            await chain.close()
            raise
        return chain

    @property
    def address(self) -> str:
        return self._account.address

    async def close(self) -> None:
        """Closes the HTTP session. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._w3.provider.disconnect()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ─── transactions ───

    async def _fees(self) -> dict[str, int]:
        block = await self._w3.eth.get_block("latest")
        tip = await self._w3.eth.max_priority_fee
        return {"maxFeePerGas": 2 * block["baseFeePerGas"] + tip, "maxPriorityFeePerGas": tip}

    async def _transact(
        self, what: str, fn: Any = None, *, to: str | None = None, value: int = 0
    ) -> TxResult:
        """Builds, signs and sends one transaction (a contract call `fn`, or a plain transfer
        to `to`), waits for its receipt and raises TxReverted if it reverted."""
        async with _boundary(what):
            async with self._send_lock:
                if self._nonce is None:
                    self._nonce = await self._w3.eth.get_transaction_count(self.address, "pending")
                tx: dict[str, Any] = {
                    "from": self.address,
                    "value": value,
                    "nonce": self._nonce,
                    "chainId": self.deployment.chain_id,
                    **await self._fees(),
                }
                if fn is None:
                    tx.update(to=to_checksum_address(to), gas=21_000)
                else:
                    # Reverts surface here, decoded, before anything is sent.
                    gas = await fn.estimate_gas({"from": self.address, "value": value})
                    tx = await fn.build_transaction({**tx, "gas": int(gas * GAS_HEADROOM)})
                signed = self._account.sign_transaction(tx)
                try:
                    tx_hash = await self._w3.eth.send_raw_transaction(signed.raw_transaction)
                except BaseException:
                    self._nonce = None  # unknown whether the node took it: re-read next time
                    raise
                self._nonce += 1
            receipt = await self._w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self._timeout_s, poll_latency=0.05
            )
            result = TxResult(
                tx_hash="0x" + bytes(tx_hash).hex(),
                gas_used=receipt["gasUsed"],
                block_number=receipt["blockNumber"],
                fee_wei=receipt["gasUsed"] * receipt["effectiveGasPrice"],
            )
            if receipt["status"] != 1:
                raise await self._replay_revert(what, tx, receipt["blockNumber"], result.tx_hash)
            return result

    async def _replay_revert(
        self, what: str, tx: dict[str, Any], block: int, tx_hash: str
    ) -> TxReverted:
        """A transaction that passed estimation but reverted when mined (state changed in
        between, e.g. a racing settle earlier in the same block): re-run it as a call on the
        state after its block to learn why."""
        call = {k: tx[k] for k in ("from", "to", "value", "data") if k in tx}
        try:
            await self._w3.eth.call(call, block_identifier=block)
        except ContractLogicError as exc:
            return _reverted(exc, what, tx_hash)
        return TxReverted(f"{what} reverted (reason not reproducible)", tx_hash=tx_hash)

    async def _call(self, what: str, fn: Any) -> Any:
        async with _boundary(what):
            return await fn.call()

    # ─── WorkerRegistry ───

    async def register(self, peer_key: bytes, stake_wei: int) -> TxResult:
        """Registers this account as a worker bound to `peer_key` (raw 32-byte Ed25519)."""
        fn = self.registry.functions.register(_b32(peer_key, "peer_key"))
        return await self._transact("register", fn, value=stake_wei)

    async def add_stake(self, wei: int) -> TxResult:
        return await self._transact("stake", self.registry.functions.stake(), value=wei)

    async def begin_unbond(self) -> TxResult:
        return await self._transact("beginUnbond", self.registry.functions.beginUnbond())

    async def withdraw_stake(self) -> TxResult:
        return await self._transact("withdrawStake", self.registry.functions.withdrawStake())

    async def registry_withdraw(self) -> TxResult:
        """Pulls this account's registry credits (slashed stake credited to it as a client)."""
        return await self._transact("registry.withdraw", self.registry.functions.withdraw())

    async def is_staked(self, addr: str) -> bool:
        fn = self.registry.functions.isStaked(to_checksum_address(addr))
        return await self._call("isStaked", fn)

    async def is_registered(self, addr: str) -> bool:
        fn = self.registry.functions.isRegistered(to_checksum_address(addr))
        return await self._call("isRegistered", fn)

    async def stake_of(self, addr: str) -> int:
        return await self._call(
            "stakeOf", self.registry.functions.stakeOf(to_checksum_address(addr))
        )

    async def peer_key_of(self, addr: str) -> bytes:
        fn = self.registry.functions.peerKeyOf(to_checksum_address(addr))
        return bytes(await self._call("peerKeyOf", fn))

    async def worker_of_peer_key(self, peer_key: bytes) -> str | None:
        """The address bound to `peer_key`, or None."""
        fn = self.registry.functions.workerOfPeerKey(_b32(peer_key, "peer_key"))
        addr = await self._call("workerOfPeerKey", fn)
        return None if int(addr, 16) == 0 else addr

    async def registry_credit_of(self, addr: str) -> int:
        fn = self.registry.functions.creditOf(to_checksum_address(addr))
        return await self._call("registry.creditOf", fn)

    # ─── JobEscrow ───

    async def open_job(
        self, job_id: bytes, coordinator: str, deadline: int, price_cap: int, deposit: int
    ) -> TxResult:
        """Opens a job with this account as its client, depositing `deposit` wei."""
        fn = self.escrow.functions.openJob(
            _b32(job_id, "job_id"), to_checksum_address(coordinator), deadline, price_cap
        )
        return await self._transact("openJob", fn, value=deposit)

    async def get_job(self, job_id: bytes) -> JobState:
        raw = await self._call("getJob", self.escrow.functions.getJob(_b32(job_id, "job_id")))
        return JobState(*raw)

    async def settle(
        self,
        job_id: bytes,
        workers: Sequence[str],
        amounts: Sequence[int],
        coordinator_fee: int,
        results_root: bytes,
    ) -> TxResult:
        """Settles a job (this account must be its coordinator): one transaction, once."""
        fn = self.escrow.functions.settle(
            _b32(job_id, "job_id"),
            [to_checksum_address(w) for w in workers],
            list(amounts),
            coordinator_fee,
            _b32(results_root, "results_root"),
        )
        return await self._transact("settle", fn)

    async def refund(self, job_id: bytes) -> TxResult:
        fn = self.escrow.functions.refund(_b32(job_id, "job_id"))
        return await self._transact("refund", fn)

    async def withdraw(self) -> TxResult:
        """Pulls this account's escrow credits (worker pay, coordinator fee, client change)."""
        return await self._transact("withdraw", self.escrow.functions.withdraw())

    async def credit_of(self, addr: str) -> int:
        return await self._call(
            "creditOf", self.escrow.functions.creditOf(to_checksum_address(addr))
        )

    async def receipt_digest(self, receipt: Sequence[Any]) -> bytes:
        """The EIP-712 digest JobEscrow computes for `receipt` (a `Receipt` or 6-tuple)."""
        fn = self.escrow.functions.receiptDigest(_receipt_arg(receipt))
        return bytes(await self._call("receiptDigest", fn))

    async def slash(
        self,
        offending: Sequence[Any],
        offending_sig: bytes,
        witness: Sequence[Any],
        witness_sig: bytes,
    ) -> TxResult:
        """Slashes `offending.worker` with two conflicting signed receipts (coordinator only)."""
        fn = self.escrow.functions.slash(
            _receipt_arg(offending), bytes(offending_sig), _receipt_arg(witness), bytes(witness_sig)
        )
        return await self._transact("slash", fn)

    async def settlements(self, job_id: bytes) -> list[Settlement]:
        """Every `JobSettled` event for `job_id` since genesis (at most one, by contract)."""
        async with _boundary("JobSettled logs"):
            logs = await self.escrow.events.JobSettled.get_logs(
                argument_filters={"jobId": _b32(job_id, "job_id")}, from_block=0, to_block="latest"
            )
        return [
            Settlement(
                job_id=bytes(log["args"]["jobId"]),
                results_root=bytes(log["args"]["resultsRoot"]),
                total=log["args"]["total"],
                coordinator_fee=log["args"]["coordinatorFee"],
                client_refund=log["args"]["clientRefund"],
                tx_hash="0x" + bytes(log["transactionHash"]).hex(),
                block_number=log["blockNumber"],
            )
            for log in logs
        ]

    async def count_settlements(self, job_id: bytes) -> int:
        return len(await self.settlements(job_id))

    # ─── accounts, time ───

    async def balance(self, addr: str | None = None) -> int:
        async with _boundary("getBalance"):
            return await self._w3.eth.get_balance(to_checksum_address(addr or self.address))

    async def transaction_count(self, addr: str | None = None) -> int:
        """Transactions an account has sent (its next nonce)."""
        async with _boundary("getTransactionCount"):
            return await self._w3.eth.get_transaction_count(
                to_checksum_address(addr or self.address)
            )

    async def transfer(self, to: str, wei: int) -> TxResult:
        """Sends plain ETH (e.g. to fund a fresh worker key in dev)."""
        return await self._transact("transfer", to=to, value=wei)

    async def block_timestamp(self) -> int:
        """Timestamp of the latest block."""
        async with _boundary("getBlock"):
            return (await self._w3.eth.get_block("latest"))["timestamp"]

    async def increase_time(self, seconds: int) -> int:
        """Dev chains only (anvil): moves time forward and mines a block; returns the new
        latest block timestamp."""
        await self._dev_rpc("evm_increaseTime", [seconds])
        await self._dev_rpc("evm_mine", [])
        return await self.block_timestamp()

    async def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        async with _boundary(method):
            response = await self._w3.provider.make_request(method, params)
        if "error" in response:
            raise ChainError(f"{method}: {response['error']} (not an anvil/dev chain?)")
        return response.get("result")
