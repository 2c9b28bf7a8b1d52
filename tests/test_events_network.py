"""Live events from real processes over the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shardnet.client import Client
from shardnet.demo import demo_inputs
from shardnet.watch import watch

pytestmark = pytest.mark.slow
BROKER = ("127.0.0.1", 1883)


class Recorder:
    """Collects every event under shardnet/v1/# in a background thread."""

    def __init__(self) -> None:
        self.events = []
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async for event in watch(*BROKER, timeout_s=120):
            self._ready.set()
            self.events.append(event)
            if self._stop:
                return

    def __enter__(self):
        self._thread.start()
        # Any retained status (ours or another test's) proves the subscription is live;
        # if there is none, give the subscription a moment to be established.
        self._ready.wait(2.0)
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True

    def wait_for(self, predicate, timeout_s: float = 30.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hits = [e for e in list(self.events) if predicate(e)]
            if hits:
                return hits[0]
            time.sleep(0.05)
        raise AssertionError("event did not arrive")


def test_a_paid_jobs_events_arrive_in_order_ending_with_the_settlement(paid_network):
    net = paid_network
    net.start_coordinator()
    net.start_worker("worker-1")
    net.start_worker("worker-2")
    net.net.wait_for_workers(2)
    with Recorder() as recorder, Client(net.net.coordinator.address) as client:
        result = client.infer("mlp", demo_inputs(1000), payer=net.payer())
        (job_id,) = result.job_ids
        settled = recorder.wait_for(lambda e: e.subject == job_id and e.name == "settled")
        settlement = client.wait_settled(result.escrow_jobs[0])
    job = [e for e in recorder.events if e.kind == "job" and e.subject == job_id]
    assert [e.seq for e in job] == list(range(1, len(job) + 1))
    names = [e.name for e in job]
    assert names[0] == "accepted" and names[-1] == "settled"
    assert names.index("completed") == len(names) - 2
    shards = len(result.shards)
    assert names.count("shard_done") >= shards and names.count("shard_dispatched") >= shards
    assert settled.data["tx_hash"] == settlement.tx_hash
    assert settled.data["charge"] == int(settlement.charge_wei)


def test_a_killed_worker_is_offline_at_once_and_comes_back_on_restart(fresh_network, reference):
    net = fresh_network
    # A long gRPC TTL: only the MQTT Last Will can explain a fast removal.
    net.start_coordinator("--worker-ttl-s", "60")
    net.start_worker("--intra-op-threads", "1")
    victim = net.start_worker("--intra-op-threads", "1")
    net.wait_for_workers(2)
    with Recorder() as recorder:
        recorder.wait_for(lambda e: e.subject == victim.name and e.data.get("state") == "online")
        t0 = time.monotonic()
        victim.kill()
        recorder.wait_for(
            lambda e: (
                e.subject == victim.name
                and e.data.get("state") == "offline"
                and e.data.get("cause") == "will"
            )
        )
        net.wait_for_workers(1, timeout_s=10)
        offline_s = time.monotonic() - t0
    assert offline_s < 5, offline_s
    x = demo_inputs(800)["x"]
    with Client(net.coordinator.address) as client:
        result = client.infer("mlp", {"x": x})
        assert {s["worker"] for s in result.shards} == {"worker-1"}
        assert all(s["attempts"] == 1 for s in result.shards)
        net.start_worker("--intra-op-threads", "1", name=victim.name)
        net.wait_for_workers(2)
        result = client.infer("mlp", {"x": x})
    assert {s["worker"] for s in result.shards} == {"worker-1", victim.name}
    assert result.outputs["logits"].tobytes() == reference(x)["logits"].tobytes()
    print(f"marked offline {offline_s:.2f}s after SIGKILL")


def test_inference_works_without_a_broker(fresh_network, reference):
    net = fresh_network
    net.start_coordinator("--mqtt", "127.0.0.1:1")
    net.start_worker("--intra-op-threads", "1", "--mqtt", "127.0.0.1:1")
    net.wait_for_workers(1)
    x = demo_inputs(100)["x"]
    with Client(net.coordinator.address) as client:
        result = client.infer("mlp", {"x": x})
    assert result.outputs["logits"].tobytes() == reference(x)["logits"].tobytes()
    assert "events skipped: no MQTT broker at 127.0.0.1:1" in net.coordinator.log_tail(200)
