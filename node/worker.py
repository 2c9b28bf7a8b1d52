"""Running a worker: load models, probe hardware, serve, and stay joined to a coordinator."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from contextlib import AsyncExitStack

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shardnet.chain import Chain, ChainError, Deployment
from shardnet.config import WorkerConfig
from shardnet.events import EventBus, WorkerPresence, parse_broker, worker_will
from shardnet.identity import Identity, open_identity, worker_claim
from shardnet.node.advertise import advertise
from shardnet.node.faults import FaultInjector
from shardnet.node.hardware import choose_providers, probe
from shardnet.node.join import stay_registered
from shardnet.node.models import ModelRepository, session_options
from shardnet.node.server import ReceiptSigner, WorkerServicer
from shardnet.observe import health_servicer, set_serving, start_http
from shardnet.p2p.ads import peer_id_from_key, public_key_bytes
from shardnet.p2p.node import P2PNode
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.receipts import Domain
from shardnet.rpc import announce_ready, bind, create_server, split_host_port
from shardnet.tls import fingerprint, make_tls_identity
from shardnet.wallet import fund_from_dev_account

log = logging.getLogger(__name__)


def advertised_host(config: WorkerConfig) -> str:
    """The host the coordinator should dial: --advertise-host, else --host, else (when
    listening on every interface, as in a container) this machine's hostname."""
    if config.advertise_host:
        return config.advertise_host
    if config.host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return config.host


async def join_chain(
    config: WorkerConfig, info: v1.WorkerInfo, identity: Identity | None
) -> ReceiptSigner:
    """Make sure the node's address is registered and staked (staking --stake-wei if
    needed), and sign the claim the coordinator checks."""
    if identity is None:
        raise ChainError("--chain needs --key-dir: the worker is paid at its key's address")
    deployment = Deployment.load(config.chain)
    if config.faucet_wei:
        await fund_from_dev_account(deployment, identity.address, config.faucet_wei)
    async with await Chain.connect(deployment, identity.account.key) as chain:
        if not await chain.is_registered(identity.address):
            if config.stake_wei < deployment.min_stake_wei:
                raise ChainError(
                    f"{identity.address} is not registered; pass --stake-wei of at least "
                    f"{deployment.min_stake_wei} to register and stake"
                )
            await chain.register(identity.peer_key, config.stake_wei)
            log.info("registered %s on chain with stake %d wei", identity.address, config.stake_wei)
        elif await chain.peer_key_of(identity.address) != identity.peer_key:
            raise ChainError(f"{identity.address} is registered with another peer key")
        stake = await chain.stake_of(identity.address)
        if stake < deployment.min_stake_wei and config.stake_wei:
            await chain.add_stake(deployment.min_stake_wei - stake)
        if not await chain.is_staked(identity.address):
            raise ChainError(
                f"{identity.address} is not staked (stake {stake} wei, minimum "
                f"{deployment.min_stake_wei}); pass --stake-wei or top up"
            )
    info.chain_address = identity.address
    info.peer_key = identity.peer_key
    info.address_proof = identity.sign_text(
        worker_claim(
            info.worker_id,
            info.endpoint,
            identity.address,
            identity.peer_key,
            fingerprint(info.tls_certificate) if info.tls_certificate else "none",
        )
    )
    return ReceiptSigner(
        identity.address, identity.account.key, Domain(deployment.chain_id, deployment.escrow)
    )


