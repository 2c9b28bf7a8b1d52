"""Command-line actions on keys and the chain: `shardnet keys`, `chain`, `faucet`,
`wallet`, `withdraw`, `refund`. Thin: each loads keys and calls shardnet.chain."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from decimal import Decimal
from pathlib import Path

from shardnet.chain import DEV_KEYS, Anvil, Chain, ChainError, Deployment, deploy
from shardnet.identity import Identity, IdentityError, read_passphrase

WEI_PER_ETH = 10**18


def fmt_eth(wei: int) -> str:
    return f"{Decimal(wei) / WEI_PER_ETH:.6f} ETH"


def add_key_flags(parser: argparse.ArgumentParser, *, chain: bool = True) -> None:
    if chain:
        parser.add_argument(
            "--chain",
            type=Path,
            default=Path("deployment.json"),
            help="deployment JSON (default: ./deployment.json)",
        )
    parser.add_argument("--key-dir", type=Path, required=True, help="folder of the node's keys")
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help="file holding the key passphrase (else $SHARDNET_PASSPHRASE)",
    )


def load_identity(args) -> Identity:
    return Identity.load(args.key_dir, read_passphrase(args.passphrase_file))


def _connect(args, identity: Identity):
    return Chain.connect(Deployment.load(args.chain), identity.account.key)


def cmd_keys(args) -> int:
    passphrase = read_passphrase(args.passphrase_file)
    if args.action == "new":
        identity = Identity.create(args.key_dir, passphrase)
        print(f"created keys in {args.key_dir}")
    else:
        identity = Identity.load(args.key_dir, passphrase)
    print(f"address   {identity.address}")
    print(f"peer key  {identity.peer_key.hex()}")
    return 0


def cmd_wallet(args) -> int:
    identity = load_identity(args)

    async def show() -> None:
        async with await _connect(args, identity) as chain:
            me = identity.address
            print(f"address         {me}")
            print(f"balance         {fmt_eth(await chain.balance(me))}")
            registered = await chain.is_registered(me)
            print(f"registered      {'yes' if registered else 'no'}")
            if registered:
                print(
                    f"stake           {fmt_eth(await chain.stake_of(me))} "
                    f"({'staked' if await chain.is_staked(me) else 'NOT staked'})"
                )
            print(f"escrow credit   {fmt_eth(await chain.credit_of(me))}  (shardnet withdraw)")
            print(f"registry credit {fmt_eth(await chain.registry_credit_of(me))}")

    asyncio.run(show())
    return 0


def cmd_withdraw(args) -> int:
    identity = load_identity(args)

    async def pull() -> None:
        async with await _connect(args, identity) as chain:
            me = identity.address
            pulled = False
            for what, credit, withdraw in (
                ("escrow", chain.credit_of, chain.withdraw),
                ("registry", chain.registry_credit_of, chain.registry_withdraw),
            ):
                amount = await credit(me)
                if amount:
                    tx = await withdraw()
                    print(f"withdrew {fmt_eth(amount)} from the {what} in tx {tx.tx_hash}")
                    pulled = True
            if not pulled:
                print("nothing to withdraw")

    asyncio.run(pull())
    return 0


def cmd_refund(args) -> int:
    identity = load_identity(args)
    job = bytes.fromhex(args.escrow_job.removeprefix("0x"))

    async def refund() -> None:
        async with await _connect(args, identity) as chain:
            state = await chain.get_job(job)
            tx = await chain.refund(job)
            print(f"refunded {fmt_eth(state.deposit)} in tx {tx.tx_hash}")

    asyncio.run(refund())
    return 0


def cmd_faucet(args) -> int:
    """Dev chains only: send ETH from Anvil's first well-known account."""
    identity = load_identity(args)

    async def fund() -> None:
        async with await Chain.connect(Deployment.load(args.chain), DEV_KEYS[0]) as chain:
            tx = await chain.transfer(identity.address, int(Decimal(args.eth) * WEI_PER_ETH))
            print(f"sent {args.eth} ETH to {identity.address} in tx {tx.tx_hash}")

    asyncio.run(fund())
    return 0


async def fund_from_dev_account(deployment: Deployment, address: str, wei: int) -> None:
    """Dev chains only: top `address` up to `wei` from Anvil's first well-known account
    (which holds nothing on a real chain)."""
    async with await Chain.connect(deployment, DEV_KEYS[0]) as chain:
        balance = await chain.balance(address)
        if balance < wei:
            await chain.transfer(address, wei - balance)


