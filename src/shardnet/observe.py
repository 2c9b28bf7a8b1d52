"""Observability over HTTP (aiohttp): Prometheus `/metrics` on every node, and on the
coordinator the live dashboard (`/`) with the JSON it polls (`/api/state`); plus the
standard `grpc.health.v1` service on the gRPC port.

The JSON of `/api/state` is a contract with `dashboard/index.html`:
`{coordinator, workers[], jobs[], verdicts[], payments[]}` (see `state()` below).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

MAX_JOBS = 50


class JobBoard:
    """Recent jobs and their progress, for the dashboard (newest first, bounded)."""

    def __init__(self, keep: int = MAX_JOBS) -> None:
        self.keep = keep
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _get(self, job_id: str) -> dict[str, Any] | None:
        return self._jobs.get(job_id)

    def accepted(
        self, job_id: str, model: str, rows: int, shards: int, escrow: str | None = None
    ) -> None:
        self._jobs[job_id] = {
            "id": job_id,
            "model": model,
            "rows": rows,
            "shards_total": shards,
            "shards_done": 0,
            "status": "running",
            "started": time.time(),
            "finished": None,
            "workers": [],
            "escrow": escrow,
            "tx_hash": None,
            "charge_wei": None,
            "error": None,
        }
        while len(self._jobs) > self.keep:
            self._jobs.popitem(last=False)

    def shard_done(self, job_id: str, worker: str) -> None:
        job = self._get(job_id)
        if job is not None:
            # Checks, retries and redone shards also finish; progress counts the plan.
            job["shards_done"] = min(job["shards_total"], job["shards_done"] + 1)
            if worker not in job["workers"]:
                job["workers"].append(worker)

    def finished(self, job_id: str, status: str, **fields: Any) -> None:
        job = self._get(job_id)
        if job is not None:
            if status == "completed":
                job["shards_done"] = job["shards_total"]
            job.update(status=status, **fields)
            job["finished"] = job["finished"] or time.time()

    def jobs(self) -> list[dict[str, Any]]:
        return [dict(j, workers=list(j["workers"])) for j in reversed(self._jobs.values())]


def health_servicer(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """Add grpc.health.v1 to `server`, SERVING for the whole server and the OIP service."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def set_serving(servicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", "inference.GRPCInferenceService"):
        await servicer.set(service, status)


def _dashboard_html() -> str:
    return resources.files("shardnet").joinpath("dashboard/index.html").read_text()


async def start_http(
    listen: str, *, state: Callable[[], dict] | None = None
) -> tuple[web.AppRunner, str]:
    """Serve `/metrics` (and, given `state`, `/api/state` and the dashboard at `/`) on
    `host:port`; return the runner (to clean up) and the address actually bound."""
    from shardnet.rpc import split_host_port

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    if state is not None:

        async def api_state(request: web.Request) -> web.Response:
            return web.json_response(state(), headers={"Cache-Control": "no-store"})

        async def index(request: web.Request) -> web.Response:
            return web.Response(text=_dashboard_html(), content_type="text/html")

        app.router.add_get("/api/state", api_state)
        app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_host_port(listen)
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # aiohttp exposes no public accessor
    return runner, f"{host}:{bound}"