async def run_worker(config: WorkerConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down gracefully."""
    providers = choose_providers(config.providers)
    opts = session_options(config.intra_op_threads, config.graph_optimization)
    repo = ModelRepository.load_dir(config.models_dir, opts, providers)
    hardware = probe(providers, config.intra_op_threads)
    servicer = WorkerServicer(
        repo,
        max_concurrency=config.max_concurrency,
        max_queue=config.max_queue,
        fault_delay_s=config.fault_delay_s,
        faults=FaultInjector(config.fault, config.fault_rate, list(repo), opts, providers)
        if config.fault != "none"
        else None,
    )
    if config.fault != "none":
        log.warning(
            "FAULT INJECTION: cheating on %.0f%% of shards (%s)",
            100 * config.fault_rate,
            config.fault,
        )
    if config.fault_delay_s:
        log.warning("FAULT INJECTION: holding every shard %.1fs", config.fault_delay_s)
    server = create_server(int(config.max_request_mb * 2**20))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health = health_servicer(server)
    identity = (
        open_identity(config.key_dir, config.passphrase_file, create=config.generate_keys)
        if config.key_dir is not None
        else None
    )
    # The node's Ed25519 key (a throwaway one without --key-dir) is its libp2p identity;
    # its peer id goes into the TLS certificate so an ad cannot borrow another's server.
    node_key = identity.ed25519 if identity else Ed25519PrivateKey.generate()
    tls = (
        None
        if config.plaintext
        else make_tls_identity(
            advertised_host(config), peer_id=peer_id_from_key(public_key_bytes(node_key))
        )
    )
    port = bind(server, config.host, config.port, tls.server_credentials() if tls else None)
    await server.start()
    worker_id = config.worker_id or f"worker-{secrets.token_hex(4)}"
    endpoint = f"{advertised_host(config)}:{port}"
    info = v1.WorkerInfo(
        worker_id=worker_id,
        endpoint=endpoint,
        hardware=hardware,
        models=[
            v1.ModelInfo(
                name=m.signature.name,
                sha256=m.signature.sha256,
                metadata=m.signature.to_metadata(),
            )
            for m in repo
        ],
        max_concurrency=config.max_concurrency,
        tls_certificate=tls.cert_pem if tls else b"",
    )
    if tls is None:
        log.warning("serving PLAINTEXT gRPC (--plaintext): for local debugging only")
    info.peer_key = public_key_bytes(node_key)
    if config.chain is not None:
        servicer.signer = await join_chain(config, info, identity)
    info.peer_signature = node_key.sign(
        worker_claim(
            info.worker_id,
            info.endpoint,
            info.chain_address,
            info.peer_key,
            fingerprint(info.tls_certificate) if info.tls_certificate else "none",
        ).encode()
    )
    log.info(
        "worker %s serving %d model(s) on %s with %s",
        worker_id,
        len(info.models),
        endpoint,
        ", ".join(providers),
    )
    await set_serving(health, True)
    http, http_address = (None, None)
    if config.http_listen:
        http, http_address = await start_http(config.http_listen)
        log.info("metrics at http://%s/metrics", http_address)
    announce_ready(
        config.ready_file,
        http_address=http_address,
        address=endpoint,
        worker_id=worker_id,
        tls_certificate=tls.cert_pem.decode() if tls else None,
    )
    broker = parse_broker(config.mqtt)
    incarnation = fingerprint(tls.cert_pem) if tls else endpoint
    try:
        async with AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
            if broker is not None:
                # Retained online status, heartbeats, and a Will that marks us offline
                # if we die; the cert fingerprint tells this run from an earlier one.
                bus = await stack.enter_async_context(
                    EventBus(
                        *broker,
                        f"shardnet-worker-{worker_id}-{secrets.token_hex(3)}",
                        will=worker_will(worker_id, endpoint, incarnation=incarnation),
                        keepalive_s=5,
                    )
                )
                await stack.enter_async_context(
                    WorkerPresence(
                        bus,
                        worker_id,
                        endpoint,
                        interval_s=1.0,
                        info={"incarnation": incarnation},
                    )
                )
            loops = []
            if config.coordinator:
                loops.append(
                    tg.create_task(
                        stay_registered(
                            config.coordinator,
                            info,
                            call_timeout_s=config.register_timeout_s,
                            sign=lambda text: node_key.sign(text.encode()),
                        ),
                        name=f"worker[{worker_id}].join",
                    )
                )
            if config.bootstrap:
                key = node_key
                host, port = split_host_port(config.p2p_listen or "127.0.0.1:0")
                node = await stack.enter_async_context(
                    await P2PNode.start(
                        key, listen_host=host, listen_port=port, bootstrap=config.bootstrap
                    )
                )
                loops.append(
                    tg.create_task(
                        advertise(
                            node,
                            key,
                            info,
                            interval_s=config.ad_interval_s,
                            ttl_s=config.ad_ttl_s,
                            price_per_row_wei=config.price_per_row_wei,
                        ),
                        name=f"worker[{worker_id}].advertise",
                    )
                )
            await stop.wait()
            for loop in loops:
                loop.cancel()
    finally:
        await set_serving(health, False)
        if http is not None:
            await http.cleanup()
        await server.stop(grace=2.0)
        servicer.close()
