"""The coordinator's table of workers: who is live, what they serve, how fast they are."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc

from shardnet.errors import InvalidRequest, ModelNotFound
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.rpc import channel
from shardnet.sharding import WorkerId, effective_rates, ewma, hardware_score
from shardnet.signature import ModelSignature, parse_metadata
from shardnet.tls import fingerprint, pinned_channel

log = logging.getLogger(__name__)


@dataclass
class Worker:
    info: v1.WorkerInfo
    signatures: dict[str, ModelSignature]  # by sha256
    channel: grpc.aio.Channel
    stub: pb_grpc.GRPCInferenceServiceStub
    score: float
    last_seen: float
    rates: dict[str, float] = field(default_factory=dict)  # measured rows/s by sha256
    shards_done: int = 0
    shards_failed: int = 0
    checks_passed: int = 0
    stake_wei: int | None = None  # last seen on chain (None: no chain, or not checked yet)
    last_heartbeat_ts: float = 0.0  # the worker's own clock, from its last signed heartbeat
    # Set when a call to the worker failed at the transport level; cleared by its next
    # heartbeat. A suspect worker gets no new shards.
    suspect: bool = False

    @property
    def id(self) -> WorkerId:
        return WorkerId(self.info.worker_id)


def worker_channel(info: v1.WorkerInfo) -> grpc.aio.Channel:
    """TLS pinned to the certificate the worker presented, or plaintext when it has none
    (allowed only with --allow-plaintext-workers)."""
    if info.tls_certificate:
        return pinned_channel(info.endpoint, info.tls_certificate)
    return channel(info.endpoint)


# Bounds on what a registration may carry (generous: real ones are far smaller).
MAX_WORKER_ID_CHARS = 256
MAX_ENDPOINT_CHARS = 1024
MAX_MODELS = 1024


def parse_worker_info(info: v1.WorkerInfo) -> dict[str, ModelSignature]:
    """Check a registration and return the worker's model signatures by sha256."""
    if not info.worker_id:
        raise InvalidRequest("worker_id is empty")
    if len(info.worker_id) > MAX_WORKER_ID_CHARS:
        raise InvalidRequest(
            f"worker_id has {len(info.worker_id)} characters, over {MAX_WORKER_ID_CHARS}"
        )
    if len(info.endpoint) > MAX_ENDPOINT_CHARS:
        raise InvalidRequest(
            f"endpoint has {len(info.endpoint)} characters, over {MAX_ENDPOINT_CHARS}"
        )
    host, _, port = info.endpoint.rpartition(":")
    # isascii: str.isdigit() also accepts e.g. '²', which int() refuses
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise InvalidRequest(f"endpoint {info.endpoint!r} is not host:port")
    if info.tls_certificate:
        try:
            fingerprint(info.tls_certificate)
        except ValueError:
            raise InvalidRequest("tls_certificate is not a PEM certificate") from None
    if len(info.models) > MAX_MODELS:
        raise InvalidRequest(f"{len(info.models)} models, over {MAX_MODELS}")
    signatures = {}
    for model in info.models:
        if not model.name:
            raise InvalidRequest("a model has an empty name")
        if len(model.sha256) != 64 or any(c not in "0123456789abcdef" for c in model.sha256):
            raise InvalidRequest(
                f"model {model.name!r}: sha256 {model.sha256!r} is not 64 hex digits"
            )
        if model.sha256 in signatures:
            raise InvalidRequest(f"model {model.name!r}: sha256 {model.sha256} listed twice")
        if model.metadata.name != model.name:
            raise InvalidRequest(f"model {model.name!r}: metadata names {model.metadata.name!r}")
        signatures[model.sha256] = parse_metadata(model.metadata, model.sha256)
    return signatures


