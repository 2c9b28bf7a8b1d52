"""Joining a coordinator by registration and heartbeats (the static way to join)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from shardnet.identity import heartbeat_text
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.protocol import shardnet_v1_pb2_grpc as v1_grpc
from shardnet.rpc import channel

log = logging.getLogger(__name__)


def heartbeat(worker_id: str, sign: Callable[[str], bytes]) -> v1.HeartbeatRequest:
    """A heartbeat only the holder of the worker's peer key can make."""
    now = time.time()
    return v1.HeartbeatRequest(
        worker_id=worker_id, timestamp=now, signature=sign(heartbeat_text(worker_id, now))
    )


async def stay_registered(
    target: str,
    info: v1.WorkerInfo,
    *,
    call_timeout_s: float,
    sign: Callable[[str], bytes],
) -> None:
    """Register with the coordinator at `target`, then heartbeat forever. Survives the
    coordinator going away: retries with backoff and registers again when it comes back
    (a restarted coordinator answers heartbeats with known=False)."""
    async with channel(target) as ch:
        stub = v1_grpc.CoordinatorStub(ch)
        registered = False
        interval = 1.0
        backoff = 0.2
        while True:
            try:
                if not registered:
                    reply = await stub.Register(
                        v1.RegisterRequest(worker=info), timeout=call_timeout_s
                    )
                    interval = reply.heartbeat_interval_s or interval
                    registered = True
                    log.info("registered with coordinator %s as %s", target, info.worker_id)
                else:
                    reply = await stub.Heartbeat(
                        heartbeat(info.worker_id, sign), timeout=call_timeout_s
                    )
                    if not reply.known:
                        log.info("coordinator %s forgot us; registering again", target)
                        registered = False
                        continue
                backoff = 0.2
                await asyncio.sleep(interval)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "coordinator %s: %s: %s (retrying in %.1fs)",
                    target,
                    exc.code().name,
                    exc.details(),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
