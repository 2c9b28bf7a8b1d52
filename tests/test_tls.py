"""Coordinator-worker TLS is pinned to the certificate the worker presented."""

from __future__ import annotations

import time

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shardnet.client import Client
from shardnet.demo import demo_inputs
from shardnet.identity import worker_claim
from shardnet.p2p.ads import public_key_bytes
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.protocol import shardnet_v1_pb2_grpc as v1_grpc
from shardnet.tls import fingerprint, make_tls_identity

pytestmark = pytest.mark.slow


def register(coordinator, info: v1.WorkerInfo):
    with coordinator.channel() as channel:
        return v1_grpc.CoordinatorStub(channel).Register(
            v1.RegisterRequest(worker=info), timeout=10
        )


def test_a_server_with_another_certificate_is_refused(fresh_network):
    net = fresh_network
    net.start_coordinator()
    net.start_worker("--intra-op-threads", "1")
    net.wait_for_workers(1)
    with Client(net.coordinator.address) as client:
        (status,) = client.workers()
    # Someone claims the real worker's endpoint with a certificate of its own.
    impostor = v1.WorkerInfo()
    impostor.CopyFrom(status.info)
    impostor.worker_id = "impostor"
    impostor.tls_certificate = make_tls_identity("127.0.0.1").cert_pem
    key = Ed25519PrivateKey.generate()  # the impostor signs its claim with its own key
    impostor.peer_key = public_key_bytes(key)
    impostor.peer_signature = key.sign(
        worker_claim(
            impostor.worker_id,
            impostor.endpoint,
            "",
            impostor.peer_key,
            fingerprint(impostor.tls_certificate),
        ).encode()
    )
    with pytest.raises(grpc.RpcError) as info:
        register(net.coordinator, impostor)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach your endpoint" in info.value.details()
    with Client(net.coordinator.address) as client:
        assert [w.info.worker_id for w in client.workers()] == ["worker-1"]


def test_plaintext_workers_need_an_explicit_flag(fresh_network, reference):
    net = fresh_network
    net.start_coordinator()
    plain = net.start_worker("--plaintext", name="plain")
    deadline = time.monotonic() + 10
    # Discovery reports the refusal in the coordinator's log (registration: to the worker).
    while "--allow-plaintext-workers" not in net.coordinator.log_tail(50):
        assert time.monotonic() < deadline, (plain.log_tail(), net.coordinator.log_tail())
        time.sleep(0.1)
    with Client(net.coordinator.address) as client:
        assert client.workers() == []


def test_plaintext_allowed_for_local_debugging(fresh_network, reference):
    net = fresh_network
    net.start_coordinator("--allow-plaintext-workers")
    net.start_worker("--plaintext")
    net.wait_for_workers(1)
    x = demo_inputs(100)["x"]
    with Client(net.coordinator.address) as client:
        result = client.infer("mlp", {"x": x})
    assert result.outputs["logits"].tobytes() == reference(x)["logits"].tobytes()


def test_certificates_bind_to_the_advertised_host():
    tls = make_tls_identity("127.0.0.1")
    assert len(fingerprint(tls.cert_pem)) == 64
    assert fingerprint(tls.cert_pem) != fingerprint(make_tls_identity("127.0.0.1").cert_pem)


def test_registrations_and_heartbeats_must_be_signed_by_the_peer_key(tmp_path, models_dir):
    from shardnet.launch import LocalNetwork

    with LocalNetwork(tmp_path, models_dir, join="register") as net:
        net.start_coordinator()
        net.start_worker("--intra-op-threads", "1")
        net.wait_for_workers(1)
        with Client(net.coordinator.address) as client:
            (status,) = client.workers()
        # Someone else takes the name worker-1 with their own key: refused.
        thief = v1.WorkerInfo()
        thief.CopyFrom(status.info)
        key = Ed25519PrivateKey.generate()
        thief.peer_key = public_key_bytes(key)
        thief.peer_signature = key.sign(
            worker_claim(
                thief.worker_id,
                thief.endpoint,
                "",
                thief.peer_key,
                fingerprint(thief.tls_certificate),
            ).encode()
        )
        with pytest.raises(grpc.RpcError) as info:
            register(net.coordinator, thief)
        assert "belongs to another peer" in info.value.details()
        # Unsigned: refused.
        thief.peer_signature = b"x" * 64
        with pytest.raises(grpc.RpcError) as info:
            register(net.coordinator, thief)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A forged heartbeat cannot keep worker-1 alive.
        with net.coordinator.channel() as channel, pytest.raises(grpc.RpcError) as info:
            v1_grpc.CoordinatorStub(channel).Heartbeat(
                v1.HeartbeatRequest(
                    worker_id="worker-1", timestamp=time.time() + 5, signature=b"y" * 64
                ),
                timeout=5,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
