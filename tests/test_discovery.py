"""Discovery over libp2p gossipsub with real processes: workers find coordinators through
a bootstrap peer, and only ads that check out put a worker in the table."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shardnet.client import Client
from shardnet.demo import demo_inputs
from shardnet.launch import LocalNetwork, spawn
from shardnet.node.advertise import ADS_TOPIC
from shardnet.p2p.ads import Advertisement, encode, peer_id_from_key, public_key_bytes
from shardnet.p2p.node import P2PNode
from shardnet.tls import fingerprint, make_tls_identity

pytestmark = pytest.mark.slow


def worker_ids(address: str) -> list[str]:
    with Client(address) as client:
        return sorted(w.info.worker_id for w in client.workers())


def wait_until(predicate, timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_three_workers_and_two_coordinators_find_each_other(tmp_path, models_dir, reference):
    with LocalNetwork(tmp_path, models_dir) as net:
        first = net.start_coordinator()
        bootstrap = first.info["p2p_addrs"][0]
        second = spawn(
            "coordinator-2", ["coordinator", "--port", "0", "--bootstrap", bootstrap], tmp_path
        )
        try:
            for _ in range(3):
                net.start_worker("--intra-op-threads", "1")
            expected = ["worker-1", "worker-2", "worker-3"]
            for coordinator in (first, second):
                wait_until(
                    lambda c=coordinator: worker_ids(c.address) == expected,
                    what=f"{coordinator.name} to discover the workers",
                )
                x = demo_inputs(900, seed=3)["x"]
                with Client(coordinator.address) as client:
                    result = client.infer("mlp", {"x": x})
                assert result.outputs["logits"].tobytes() == reference(x)["logits"].tobytes()
                assert {s["worker"] for s in result.shards} == set(expected)
        finally:
            second.stop()


def test_static_registration_still_works(tmp_path, models_dir):
    with LocalNetwork(tmp_path, models_dir, join="register") as net:
        net.start_coordinator("--p2p-listen", "")
        net.start_worker("--intra-op-threads", "1")
        net.wait_for_workers(1)
        with Client(net.coordinator.address) as client:
            assert client.infer("mlp", demo_inputs(10)).shards[0]["worker"] == "worker-1"


def _publish(bootstrap: str, messages: list[bytes]) -> None:
    async def run():
        async with await P2PNode.start(Ed25519PrivateKey.generate(), bootstrap=[bootstrap]) as node:
            async with asyncio.timeout(10):  # py-libp2p offers no event for "peer joined"
                while not await node.topic_peers(ADS_TOPIC):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            for data in messages:
                await node.publish(ADS_TOPIC, data)
                await asyncio.sleep(0.2)

    asyncio.run(run())


def _ad(key, endpoint, cert_pem, **changes) -> Advertisement:
    peer_key = public_key_bytes(key)
    ad = Advertisement(
        peer_key=peer_key,
        peer_id=peer_id_from_key(peer_key),
        endpoint=endpoint,
        cert_sha256=fingerprint(cert_pem.encode()),
        cert_pem=cert_pem,
        chain_address="",
        models=(),
        hardware={"name": "intruder", "cpu_count": 1},
        price_per_row_wei=0,
        timestamp=time.time(),
        seq=1,
        ttl_s=10.0,
    )
    return dataclasses.replace(ad, **changes)


def test_forged_replayed_and_expired_ads_are_rejected(tmp_path, models_dir):
    with LocalNetwork(tmp_path, models_dir) as net:
        coordinator = net.start_coordinator()
        worker = net.start_worker("--intra-op-threads", "1")
        net.wait_for_workers(1)
        key = Ed25519PrivateKey.generate()
        cert = worker.tls_certificate.decode()
        good_old = encode(_ad(key, worker.address, cert, seq=5), key)
        newer = encode(_ad(key, worker.address, cert, seq=6, hardware={"name": "w6"}), key)
        body = json.loads(encode(_ad(key, worker.address, cert, seq=7), key))
        body["seq"] = 8  # change what was signed, keep the signature
        forged = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        expired = encode(_ad(key, worker.address, cert, seq=9, timestamp=time.time() - 60), key)
        _publish(coordinator.info["p2p_addrs"][0], [newer, good_old, forged, expired])
        log = lambda: coordinator.log_tail(400)  # noqa: E731
        wait_until(lambda: "rejected an ad (replay)" in log(), what="the replay rejection")
        wait_until(
            lambda: (
                "rejected an ad (bad_signature)" in log() or "rejected an ad (malformed)" in log()
            ),
            what="the forgery rejection",
        )
        wait_until(lambda: "rejected an ad (expired)" in log(), what="the expiry rejection")
        # The one valid ad (seq 6) borrows worker-1's endpoint and certificate under the
        # intruder's own peer id: the certificate names another peer, so it is refused.
        wait_until(
            lambda: "rejected an ad (foreign_certificate)" in log(),
            what="the borrowed-certificate rejection",
        )
        assert worker_ids(coordinator.address) == ["worker-1"]


def test_an_ad_for_an_unstaked_address_is_rejected(paid_network):
    net = paid_network
    coordinator = net.start_coordinator()
    net.start_worker("worker-1")
    net.net.wait_for_workers(1)
    key = Ed25519PrivateKey.generate()
    peer_id = peer_id_from_key(public_key_bytes(key))
    cert = make_tls_identity("127.0.0.1", peer_id=peer_id).cert_pem.decode()
    _, unstaked = net.accounts.create("unstaked")  # funded, never registered
    ad = _ad(
        key, "127.0.0.1:9", cert, chain_address=unstaked.address, hardware={"name": "unstaked"}
    )
    _publish(coordinator.info["p2p_addrs"][0], [encode(ad, key)])
    wait_until(
        lambda: f"worker address {unstaked.address} is not staked" in coordinator.log_tail(400),
        what="the stake check",
    )
    assert worker_ids(coordinator.address) == ["worker-1"]
