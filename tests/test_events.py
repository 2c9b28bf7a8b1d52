"""The MQTT events layer against a real Mosquitto (127.0.0.1:1883; CI starts it).

Every test uses fresh uuid ids so tests sharing the broker never see each other's
messages, and clears the retained topics it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from shardnet.events import (
    ALL_TOPICS,
    Event,
    EventBus,
    EventsUnavailable,
    InvalidEvent,
    JobEvents,
    LivenessTracker,
    WorkerPresence,
    coordinator_payload,
    coordinator_topic,
    encode,
    heartbeat_payload,
    job_payload,
    job_topic,
    parse_event,
    worker_heartbeat_topic,
    worker_status_payload,
    worker_status_topic,
    worker_will,
)
from shardnet.watch import format_event, run_watch, watch

HOST = "127.0.0.1"
PORT = 1883
REPO = Path(__file__).resolve().parents[1]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


async def wait_for(condition: Callable[[], bool], deadline_s: float, what: str) -> float:
    """Poll until `condition()`; return the seconds it took, fail after `deadline_s`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"not within {deadline_s} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def broker() -> tuple[str, int]:
    if not port_open(PORT):
        pytest.fail(
            f"no MQTT broker at {HOST}:{PORT}: these tests need Mosquitto "
            "(start it: mosquitto -d -c /etc/mosquitto/mosquitto.conf)"
        )
    return HOST, PORT


@pytest.fixture
def retained_cleanup(broker):
    """Topics a test marks here get their retained message cleared afterwards."""
    topics: list[str] = []
    yield topics

    async def clear() -> None:
        async with aiomqtt.Client(*broker, identifier=uid("cleanup")) as client:
            for topic in topics:
                await client.publish(topic, b"", qos=1, retain=True)

    if topics:
        asyncio.run(clear())


class Subscriber:
    """A raw aiomqtt subscriber that is subscribed before the test publishes."""

    def __init__(self, host: str, port: int, *topics: str) -> None:
        self.client = aiomqtt.Client(host, port, identifier=uid("sub"))
        self.topics = topics
        self.events: list[tuple[float, Event]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        await self.client.__aenter__()
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        self._task = asyncio.create_task(self._receive(), name="test-subscriber")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _receive(self) -> None:
        async for message in self.client.messages:
            if message.payload:
                event = parse_event(str(message.topic), message.payload, retained=message.retain)
                self.events.append((time.perf_counter(), event))

    def named(self, name: str) -> list[Event]:
        return [e for _, e in self.events if e.name == name]


# --------------------------------------------------------------------- pure helpers


def test_topics_follow_the_contract():
    assert job_topic("j1") == "shardnet/v1/jobs/j1"
    assert worker_status_topic("w1") == "shardnet/v1/workers/w1/status"
    assert worker_heartbeat_topic("w1") == "shardnet/v1/workers/w1/heartbeat"
    assert coordinator_topic("c1") == "shardnet/v1/network/coordinators/c1"
    assert ALL_TOPICS == "shardnet/v1/#"
    for bad in ["", "a/b", "a+", "#", "x\0"]:
        with pytest.raises(InvalidEvent):
            job_topic(bad)


def test_payloads_round_trip_through_parse_event():
    job = parse_event(job_topic("j1"), encode(job_payload("j1", 3, "shard_done", 1.5, shard=2)))
    assert (job.kind, job.name, job.subject, job.seq, job.ts) == ("job", "shard_done", "j1", 3, 1.5)
    assert job.data["shard"] == 2 and not job.terminal

    status = parse_event(
        worker_status_topic("w1"),
        encode(worker_status_payload("w1", "127.0.0.1:1", "online", ts=2.0)),
        retained=True,
    )
    assert (status.kind, status.name, status.retained) == ("worker_status", "online", True)

    beat = parse_event(worker_heartbeat_topic("w1"), encode(heartbeat_payload("w1", 7, 0.5, ts=3)))
    assert (beat.kind, beat.seq, beat.data["interval_s"]) == ("worker_heartbeat", 7, 0.5)

    coord = parse_event(coordinator_topic("c1"), encode(coordinator_payload("c1", "up", ts=4.0)))
    assert (coord.kind, coord.subject) == ("coordinator", "c1")

    topic, will = worker_will("w1", "127.0.0.1:9")
    assert topic == worker_status_topic("w1")
    assert (will["state"], will["cause"]) == ("offline", "will")
    assert parse_event(topic, encode(will)).name == "offline"
    assert parse_event(
        job_topic("j"), encode(job_payload("j", 9, "failed", 1, reason="x"))
    ).terminal


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("other/v1/jobs/j1", {"event": "accepted", "job_id": "j1", "seq": 1, "ts": 1}),
        ("shardnet/v1/jobs/j1/extra", {"event": "accepted", "job_id": "j1", "seq": 1, "ts": 1}),
        ("shardnet/v1/jobs/j1", {"event": "exploded", "job_id": "j1", "seq": 1, "ts": 1}),
        ("shardnet/v1/jobs/j1", {"event": "accepted", "job_id": "j2", "seq": 1, "ts": 1}),
        ("shardnet/v1/jobs/j1", {"event": "accepted", "job_id": "j1", "ts": 1}),
        ("shardnet/v1/jobs/j1", {"event": "accepted", "job_id": "j1", "seq": 0, "ts": 1}),
        ("shardnet/v1/jobs/j1", {"event": "accepted", "job_id": "j1", "seq": 1, "ts": "now"}),
        ("shardnet/v1/workers/w1/status", {"event": "busy", "state": "busy", "ts": 1}),
        ("shardnet/v1/workers/w1/status", {"event": "online", "state": "online", "ts": 1}),
        ("shardnet/v1/workers/w1/heartbeat", {"event": "heartbeat", "worker_id": "w2", "ts": 1}),
    ],
)
def test_parse_event_rejects_what_breaks_the_contract(topic, payload):
    with pytest.raises(InvalidEvent):
        parse_event(topic, encode(payload))


