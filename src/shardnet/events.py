"""Live events over MQTT: job lifecycle and worker presence, for anyone to watch.

Topic contract (public; bump the ``v1`` segment to change it)
=============================================================

Every topic starts with ``shardnet/v1/``. Every payload is one UTF-8 JSON object with at
least ``"event"`` (a name below) and ``"ts"`` (unix seconds, float, the publisher's
clock). An empty payload on a retained topic is the MQTT way to clear it and is not an
event.

``shardnet/v1/jobs/{job_id}`` — QoS 1, not retained
    One job's lifecycle, in order. Extra fields: ``"job_id"`` and ``"seq"`` (int,
    per job, 1, 2, 3, ... in publish order; a gap means a message was lost).

    ================== ==========================================================
    event              fields
    ================== ==========================================================
    accepted           model, rows, shards (number planned)
    shard_dispatched   shard (index), rows, worker
    shard_done         shard, worker, ms
    verdict            shard, loser, outcome
    completed          (optional: rows, ms)
    failed             reason
    settled            tx_hash, charge (int, wei)
    ================== ==========================================================

    A job ends with ``completed`` or ``failed``; a paid job that completed is later
    ``settled``.

``shardnet/v1/workers/{worker_id}/status`` — QoS 1, retained
    ``{"event": "online" | "offline", "state": same, "worker_id", "endpoint", "ts",
    "cause"}``. The worker publishes ``online`` on every (re)connect and ``offline``
    (``"cause": "shutdown"``) on a clean stop. Its connection carries a Last Will of
    ``offline`` (``"cause": "will"``, retained) that the broker publishes when the
    connection dies without a clean DISCONNECT: at once for a killed process, after
    1.5 × keepalive for a frozen one. A Will's ``ts`` is when the worker started,
    not when it died.

``shardnet/v1/workers/{worker_id}/heartbeat`` — QoS 0, not retained
    ``{"event": "heartbeat", "worker_id", "ts", "seq", "interval_s"}`` every
    ``interval_s``. Liveness does not rest on the Will alone: treat a worker whose
    heartbeats stop for a few intervals as gone (see :class:`LivenessTracker`).

``shardnet/v1/network/coordinators/{coordinator_id}`` — QoS 1, retained
    ``{"event": "status", "coordinator_id", "state", "ts", ...}`` (optional).

Ids are non-empty and contain none of ``/ + #`` nor NUL.

Publishing never gets in the way of inference: :meth:`EventBus.publish` is synchronous,
never blocks and never raises; a background task delivers at least once, in order, and
drops the oldest messages (counted in :attr:`EventBus.dropped`) when the broker is away
for long.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, NewType, Self

import aiomqtt

from shardnet.errors import ShardnetError

log = logging.getLogger(__name__)

TOPIC_PREFIX = "shardnet/v1/"
ALL_TOPICS = TOPIC_PREFIX + "#"

JobId = NewType("JobId", str)
WorkerId = NewType("WorkerId", str)
CoordinatorId = NewType("CoordinatorId", str)

JOB_EVENTS = frozenset(
    {"accepted", "shard_dispatched", "shard_done", "verdict", "completed", "failed", "settled"}
)
TERMINAL_JOB_EVENTS = frozenset({"completed", "failed", "settled"})
WORKER_STATES = frozenset({"online", "offline"})

EventKind = Literal["job", "worker_status", "worker_heartbeat", "coordinator"]


class EventError(ShardnetError):
    """Root of the events layer's errors."""


