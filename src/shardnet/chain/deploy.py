"""Deploys WorkerRegistry and JobEscrow and records where they are (`Deployment`)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Self

from eth_account import Account
from eth_utils import is_address, to_checksum_address

from shardnet.chain.contracts import _boundary, load_artifact, make_web3
from shardnet.chain.errors import ChainError, TxReverted


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live and the parameters they were deployed with."""

    rpc_url: str
    chain_id: int
    registry: str
    escrow: str
    min_stake_wei: int
    slash_bps: int
    unbonding_s: int

    def save(self, path: Path | str) -> None:
        """Writes JSON atomically (temp file in the same folder, then replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(self), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path | str) -> Self:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ChainError(f"no deployment file at {path}: deploy the contracts first") from exc
        except (OSError, ValueError) as exc:
            raise ChainError(f"cannot read deployment file {path}: {exc}") from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "deployment") -> Self:
        names = {f.name: f.type for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) != set(names):
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise ChainError(f"{source}: expected keys {sorted(names)}, got {got}")
        for key in ("chain_id", "min_stake_wei", "slash_bps", "unbonding_s"):
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 0:
                raise ChainError(f"{source}: {key} must be a non-negative integer")
        for key in ("registry", "escrow"):
            if not isinstance(raw[key], str) or not is_address(raw[key]):
                raise ChainError(f"{source}: {key} is not an address: {raw[key]!r}")
        if not isinstance(raw["rpc_url"], str) or not raw["rpc_url"]:
            raise ChainError(f"{source}: rpc_url must be a non-empty string")
        return cls(
            **{
                **raw,
                "registry": to_checksum_address(raw["registry"]),
                "escrow": to_checksum_address(raw["escrow"]),
            }
        )


async def deploy(
    rpc_url: str,
    deployer_key: str,
    *,
    min_stake_wei: int = 10**18,
    unbonding_s: int = 3600,
    slash_bps: int = 5000,
    timeout_s: float = 30,
) -> Deployment:
    """Deploys WorkerRegistry(min_stake, unbonding), JobEscrow(registry, slash_bps), then
    `registry.setEscrow(escrow)`, all from `deployer_key`, waiting for each receipt."""
    if not 1 <= slash_bps <= 10_000:
        raise ValueError(f"slash_bps must be 1..10000, got {slash_bps}")
    w3 = make_web3(rpc_url, timeout_s)
    account = Account.from_key(deployer_key)
    try:
        async with _boundary("deploy"):
            chain_id = await w3.eth.chain_id
            nonce = await w3.eth.get_transaction_count(account.address, "pending")

            async def send(what: str, build: Any) -> dict[str, Any]:
                nonlocal nonce
                block = await w3.eth.get_block("latest")
                tip = await w3.eth.max_priority_fee
                tx = {
                    "from": account.address,
                    "nonce": nonce,
                    "chainId": chain_id,
                    "maxFeePerGas": 2 * block["baseFeePerGas"] + tip,
                    "maxPriorityFeePerGas": tip,
                }
                gas = await build.estimate_gas({"from": account.address})
                tx = await build.build_transaction({**tx, "gas": int(gas * 1.2)})
                signed = account.sign_transaction(tx)
                tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
                nonce += 1
                receipt = await w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=timeout_s, poll_latency=0.05
                )
                if receipt["status"] != 1:
                    raise TxReverted(
                        f"deploy: {what} reverted", tx_hash="0x" + bytes(tx_hash).hex()
                    )
                return receipt

            def factory(name: str) -> Any:
                art = load_artifact(name)
                return w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])

            registry = (
                await send(
                    "WorkerRegistry",
                    factory("WorkerRegistry").constructor(min_stake_wei, unbonding_s),
                )
            )["contractAddress"]
            escrow = (
                await send("JobEscrow", factory("JobEscrow").constructor(registry, slash_bps))
            )["contractAddress"]
            registry_contract = w3.eth.contract(
                address=registry, abi=load_artifact("WorkerRegistry")["abi"]
            )
            await send("setEscrow", registry_contract.functions.setEscrow(escrow))
    finally:
        await w3.provider.disconnect()
    return Deployment(
        rpc_url=rpc_url,
        chain_id=chain_id,
        registry=to_checksum_address(registry),
        escrow=to_checksum_address(escrow),
        min_stake_wei=min_stake_wei,
        slash_bps=slash_bps,
        unbonding_s=unbonding_s,
    )
