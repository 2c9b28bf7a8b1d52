"""Watch the network live: subscribe to ``shardnet/v1/`` events and print them.

The logic behind a ``shardnet watch`` command: :func:`watch` yields checked events,
:func:`format_event` turns one into one readable line, :func:`run_watch` is the command.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, TextIO

import aiomqtt

from shardnet.events import (
    ALL_TOPICS,
    Event,
    EventsUnavailable,
    InvalidEvent,
    job_topic,
    parse_event,
)

log = logging.getLogger(__name__)


async def watch(
    host: str,
    port: int,
    *,
    job_id: str | None = None,
    timeout_s: float | None = None,
    topics: Iterable[str] | None = None,
    connect_timeout_s: float = 5.0,
) -> AsyncIterator[Event]:
    """Yield events from one job's topic, or everything under ``shardnet/v1/#``.

    Ends normally after ``timeout_s`` (None: never). ``topics`` overrides the
    subscription (MQTT filters). Messages that break the contract are skipped and
    logged; an empty retained payload (a cleared topic) is skipped. Raises
    :class:`EventsUnavailable` if the broker cannot be reached or the link drops.
    """
    subscriptions = list(topics) if topics else [job_topic(job_id) if job_id else ALL_TOPICS]
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    client = aiomqtt.Client(
        host,
        port,
        identifier=f"shardnet-watch-{uuid.uuid4().hex[:12]}",
        timeout=connect_timeout_s,
        clean_session=True,
    )
    try:
        async with client:
            for topic in subscriptions:
                await client.subscribe(topic, qos=1)
            messages = aiter(client.messages)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    async with asyncio.timeout(remaining):
                        message = await anext(messages)
                except TimeoutError:
                    return
                if not message.payload:
                    continue
                try:
                    event = parse_event(
                        str(message.topic), message.payload, retained=message.retain
                    )
                except InvalidEvent as exc:
                    log.warning("skipped a message that breaks the event contract: %s", exc)
                    continue
                yield event
    except aiomqtt.MqttError as exc:
        raise EventsUnavailable(f"MQTT broker at {host}:{port}: {exc}") from exc


_HIDDEN = frozenset({"event", "ts", "seq", "job_id", "worker_id", "coordinator_id", "state"})


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return value
    return json.dumps(value, separators=(",", ":"))


def format_event(event: Event) -> str:
    """One line: local time, what it is about, the event name, then its other fields.

    ``12:00:01.234 job 5f2c #3 shard_done shard=1 worker=w1 ms=12.3``
    """
    when = datetime.datetime.fromtimestamp(event.ts).strftime("%H:%M:%S.%f")[:-3]
    match event.kind:
        case "job":
            about = f"job {event.subject} #{event.seq}"
        case "worker_status" | "worker_heartbeat":
            about = f"worker {event.subject}"
        case _:
            about = f"coordinator {event.subject}"
    name = event.name
    if event.kind == "worker_heartbeat" and event.seq is not None:
        name = f"heartbeat #{event.seq}"
    elif event.kind == "coordinator":
        name = str(event.data.get("state", name))
    fields = " ".join(f"{k}={_value(v)}" for k, v in event.data.items() if k not in _HIDDEN)
    line = f"{when} {about} {name}"
    if fields:
        line += f" {fields}"
    if event.retained:
        line += " (retained)"
    return line


async def _run_watch(
    host: str,
    port: int,
    job_id: str | None,
    timeout_s: float | None,
    as_json: bool,
    heartbeats: bool,
    out: TextIO,
) -> int:
    async for event in watch(host, port, job_id=job_id, timeout_s=timeout_s):
        if event.kind == "worker_heartbeat" and not heartbeats:
            continue
        if as_json:
            out.write(json.dumps({"topic": event.topic, **event.data}) + "\n")
        else:
            out.write(format_event(event) + "\n")
        out.flush()
        if job_id is not None and event.name in ("failed", "settled"):
            return 1 if event.name == "failed" else 0
    return 0


def run_watch(args: Any, out: TextIO | None = None) -> int:
    """``shardnet watch``: print events until interrupted, ``--timeout`` or the job's end.

    Reads ``args.mqtt_host`` (str), ``args.mqtt_port`` (int), ``args.job`` (str | None),
    ``args.timeout`` (float | None), ``args.json`` (bool) and ``args.heartbeats`` (bool);
    missing attributes take defaults. With ``--job`` it exits 0 on ``settled``, 1 on
    ``failed``; an unpaid job ends at ``completed``, so use ``--timeout`` there. Exit 2
    when the broker cannot be reached.
    """
    host = getattr(args, "mqtt_host", None) or "127.0.0.1"
    port = int(getattr(args, "mqtt_port", None) or 1883)
    try:
        return asyncio.run(
            _run_watch(
                host,
                port,
                getattr(args, "job", None),
                getattr(args, "timeout", None),
                bool(getattr(args, "json", False)),
                bool(getattr(args, "heartbeats", False)),
                out or sys.stdout,
            )
        )
    except EventsUnavailable as exc:
        print(f"shardnet watch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