def test_parse_event_rejects_non_json():
    for payload in [b"\xff", b"[1]", b"not json"]:
        with pytest.raises(InvalidEvent):
            parse_event(job_topic("j"), payload)


def test_format_event_is_one_readable_line():
    event = parse_event(
        job_topic("j1"),
        encode(job_payload("j1", 3, "shard_done", 1.0, shard=1, worker="w1", ms=12.5)),
    )
    line = format_event(event)
    assert "\n" not in line
    assert line.endswith("job j1 #3 shard_done shard=1 worker=w1 ms=12.5")
    failed = parse_event(
        job_topic("j1"), encode(job_payload("j1", 4, "failed", 1.0, reason="no workers"))
    )
    assert format_event(failed).endswith('failed reason="no workers"')
    status = parse_event(
        worker_status_topic("w1"),
        encode(worker_status_payload("w1", "h:1", "offline", ts=1.0, cause="will")),
        retained=True,
    )
    assert format_event(status).endswith("worker w1 offline endpoint=h:1 cause=will (retained)")


def test_liveness_tracker_expires_silent_workers_without_a_will():
    tracker = LivenessTracker(factor=3)
    beat = parse_event(worker_heartbeat_topic("w1"), encode(heartbeat_payload("w1", 1, 1.0, ts=0)))
    online = parse_event(
        worker_status_topic("w2"), encode(worker_status_payload("w2", "e", "online", ts=0))
    )
    tracker.observe(beat, now=100.0)
    tracker.observe(online, now=100.0)
    assert tracker.alive() == {"w1", "w2"}
    assert tracker.expire(now=102.9) == []
    assert sorted(tracker.expire(now=103.1)) == ["w1", "w2"]
    assert tracker.alive() == set()
    tracker.observe(beat, now=200.0)
    offline = parse_event(
        worker_status_topic("w1"), encode(worker_status_payload("w1", "e", "offline", ts=0))
    )
    tracker.observe(offline, now=200.1)
    assert tracker.alive() == set()


# ------------------------------------------------------------------ against Mosquitto


async def _job_events_in_order(broker) -> None:
    job_id = uid("job")
    async with (
        Subscriber(*broker, job_topic(job_id)) as sub,
        EventBus(*broker, uid("coord")) as bus,
    ):
        await bus.wait_connected(5)
        events = JobEvents(bus, job_id)
        events.accepted("mlp", rows=4800, shards=48)
        for shard in range(48):
            events.shard_done(shard, worker=f"w{shard % 3}", ms=1.0 + shard)
        events.completed(rows=4800)
        await wait_for(lambda: len(sub.events) >= 50, 10, "50 job events delivered")
    received = [e for _, e in sub.events]
    assert [e.seq for e in received] == list(range(1, 51))
    assert [e.name for e in received] == ["accepted"] + ["shard_done"] * 48 + ["completed"]
    assert [e.data["shard"] for e in received[1:-1]] == list(range(48))
    assert all(e.subject == job_id and not e.retained for e in received)
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(received))


@pytest.mark.slow
def test_job_events_arrive_in_order_with_increasing_seq(broker):
    asyncio.run(_job_events_in_order(broker))