class WorkerRegistry:
    def __init__(self, ttl_s: float, ewma_alpha: float, clock=time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.ewma_alpha = ewma_alpha
        self.clock = clock
        self._workers: dict[WorkerId, Worker] = {}
        # Verification history outlives a worker's registration: strikes by worker id, and
        # exclusions by worker id, chain address and peer key.
        self._strikes: dict[WorkerId, int] = {}
        self._banned: dict[str, str] = {}
        self._closing: set[asyncio.Task] = set()

    def _retire(self, ch: grpc.aio.Channel) -> None:
        """Close a dropped worker's channel without cutting the calls still on it: closing
        at once would cancel them (they see CancelledError, not an error to retry on)."""
        task = asyncio.create_task(ch.close(grace=self.ttl_s + 60), name="registry.close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def strikes(self, worker_id: WorkerId) -> int:
        return self._strikes.get(worker_id, 0)

    def strike(self, worker_id: WorkerId) -> int:
        self._strikes[worker_id] = self._strikes.get(worker_id, 0) + 1
        return self._strikes[worker_id]

    def ban(self, worker_id: WorkerId, info: v1.WorkerInfo | None, reason: str) -> None:
        """Exclude a worker: no more shards, and it cannot register again."""
        keys = [f"id:{worker_id}"]
        if info is not None and info.chain_address:
            keys.append(f"address:{info.chain_address.lower()}")
        if info is not None and info.peer_key:
            keys.append(f"peer:{info.peer_key.hex()}")
        for key in keys:
            self._banned[key] = reason
        worker = self._workers.pop(worker_id, None)
        if worker is not None:
            self._retire(worker.channel)
        log.warning("worker %s excluded: %s", worker_id, reason)

    def banned_reason(self, info: v1.WorkerInfo) -> str | None:
        keys = [
            f"id:{info.worker_id}",
            f"address:{info.chain_address.lower()}",
            f"peer:{info.peer_key.hex()}",
        ]
        return next((self._banned[k] for k in keys if k in self._banned), None)

    async def add(self, info: v1.WorkerInfo) -> Worker:
        signatures = parse_worker_info(info)
        worker_id = WorkerId(info.worker_id)
        old = self._workers.pop(worker_id, None)
        if old is not None:
            self._retire(old.channel)
        ch = worker_channel(info)
        hw = info.hardware
        worker = Worker(
            info=info,
            signatures=signatures,
            channel=ch,
            stub=pb_grpc.GRPCInferenceServiceStub(ch),
            score=hardware_score(hw.cpu_count, hw.intra_op_threads, len(hw.gpus)),
            last_seen=self.clock(),
            rates=dict(old.rates) if old else {},
        )
        self._workers[worker_id] = worker
        log.info(
            "worker %s joined from %s with %d model(s)", worker_id, info.endpoint, len(signatures)
        )
        return worker

    def heartbeat(self, worker_id: str) -> bool:
        worker = self._workers.get(WorkerId(worker_id))
        if worker is None:
            return False
        worker.last_seen = self.clock()
        worker.suspect = False
        return True

    async def expire(self) -> list[WorkerId]:
        """Drop workers whose heartbeats stopped; return their ids."""
        now = self.clock()
        dead = [w for w in self._workers.values() if now - w.last_seen > self.ttl_s]
        for worker in dead:
            del self._workers[worker.id]
            self._retire(worker.channel)
            log.warning(
                "worker %s dropped: no heartbeat for %.1fs", worker.id, now - worker.last_seen
            )
        return [w.id for w in dead]

    async def remove(self, worker_id: WorkerId) -> None:
        worker = self._workers.pop(worker_id, None)
        if worker is not None:
            self._retire(worker.channel)

    async def close(self) -> None:
        for worker in self._workers.values():
            await worker.channel.close()
        self._workers.clear()
        for task in list(self._closing):
            task.cancel()

    def all(self) -> list[Worker]:
        return list(self._workers.values())

    def get(self, worker_id: WorkerId) -> Worker | None:
        return self._workers.get(worker_id)

    def is_live(self, worker: Worker) -> bool:
        return self._workers.get(worker.id) is worker and not worker.suspect

    def serving(self, sha256: str) -> list[Worker]:
        return [w for w in self._workers.values() if sha256 in w.signatures and not w.suspect]

    def resolve(self, name: str, version: str = "") -> ModelSignature:
        """The signature to run for a model name: the requested version (sha256), or the
        version most live workers hold."""
        holders: dict[str, list[Worker]] = {}
        for worker in self._workers.values():
            if worker.suspect:
                continue
            for sha, sig in worker.signatures.items():
                if sig.name == name:
                    holders.setdefault(sha, []).append(worker)
        if version:
            if version not in holders:
                raise ModelNotFound(f"no live worker serves model {name!r} version {version}")
            sha = version
        elif holders:
            sha = max(sorted(holders), key=lambda s: len(holders[s]))
        else:
            raise ModelNotFound(f"no live worker serves a model named {name!r}")
        return holders[sha][0].signatures[sha]

    def versions(self, name: str) -> list[str]:
        return sorted(
            {
                sha
                for w in self._workers.values()
                for sha, s in w.signatures.items()
                if s.name == name
            }
        )

    def rates_for(self, sha256: str, workers: list[Worker]) -> dict[WorkerId, float]:
        return effective_rates(
            {w.id: w.rates.get(sha256) for w in workers}, {w.id: w.score for w in workers}
        )

    def record_throughput(self, worker: Worker, sha256: str, rows: int, seconds: float) -> None:
        if rows > 0 and seconds > 0:
            worker.rates[sha256] = ewma(worker.rates.get(sha256), rows / seconds, self.ewma_alpha)

    def status(self) -> list[v1.WorkerStatus]:
        now = self.clock()
        return [
            v1.WorkerStatus(
                info=w.info,
                live=not w.suspect,
                seconds_since_heartbeat=now - w.last_seen,
                rows_per_second=w.rates,
                shards_done=w.shards_done,
                shards_failed=w.shards_failed,
                checks_passed=w.checks_passed,
                strikes=self._strikes.get(w.id, 0),
            )
            for w in self._workers.values()
        ]