class InvalidEvent(EventError):
    """A topic or payload that breaks the topic contract; ``topic`` says where."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason


class EventsUnavailable(EventError):
    """The MQTT broker could not be reached, or the connection to it was lost."""


# ---------------------------------------------------------------------------- topics


def _check_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "/+#\0"):
        raise InvalidEvent(f"{TOPIC_PREFIX}…", f"bad {what} {value!r}")
    return value


def job_topic(job_id: str) -> str:
    return f"{TOPIC_PREFIX}jobs/{_check_id('job id', job_id)}"


def worker_status_topic(worker_id: str) -> str:
    return f"{TOPIC_PREFIX}workers/{_check_id('worker id', worker_id)}/status"


def worker_heartbeat_topic(worker_id: str) -> str:
    return f"{TOPIC_PREFIX}workers/{_check_id('worker id', worker_id)}/heartbeat"


def coordinator_topic(coordinator_id: str) -> str:
    return f"{TOPIC_PREFIX}network/coordinators/{_check_id('coordinator id', coordinator_id)}"


# -------------------------------------------------------------------------- payloads


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON; values JSON cannot hold (numpy scalars, paths) become strings."""
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def job_payload(job_id: str, seq: int, event: str, ts: float, **fields: Any) -> dict[str, Any]:
    if event not in JOB_EVENTS:
        raise InvalidEvent(job_topic(job_id), f"unknown job event {event!r}")
    return {"event": event, "job_id": job_id, "seq": seq, "ts": ts, **fields}