@pytest.mark.slow
def test_publish_to_receive_latency_on_loopback(broker):
    async def measure() -> list[float]:
        job_id = uid("job")
        async with (
            Subscriber(*broker, job_topic(job_id)) as sub,
            EventBus(*broker, uid("coord")) as bus,
        ):
            await bus.wait_connected(5)
            events = JobEvents(bus, job_id)
            latencies = []
            for shard in range(100):
                t0 = time.perf_counter()
                events.shard_done(shard, worker="w", ms=1.0)
                await wait_for(lambda n=shard + 1: len(sub.events) >= n, 5, "event delivered")
                latencies.append((sub.events[-1][0] - t0) * 1000)
            return latencies

    latencies = asyncio.run(measure())
    p50 = statistics.median(latencies)
    p99 = sorted(latencies)[98]
    print(f"\nMQTT publish->receive on loopback: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p50 < 50


@pytest.mark.slow
def test_retained_status_reaches_a_late_subscriber_and_clean_close_says_offline(
    broker, retained_cleanup
):
    worker_id = uid("worker")
    topic = worker_status_topic(worker_id)
    retained_cleanup.append(topic)

    async def scenario() -> None:
        bus = EventBus(*broker, worker_id, will=worker_will(worker_id, "127.0.0.1:7001"))
        async with bus:
            presence = WorkerPresence(bus, worker_id, "127.0.0.1:7001", interval_s=0.2)
            async with presence:
                await bus.flush(5)
                # A subscriber that arrives after the fact still learns the worker is online.
                late = [e async for e in watch(*broker, topics=[topic], timeout_s=1.0)]
                assert [(e.name, e.retained) for e in late] == [("online", True)]
                assert late[0].data["endpoint"] == "127.0.0.1:7001"
                async with Subscriber(*broker, topic) as sub:
                    await wait_for(lambda: sub.named("online"), 5, "retained online")
                    started = time.monotonic()
                    await presence.close()
                    await bus.close()
                    await wait_for(lambda: sub.named("offline"), 2, "offline on clean close")
                    took = time.monotonic() - started
            await presence.close()  # idempotent
        await bus.close()  # idempotent
        offline = sub.named("offline")[-1]
        assert offline.data["cause"] == "shutdown"  # published by us, not the broker's Will
        assert took < 1.5
        after = [e async for e in watch(*broker, topics=[topic], timeout_s=0.5)]
        assert [(e.name, e.data["cause"]) for e in after] == [("offline", "shutdown")]

    asyncio.run(scenario())


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from shardnet.events import EventBus, WorkerPresence, worker_will

    async def main(worker_id, port, keepalive):
        will = worker_will(worker_id, "127.0.0.1:7002")
        async with EventBus("127.0.0.1", port, worker_id, will=will, keepalive_s=keepalive) as bus:
            async with WorkerPresence(bus, worker_id, "127.0.0.1:7002", interval_s=0.25):
                await bus.wait_connected(5)
                await bus.flush(5)
                print("ready", flush=True)
                await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


@contextlib.contextmanager
def worker_process(worker_id: str, port: int, keepalive_s: int):
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, worker_id, str(port), str(keepalive_s)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
            proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


async def _wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
    except TimeoutError:
        pytest.fail("worker process did not get ready within 15 s")
    assert line.strip() == "ready", f"worker process said {line!r} (exit {proc.poll()})"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "keepalive_s", "deadline_s"),
    [
        # A killed process: the kernel closes its socket, Mosquitto fires the Will at once.
        (signal.SIGKILL, 2, 2.0),
        # A frozen process keeps its socket open: the Will comes after 1.5 x keepalive plus
        # Mosquitto 2.0.11's coarse keepalive sweep (measured 3.5-9 s for keepalive 2).
        (signal.SIGSTOP, 2, 15.0),
    ],
    ids=["killed", "frozen"],
)
def test_last_will_marks_a_dead_worker_offline(
    broker, retained_cleanup, sig, keepalive_s, deadline_s
):
    worker_id = uid("worker")
    topic = worker_status_topic(worker_id)
    retained_cleanup.append(topic)

    async def scenario() -> None:
        async with Subscriber(*broker, topic, worker_heartbeat_topic(worker_id)) as sub:
            with worker_process(worker_id, broker[1], keepalive_s) as proc:
                await _wait_ready(proc)
                await wait_for(lambda: sub.named("online"), 5, "worker online")
                await wait_for(lambda: sub.named("heartbeat"), 5, "a heartbeat")
                os.kill(proc.pid, sig)
                took = await wait_for(
                    lambda: sub.named("offline"), deadline_s, "Last Will 'offline'"
                )
        offline = sub.named("offline")[-1]
        print(f"\nLast Will after {sig.name}: {took:.2f} s (keepalive {keepalive_s} s)")
        assert offline.data["cause"] == "will"
        if sig == signal.SIGSTOP:
            assert took >= keepalive_s, f"Will fired after {took:.2f} s, before keepalive"
        late = [e async for e in watch(*broker, topics=[topic], timeout_s=0.5)]
        assert [(e.name, e.retained, e.data["cause"]) for e in late] == [("offline", True, "will")]

    asyncio.run(scenario())


