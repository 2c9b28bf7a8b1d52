"""Discovery, worker side: gossip a signed capability ad every few seconds over libp2p."""

from __future__ import annotations

import asyncio
import logging
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.json_format import MessageToDict

from shardnet.p2p.ads import Advertisement, encode, peer_id_from_key, public_key_bytes
from shardnet.p2p.node import P2PNode
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.tls import fingerprint

log = logging.getLogger(__name__)

ADS_TOPIC = "shardnet/v1/ads"


def make_ad(
    key: Ed25519PrivateKey,
    info: v1.WorkerInfo,
    *,
    seq: int,
    ttl_s: float,
    price_per_row_wei: int,
) -> Advertisement:
    peer_key = public_key_bytes(key)
    hardware = MessageToDict(info.hardware, preserving_proto_field_name=True)
    hardware["name"] = info.worker_id  # the worker's chosen name, shown in job summaries
    hardware["max_concurrency"] = info.max_concurrency
    cert = info.tls_certificate.decode()
    return Advertisement(
        peer_key=peer_key,
        peer_id=peer_id_from_key(peer_key),
        endpoint=info.endpoint,
        cert_sha256=fingerprint(info.tls_certificate) if cert else "",
        cert_pem=cert,
        chain_address=info.chain_address,
        models=tuple((m.name, m.sha256) for m in info.models),
        hardware=hardware,
        price_per_row_wei=price_per_row_wei,
        timestamp=time.time(),
        seq=seq,
        ttl_s=ttl_s,
    )


async def advertise(
    node: P2PNode,
    key: Ed25519PrivateKey,
    info: v1.WorkerInfo,
    *,
    interval_s: float,
    ttl_s: float,
    price_per_row_wei: int,
) -> None:
    """Publish a fresh ad every `interval_s` until cancelled (seq = a clock in ms, so it
    keeps increasing across restarts with the same key)."""
    while True:
        ad = make_ad(
            key,
            info,
            seq=time.time_ns() // 1_000_000,
            ttl_s=ttl_s,
            price_per_row_wei=price_per_row_wei,
        )
        try:
            await node.publish(ADS_TOPIC, encode(ad, key))
        except Exception as exc:  # broad on purpose: the next round retries; serving goes on
            log.warning("could not publish the ad: %s", exc)
        await asyncio.sleep(interval_s)