def start_dev_chain(
    workdir: Path,
    *,
    port: int = 0,
    min_stake_wei: int = 10**18,
    slash_bps: int = 5000,
    unbonding_s: int = 3600,
    host: str = "127.0.0.1",
    rpc_url: str | None = None,
) -> tuple[Anvil, Deployment]:
    """Start Anvil with its state in `workdir` and deploy the contracts (or reuse a
    deployment that survived in that state). `rpc_url` is the address written into the
    deployment for other processes (default: Anvil's loopback URL). The caller stops Anvil."""
    workdir.mkdir(parents=True, exist_ok=True)
    anvil = Anvil.start(
        port=port,
        state_path=workdir / "anvil-state.json",
        log_path=workdir / "anvil.log",
        host=host,
    )
    dep_file = workdir / "deployment.json"
    try:
        deployment = None
        if dep_file.exists():
            old = Deployment.load(dep_file)
            candidate = Deployment(**{**old.__dict__, "rpc_url": anvil.rpc_url})
            try:
                asyncio.run(_check(candidate))
                deployment = candidate
            except ChainError:
                deployment = None
        if deployment is None:
            deployment = asyncio.run(
                deploy(
                    anvil.rpc_url,
                    DEV_KEYS[0],
                    min_stake_wei=min_stake_wei,
                    slash_bps=slash_bps,
                    unbonding_s=unbonding_s,
                )
            )
        if rpc_url:
            deployment = Deployment(**{**deployment.__dict__, "rpc_url": rpc_url})
        deployment.save(dep_file)
    except BaseException:
        anvil.stop()
        raise
    return anvil, deployment


async def _check(deployment: Deployment) -> None:
    async with await Chain.connect(deployment, DEV_KEYS[0]):
        pass


def cmd_chain(args) -> int:
    anvil, deployment = start_dev_chain(
        args.dir,
        port=args.port,
        min_stake_wei=args.min_stake_wei,
        slash_bps=args.slash_bps,
        unbonding_s=args.unbonding_s,
        host=args.host,
        rpc_url=args.rpc_url,
    )
    stop: list[int] = []
    # Install the handlers before announcing the chain, so an early Ctrl-C is not lost.
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with anvil:
        print(f"anvil pid {anvil.pid} at {anvil.rpc_url} (chain id {deployment.chain_id})")
        print(f"registry {deployment.registry}")
        print(f"escrow   {deployment.escrow}")
        print(
            f"deployment written to {args.dir / 'deployment.json'}; Ctrl-C stops the chain",
            flush=True,
        )
        while not stop and anvil.alive():
            time.sleep(0.2)
    print("chain stopped; its state is kept in", args.dir / "anvil-state.json")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("keys", help="create or show a node's encrypted keys")
    p.add_argument("action", choices=["new", "show"])
    add_key_flags(p, chain=False)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("chain", help="start a local Anvil chain and deploy the contracts")
    p.add_argument(
        "--dir",
        type=Path,
        default=Path(".shardnet-chain"),
        help="where the chain state and deployment.json live",
    )
    p.add_argument("--port", type=int, default=8545)
    p.add_argument(
        "--host", default="127.0.0.1", help="address Anvil listens on (0.0.0.0 in a container)"
    )
    p.add_argument(
        "--rpc-url",
        help="RPC URL written into deployment.json for other "
        "processes (default: http://127.0.0.1:PORT)",
    )
    p.add_argument("--min-stake-wei", type=int, default=10**18)
    p.add_argument("--slash-bps", type=int, default=5000)
    p.add_argument("--unbonding-s", type=int, default=3600)
    p.set_defaults(func=cmd_chain)

    for name, func, text in (
        ("wallet", cmd_wallet, "show a node's balance, stake and credits"),
        ("withdraw", cmd_withdraw, "withdraw earned credits (workers, coordinators, clients)"),
        ("faucet", cmd_faucet, "dev chains: fund a key from Anvil's first account"),
        ("refund", cmd_refund, "take back an escrow deposit after its deadline"),
    ):
        p = sub.add_parser(name, help=text)
        add_key_flags(p)
        if name == "faucet":
            p.add_argument("--eth", default="100", help="amount (default: 100)")
        if name == "refund":
            p.add_argument("escrow_job", help="0x hex of the escrow job id")
        p.set_defaults(func=func)


__all__ = ["IdentityError", "add_commands", "fmt_eth", "start_dev_chain"]