@pytest.mark.slow
def test_unreachable_broker_never_raises_warns_once_and_counts_drops(caplog):
    port = free_port()

    async def scenario() -> EventBus:
        bus = EventBus(HOST, port, uid("lonely"), queue_size=10, backoff_max_s=0.05)
        async with bus:
            events = JobEvents(bus, uid("job"))
            for shard in range(25):
                events.shard_done(shard, worker="w", ms=1.0)
            unencodable: dict = {}
            unencodable["self"] = unencodable
            bus.publish(job_topic("j"), unencodable)
            threading.Thread(target=bus.publish, args=(job_topic("j"), {"a": 1})).start()
            await wait_for(lambda: bus.attempts >= 4, 10, "several reconnect attempts")
            assert not bus.connected
            assert bus.pending == 10
            with pytest.raises(EventsUnavailable):
                await bus.wait_connected(0.05)
            started = time.monotonic()
        assert time.monotonic() - started < 1.0
        bus.publish(job_topic("j"), {"after": "close"})
        return bus

    with caplog.at_level(logging.DEBUG, logger="shardnet.events"):
        bus = asyncio.run(scenario())
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("shardnet") and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"events skipped: no MQTT broker at {HOST}:{port}")
    # 25 + 1 from a thread into a queue of 10: 16 pushed out; 1 unencodable; 10 unsent at
    # close; 1 after close.
    assert bus.dropped == 16 + 1 + 10 + 1
    assert bus.published == 0


@pytest.fixture
def own_broker(tmp_path):
    """A private Mosquitto on a free port that a test may stop and start again."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n")

    class Broker:
        proc: subprocess.Popen | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while not port_open(port):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mosquitto on port {port} did not start")
                time.sleep(0.02)

        def stop(self) -> None:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)

    broker = Broker()
    broker.port = port
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.slow
def test_publishing_resumes_and_retained_status_returns_after_the_broker_restarts(own_broker):
    port = own_broker.port
    worker_id = uid("worker")
    job_id = uid("job")
    status = worker_status_topic(worker_id)

    async def scenario() -> None:
        bus = EventBus(
            HOST,
            port,
            worker_id,
            will=worker_will(worker_id, "e"),
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
        )
        async with bus, WorkerPresence(bus, worker_id, "e", interval_s=0.2):
            events = JobEvents(bus, job_id)
            await bus.wait_connected(5)
            events.accepted("mlp", rows=10, shards=2)
            await bus.flush(5)

            own_broker.stop()
            await wait_for(lambda: not bus.connected, 5, "bus notices the broker is gone")
            events.shard_dispatched(0, rows=5, worker="w1")  # queued while away
            own_broker.start()
            await bus.wait_connected(5)
            await bus.flush(5)

            # The new broker kept nothing; the bus re-sent the retained status itself.
            late = [e async for e in watch(HOST, port, topics=[status], timeout_s=0.5)]
            assert [(e.name, e.retained) for e in late] == [("online", True)]

            async with Subscriber(HOST, port, job_topic(job_id)) as sub:
                events.shard_done(0, worker="w1", ms=3.0)
                events.completed()
                await wait_for(lambda: len(sub.events) >= 2, 5, "events after the restart")
            assert [(e.name, e.seq) for _, e in sub.events] == [("shard_done", 3), ("completed", 4)]
            assert bus.connects == 2
            assert bus.pending == 0

    asyncio.run(scenario())


@pytest.mark.slow
def test_watch_fails_clearly_without_a_broker():
    async def scenario() -> None:
        async for _ in watch(HOST, free_port(), timeout_s=1):
            pass

    with pytest.raises(EventsUnavailable, match="MQTT broker at"):
        asyncio.run(scenario())


@pytest.mark.slow
def test_run_watch_prints_a_job_until_it_settles(broker):
    job_id = uid("job")
    args = types.SimpleNamespace(
        mqtt_host=HOST, mqtt_port=broker[1], job=job_id, timeout=15, json=False, heartbeats=False
    )
    out = io.StringIO()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run_watch(args, out)))
    thread.start()

    async def publish() -> None:
        async with EventBus(*broker, uid("coord")) as bus:
            events = JobEvents(bus, job_id)
            # run_watch subscribes in its own thread; announce until it has printed a line.
            while not out.getvalue():
                events.accepted("mlp", rows=2, shards=1)
                await asyncio.sleep(0.05)
                assert thread.is_alive(), "run_watch ended early"
            events.completed()
            events.settled("0xabc", charge=10**18)
            await bus.flush(5)

    try:
        asyncio.run(publish())
    finally:
        thread.join(15)
    assert result == [0]
    names = [line.split()[4] for line in out.getvalue().splitlines()]
    assert names[-2:] == ["completed", "settled"]
    assert set(names[:-2]) == {"accepted"}
    assert "tx_hash=0xabc charge=1000000000000000000" in out.getvalue().splitlines()[-1]
