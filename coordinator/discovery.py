"""Discovery, coordinator side: trust a worker's gossiped ad only if its signature,
freshness and (on a chain) stake check out, then add it to the table like a registration.

An ad names the worker's models by sha256 only; their tensor signatures are read from the
worker itself, over TLS pinned to the certificate the ad carries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.json_format import ParseDict

from shardnet.coordinator.registry import WorkerRegistry
from shardnet.errors import ShardnetError
from shardnet.node.advertise import ADS_TOPIC
from shardnet.p2p.ads import AdBook, AdRejected, Advertisement
from shardnet.p2p.node import P2PNode
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.rpc import channel
from shardnet.sharding import WorkerId
from shardnet.tls import certificate_peer_id, pinned_channel

log = logging.getLogger(__name__)


def worker_id_of(ad: Advertisement) -> WorkerId:
    name = ad.hardware.get("name")
    return WorkerId(name if isinstance(name, str) and name else ad.peer_id)


async def info_from_ad(ad: Advertisement, timeout_s: float = 5.0) -> v1.WorkerInfo:
    """The WorkerInfo a registration would carry, from an ad plus the worker's own model
    metadata (read over the pinned channel)."""
    hardware = {k: v for k, v in ad.hardware.items() if k not in ("name", "max_concurrency")}
    info = v1.WorkerInfo(
        worker_id=worker_id_of(ad),
        endpoint=ad.endpoint,
        hardware=ParseDict(hardware, v1.Hardware(), ignore_unknown_fields=True),
        max_concurrency=int(ad.hardware.get("max_concurrency", 1) or 1),
        chain_address=ad.chain_address,
        peer_key=ad.peer_key,
        tls_certificate=ad.cert_pem.encode(),
    )
    ch = pinned_channel(ad.endpoint, info.tls_certificate) if ad.cert_pem else channel(ad.endpoint)
    async with ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for name, sha in ad.models:
            metadata = await stub.ModelMetadata(
                pb.ModelMetadataRequest(name=name, version=sha), timeout=timeout_s
            )
            info.models.add(name=name, sha256=sha, metadata=metadata)
    return info


async def run_discovery(
    node: P2PNode,
    registry: WorkerRegistry,
    admit: Callable[[v1.WorkerInfo], Awaitable[None]],
    *,
    clock=time.time,
) -> None:
    """Follow the ads topic until cancelled: admit new workers, keep known ones alive,
    drop the ones whose ads expired."""
    queue = await node.subscribe(ADS_TOPIC)
    book = AdBook()
    rejected: Counter[str] = Counter()
    peer_of: dict[WorkerId, str] = {}  # worker id -> the peer id that advertised it
    while True:
        try:
            data = await asyncio.wait_for(queue.get(), timeout=1.0)
        except TimeoutError:
            data = None
        now = clock()
        for ad in book.expire(now):
            worker_id = worker_id_of(ad)
            if peer_of.get(worker_id) == ad.peer_id:
                log.warning("worker %s dropped: its ad expired", worker_id)
                await registry.remove(worker_id)
                del peer_of[worker_id]
        if data is None:
            continue
        try:
            ad = book.accept(data, now)
        except AdRejected as exc:
            rejected[exc.reason.value] += 1
            log.warning("rejected an ad (%s): %s", exc.reason.value, exc.detail)
            continue
        if ad is None:
            continue  # the same ad again (gossip delivers copies)
        worker_id = worker_id_of(ad)
        known = registry.get(worker_id)
        if (
            known is not None
            and known.info.peer_key == ad.peer_key
            and (
                known.info.tls_certificate.decode() == ad.cert_pem
                and known.info.endpoint == ad.endpoint
            )
        ):
            registry.heartbeat(worker_id)  # a fresh ad is a heartbeat
            continue
        if ad.cert_pem and certificate_peer_id(ad.cert_pem.encode()) != ad.peer_id:
            rejected["foreign_certificate"] += 1
            log.warning(
                "rejected an ad (foreign_certificate): %s advertises a certificate "
                "issued to another peer",
                ad.peer_id,
            )
            continue
        if known is not None and peer_of.get(worker_id) not in (None, ad.peer_id):
            log.warning(
                "ignored an ad from %s: the name %s belongs to a live worker", ad.peer_id, worker_id
            )
            continue
        try:
            await admit(await info_from_ad(ad))
        except (ShardnetError, grpc.aio.AioRpcError) as exc:
            log.warning("worker %s (%s) not admitted: %s", worker_id, ad.peer_id, exc)
            continue
        peer_of[worker_id] = ad.peer_id
        log.info("discovered worker %s (%s) at %s", worker_id, ad.peer_id, ad.endpoint)