def worker_status_payload(
    worker_id: str,
    endpoint: str,
    state: Literal["online", "offline"],
    *,
    ts: float,
    cause: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    if state not in WORKER_STATES:
        raise InvalidEvent(worker_status_topic(worker_id), f"unknown state {state!r}")
    payload = {"event": state, "state": state, "worker_id": worker_id, "endpoint": endpoint}
    payload.update(ts=ts, **fields)
    if cause is not None:
        payload["cause"] = cause
    return payload


def heartbeat_payload(worker_id: str, seq: int, interval_s: float, *, ts: float) -> dict[str, Any]:
    return {
        "event": "heartbeat",
        "worker_id": worker_id,
        "seq": seq,
        "interval_s": interval_s,
        "ts": ts,
    }


def coordinator_payload(coordinator_id: str, state: str, *, ts: float, **fields: Any) -> dict:
    return {"event": "status", "coordinator_id": coordinator_id, "state": state, "ts": ts, **fields}


def worker_will(worker_id: str, endpoint: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    """The (topic, payload) a worker passes as ``EventBus(will=...)``."""
    payload = worker_status_payload(
        worker_id, endpoint, "offline", ts=time.time(), cause="will", **fields
    )
    return worker_status_topic(worker_id), payload


# --------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True)
class Event:
    """One message under ``shardnet/v1/``, checked against the contract.

    ``subject`` is the job, worker or coordinator id from the topic; ``data`` is the
    whole payload (read-only).
    """

    topic: str
    kind: EventKind
    name: str
    subject: str
    ts: float
    seq: int | None
    data: Mapping[str, Any]
    retained: bool = False

    @property
    def terminal(self) -> bool:
        return self.kind == "job" and self.name in TERMINAL_JOB_EVENTS


def _topic_kind(topic: str) -> tuple[EventKind, str]:
    if not topic.startswith(TOPIC_PREFIX):
        raise InvalidEvent(topic, f"not under {TOPIC_PREFIX}")
    parts = topic[len(TOPIC_PREFIX) :].split("/")
    match parts:
        case ["jobs", job_id] if job_id:
            return "job", job_id
        case ["workers", worker_id, "status"] if worker_id:
            return "worker_status", worker_id
        case ["workers", worker_id, "heartbeat"] if worker_id:
            return "worker_heartbeat", worker_id
        case ["network", "coordinators", coordinator_id] if coordinator_id:
            return "coordinator", coordinator_id
    raise InvalidEvent(topic, "unknown topic")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_event(topic: str, payload: bytes | str, *, retained: bool = False) -> Event:
    """Check a received message against the topic contract; raise :class:`InvalidEvent`."""
    kind, subject = _topic_kind(topic)
    try:
        data = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise InvalidEvent(topic, f"payload is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent(topic, "payload is not a JSON object")
    name = data.get("event")
    ts = data.get("ts")
    if not isinstance(name, str):
        raise InvalidEvent(topic, "missing 'event'")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        raise InvalidEvent(topic, "missing or bad 'ts'")
    seq = data.get("seq")
    if seq is not None and (not _is_int(seq) or seq < 1):
        raise InvalidEvent(topic, f"bad 'seq' {seq!r}")
    if kind == "job":
        if name not in JOB_EVENTS:
            raise InvalidEvent(topic, f"unknown job event {name!r}")
        if data.get("job_id") != subject:
            raise InvalidEvent(topic, "'job_id' does not match the topic")
        if seq is None:
            raise InvalidEvent(topic, "job event without 'seq'")
    elif kind == "worker_status":
        if name not in WORKER_STATES or data.get("state") != name:
            raise InvalidEvent(topic, f"bad worker state {name!r}")
        if data.get("worker_id") != subject:
            raise InvalidEvent(topic, "'worker_id' does not match the topic")
    elif kind == "worker_heartbeat":
        if name != "heartbeat" or data.get("worker_id") != subject:
            raise InvalidEvent(topic, "bad heartbeat")
    elif data.get("coordinator_id") != subject:
        raise InvalidEvent(topic, "'coordinator_id' does not match the topic")
    return Event(
        topic=topic,
        kind=kind,
        name=name,
        subject=subject,
        ts=float(ts),
        seq=seq,
        data=MappingProxyType(data),
        retained=retained,
    )


class LivenessTracker:
    """Which workers are alive, from status and heartbeat events (pure; bring the clock).

    A worker is alive after ``online`` or a heartbeat, until ``offline`` or until
    ``factor`` heartbeat intervals pass with nothing heard (the Will may never come: a
    frozen worker behind a NAT, or a broker that does not expire clients).
    """

    def __init__(self, *, factor: float = 3.0, default_interval_s: float = 1.0) -> None:
        self.factor = factor
        self.default_interval_s = default_interval_s
        self._seen: dict[str, tuple[float, float]] = {}  # worker -> (last heard, interval)

    def observe(self, event: Event, now: float) -> None:
        if event.kind == "worker_heartbeat":
            interval = event.data.get("interval_s")
            if not isinstance(interval, int | float) or not interval > 0:
                interval = self.default_interval_s
            self._seen[event.subject] = (now, float(interval))
        elif event.kind == "worker_status":
            if event.name == "offline":
                self._seen.pop(event.subject, None)
            else:
                _, interval = self._seen.get(event.subject, (now, self.default_interval_s))
                self._seen[event.subject] = (now, interval)

    def expire(self, now: float) -> list[str]:
        """Forget and return the workers silent for too long."""
        gone = [w for w, (t, i) in self._seen.items() if now - t > self.factor * i]
        for worker in gone:
            del self._seen[worker]
        return gone

    def alive(self) -> set[str]:
        return set(self._seen)


# ------------------------------------------------------------------------------ bus


@dataclasses.dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class EventBus:
    """Publishes one process's events to an MQTT broker, in the background.

    ``async with EventBus(...) as bus`` starts a named connection task (inside a
    TaskGroup owned by the bus) that connects, drains the queue in order, and reconnects
    with exponential backoff. After every (re)connect the latest message of each retained
    topic is sent again, so retained status is right even if the broker lost it. The
    Will, if any, is ``(topic, payload)`` published retained at QoS 1 by the broker when
    this connection dies uncleanly.
    """

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        client_id: str,
        *,
        will: tuple[str, Mapping[str, Any]] | None = None,
        keepalive_s: int = 10,
        queue_size: int = 10_000,
        timeout_s: float = 5.0,
        close_timeout_s: float = 2.0,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.client_id = client_id
        self.keepalive_s = int(keepalive_s)
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.close_timeout_s = close_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._will = (
            None
            if will is None
            else aiomqtt.Will(topic=will[0], payload=encode(will[1]), qos=1, retain=True)
        )
        self._queue: collections.deque[_Outgoing] = collections.deque()
        self._retained: dict[str, _Outgoing] = {}
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        self._idle = asyncio.Event()  # set when connected with nothing queued or in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0
        self.published = 0
        self.attempts = 0
        self.connects = 0

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._runner is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._runner = asyncio.create_task(self._supervise(), name=f"eventbus[{self.client_id}]")

    async def close(self) -> None:
        """Flush what can be sent within ``close_timeout_s``, disconnect cleanly. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._wake.set()
        runner = self._runner
        if runner is None:
            return
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await asyncio.shield(runner)
        except TimeoutError:
            runner.cancel()
            # The runner is ours and cancelled on purpose; whatever it raises now is moot.
            with_exc = await asyncio.gather(runner, return_exceptions=True)
            log.debug("event bus %s: close timed out (%s)", self.client_id, with_exc)
        finally:
            if self._queue:
                self.dropped += len(self._queue)
                self._queue.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Wait until connected; raise :class:`EventsUnavailable` after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError as exc:
            raise EventsUnavailable(self._where()) from exc

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued message has been acknowledged by the broker."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    await self._idle.wait()
                    if not self._queue:
                        return
                    self._idle.clear()
        except TimeoutError as exc:
            raise EventsUnavailable(f"{self._where()}: {len(self._queue)} unsent") from exc

    # ------------------------------------------------------------------ publish

    def publish(
        self,
        topic: str,
        payload: Mapping[str, Any],
        *,
        retain: bool = False,
        qos: int = 1,
    ) -> None:
        """Queue a message; never blocks, never raises. Callable from any thread."""
        try:
            message = _Outgoing(topic, encode(payload), qos, retain)
            if self._loop is None or threading.get_ident() == self._loop_thread:
                self._enqueue(message)
            else:
                self._loop.call_soon_threadsafe(self._enqueue, message)
        except Exception:  # broad on purpose: events must never break the caller's path
            self.dropped += 1
            log.debug("event dropped: cannot publish on %s", topic, exc_info=True)

    def _enqueue(self, message: _Outgoing) -> None:
        if self._closed:
            self.dropped += 1
            return
        if message.retain:
            self._retained[message.topic] = message
        if len(self._queue) >= self.queue_size:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(message)
        self._idle.clear()
        self._wake.set()

    # ---------------------------------------------------------------- background

    def _where(self) -> str:
        return f"{self.broker_host}:{self.broker_port}"

    async def _supervise(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    self._connection_loop(), name=f"eventbus[{self.client_id}].connection"
                )
        except Exception:  # broad on purpose: a bug here must not reach the inference path
            log.exception("event bus %s stopped; events are no longer published", self.client_id)

    async def _connection_loop(self) -> None:
        backoff = self.backoff_initial_s
        warned = False
        while not self._closing.is_set():
            client = aiomqtt.Client(
                self.broker_host,
                self.broker_port,
                identifier=self.client_id,
                will=self._will,
                keepalive=self.keepalive_s,
                timeout=self.timeout_s,
                clean_session=True,
                logger=log.getChild("mqtt"),
            )
            self.attempts += 1
            try:
                # Bounded by paho's socket connect timeout and by `timeout_s` for CONNACK.
                await client.__aenter__()
            except (aiomqtt.MqttError, OSError) as exc:
                if not warned:
                    log.warning(
                        "events skipped: no MQTT broker at %s (%s); retrying quietly",
                        self._where(),
                        exc,
                    )
                    warned = True
                else:
                    log.debug("events: still no MQTT broker at %s: %s", self._where(), exc)
                await self._sleep_unless_closing(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            backoff = self.backoff_initial_s
            self.connects += 1
            if warned or self.connects > 1:
                log.info("events: connected to MQTT broker at %s", self._where())
            warned = False
            try:
                await self._connected_session(client)
            except* (aiomqtt.MqttError, OSError) as group:
                log.warning(
                    "events: lost MQTT broker at %s (%s); retrying quietly",
                    self._where(),
                    group.exceptions[0].__cause__ or group.exceptions[0],
                )
                warned = True
            finally:
                self._connected.clear()
                self._idle.clear()
                # Clean DISCONNECT when we leave on purpose; a no-op after a lost link.
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await client.__aexit__(None, None, None)
                except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
                    log.debug("events: disconnect from %s: %s", self._where(), exc)

    async def _sleep_unless_closing(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            pass

    async def _connected_session(self, client: aiomqtt.Client) -> None:
        queued = {m.topic for m in self._queue if m.retain}
        for message in reversed(list(self._retained.values())):
            if message.topic not in queued:
                self._queue.appendleft(message)
        self._connected.set()
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(
                self._watch_link(client), name=f"eventbus[{self.client_id}].link"
            )
            tg.create_task(self._drain(client, watcher), name=f"eventbus[{self.client_id}].drain")

    @staticmethod
    async def _watch_link(client: aiomqtt.Client) -> None:
        """Raise MqttError as soon as the connection drops, even while nothing is sent."""
        async for _ in client.messages:
            pass

    async def _drain(self, client: aiomqtt.Client, watcher: asyncio.Task[None]) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                if self._closing.is_set():
                    watcher.cancel()
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            message = self._queue.popleft()
            try:
                await client.publish(
                    message.topic,
                    message.payload,
                    qos=message.qos,
                    retain=message.retain,
                    timeout=self.timeout_s,
                )
            except BaseException:
                # Not acknowledged: put it back first in line for the next connection.
                if len(self._queue) >= self.queue_size:
                    self.dropped += 1
                else:
                    self._queue.appendleft(message)
                raise
            self.published += 1


# ---------------------------------------------------------------------- job events


class JobEvents:
    """Publishes one job's lifecycle on its topic, stamping ``seq`` and ``ts``."""

    def __init__(
        self, bus: EventBus, job_id: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.bus = bus
        self.job_id = job_id
        self.topic = job_topic(job_id)
        self._clock = clock
        self._seq = 0

    def _emit(self, event: str, **fields: Any) -> None:
        self._seq += 1
        self.bus.publish(
            self.topic, job_payload(self.job_id, self._seq, event, self._clock(), **fields)
        )

    def accepted(self, model: str, rows: int, shards: int, **extra: Any) -> None:
        self._emit("accepted", model=model, rows=rows, shards=shards, **extra)

    def shard_dispatched(self, shard: int, rows: int, worker: str, **extra: Any) -> None:
        self._emit("shard_dispatched", shard=shard, rows=rows, worker=worker, **extra)

    def shard_done(self, shard: int, worker: str, ms: float, **extra: Any) -> None:
        self._emit("shard_done", shard=shard, worker=worker, ms=round(ms, 3), **extra)

    def verdict(self, shard: int, loser: str | None, outcome: str, **extra: Any) -> None:
        self._emit("verdict", shard=shard, loser=loser, outcome=outcome, **extra)

    def completed(self, **extra: Any) -> None:
        self._emit("completed", **extra)

    def failed(self, reason: str, **extra: Any) -> None:
        self._emit("failed", reason=reason, **extra)

    def settled(self, tx_hash: str, charge: int, **extra: Any) -> None:
        self._emit("settled", tx_hash=tx_hash, charge=charge, **extra)


# ------------------------------------------------------------------- worker presence


class WorkerPresence:
    """A worker's retained status and heartbeats on a bus.

    Build the bus with ``will=worker_will(worker_id, endpoint)`` so the broker marks the
    worker offline when it dies. ``async with WorkerPresence(...)`` publishes ``online``
    (retained; the bus re-sends it after every reconnect) and starts a named heartbeat
    task; leaving publishes ``offline`` (retained, ``cause: shutdown``).
    """

    def __init__(
        self,
        bus: EventBus,
        worker_id: str,
        endpoint: str,
        interval_s: float = 1.0,
        *,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.endpoint = endpoint
        self.interval_s = interval_s
        self.info = dict(info or {})
        self.status_topic = worker_status_topic(worker_id)
        self.heartbeat_topic = worker_heartbeat_topic(worker_id)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._task is not None or self._closed:
            return
        self._publish_status("online", cause="start")
        self._task = asyncio.create_task(
            self._heartbeats(), name=f"presence[{self.worker_id}].heartbeat"
        )

    async def close(self) -> None:
        """Stop heartbeats and publish ``offline``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._publish_status("offline", cause="shutdown")

    def _publish_status(self, state: Literal["online", "offline"], *, cause: str) -> None:
        payload = worker_status_payload(
            self.worker_id, self.endpoint, state, ts=time.time(), cause=cause, **self.info
        )
        self.bus.publish(self.status_topic, payload, retain=True)

    async def _heartbeats(self) -> None:
        seq = 0
        while True:
            seq += 1
            payload = heartbeat_payload(self.worker_id, seq, self.interval_s, ts=time.time())
            self.bus.publish(self.heartbeat_topic, payload, qos=0)
            await asyncio.sleep(self.interval_s)


def parse_broker(address: str) -> tuple[str, int] | None:
    """`host:port` of the broker from config; None when events are turned off ('')."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise EventError(f"MQTT broker {address!r} is not host:port")
    return host, int(port)
