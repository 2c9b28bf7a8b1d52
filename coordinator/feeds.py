"""What the coordinator tells the outside world about its jobs and workers: each job's
progress to MQTT and the dashboard board (JobFeed, JobFeeds), and the JSON the dashboard
polls (dashboard_state)."""

from __future__ import annotations

import time

from shardnet.config import CoordinatorConfig
from shardnet.coordinator.payments import Payments
from shardnet.coordinator.registry import WorkerRegistry
from shardnet.events import EventBus, JobEvents
from shardnet.observe import JobBoard


class JobFeed:
    """One job's progress, told to MQTT (when a broker is configured) and the dashboard."""

    def __init__(self, job_id: str, mqtt: JobEvents | None, board: JobBoard, escrow: str | None):
        self.job_id = job_id
        self.mqtt = mqtt
        self.board = board
        self.escrow = escrow

    def accepted(self, model: str, rows: int, shards: int) -> None:
        self.board.accepted(self.job_id, model, rows, shards, escrow=self.escrow)
        if self.mqtt is not None:
            self.mqtt.accepted(model, rows, shards)

    def shard_dispatched(self, shard: int, rows: int, worker: str) -> None:
        if self.mqtt is not None:
            self.mqtt.shard_dispatched(shard, rows, worker)

    def shard_done(self, shard: int, worker: str, ms: float) -> None:
        self.board.shard_done(self.job_id, worker)
        if self.mqtt is not None:
            self.mqtt.shard_done(shard, worker, ms)

    def verdict(self, shard: int, loser: str | None, outcome: str) -> None:
        if self.mqtt is not None:
            self.mqtt.verdict(shard, loser, outcome)


class JobFeeds:
    """Each job's feed, kept until the job's story ends: completion for an unpaid job,
    settlement (or its failure) for a paid one."""

    def __init__(self, bus: EventBus | None, board: JobBoard | None = None) -> None:
        self.bus = bus
        self.board = board or JobBoard()
        self._feeds: dict[str, JobFeed] = {}

    def open(self, job_id: str, escrow: str | None = None) -> JobFeed:
        mqtt = JobEvents(self.bus, job_id) if self.bus is not None else None
        self._feeds[job_id] = feed = JobFeed(job_id, mqtt, self.board, escrow)
        return feed

    def _take(self, job_id: str, keep: bool) -> JobFeed | None:
        return self._feeds.get(job_id) if keep else self._feeds.pop(job_id, None)

    def completed(self, job_id: str, *, paid: bool, **fields) -> None:
        self.board.finished(job_id, "completed")
        feed = self._take(job_id, keep=paid)
        if feed is not None and feed.mqtt is not None:
            feed.mqtt.completed(**fields)

    def failed(self, job_id: str, reason: str, *, paid: bool = False) -> None:
        self.board.finished(job_id, "failed", error=reason)
        feed = self._take(job_id, keep=paid)
        if feed is not None and feed.mqtt is not None:
            feed.mqtt.failed(reason)

    def settled(self, job_id: str, tx_hash: str, charge: int) -> None:
        self.board.finished(job_id, "settled", tx_hash=tx_hash, charge_wei=str(charge))
        feed = self._take(job_id, keep=False)
        if feed is not None and feed.mqtt is not None:
            feed.mqtt.settled(tx_hash, charge)

    def settle_failed(self, job_id: str, reason: str) -> None:
        self.board.finished(job_id, "failed", error=f"settlement refused: {reason}")
        feed = self._take(job_id, keep=False)
        if feed is not None and feed.mqtt is not None:
            feed.mqtt.failed(f"settlement refused: {reason}")


def dashboard_state(
    *,
    address: str,
    config: CoordinatorConfig,
    registry: WorkerRegistry,
    payments: Payments,
    board: JobBoard,
    started: float,
) -> dict:
    """The JSON `/api/state` serves (the contract with dashboard/index.html)."""
    now = time.monotonic()
    workers = []
    for w in registry.all():
        hw = w.info.hardware
        workers.append(
            {
                "id": w.id,
                "endpoint": w.info.endpoint,
                "live": not w.suspect,
                "cpu_model": hw.cpu_model,
                "cpu_count": hw.cpu_count,
                "memory_bytes": hw.memory_bytes,
                "providers": list(hw.execution_providers),
                "gpus": [{"name": g.name, "memory_bytes": g.memory_bytes} for g in hw.gpus],
                "rows_per_second": max(w.rates.values(), default=None),
                "shards_done": w.shards_done,
                "shards_failed": w.shards_failed,
                "checks_passed": w.checks_passed,
                "strikes": registry.strikes(w.id),
                "chain_address": w.info.chain_address or None,
                "stake_wei": str(w.stake_wei) if w.stake_wei is not None else None,
                "seconds_since_heartbeat": round(now - w.last_seen, 2),
            }
        )
    ledger = payments.ledger
    verdicts = (
        []
        if ledger is None
        else [
            {
                k: v[k]
                for k in (
                    "id",
                    "job_id",
                    "shard",
                    "outcome",
                    "loser",
                    "referee",
                    "reason",
                    "slash_status",
                    "slash_tx",
                )
            }
            for v in reversed(ledger.verdicts()[-50:])
        ]
    )
    settlements = (
        []
        if ledger is None or payments.chain is None
        else [
            {
                "job_id": r.job_id,
                "escrow": r.escrow_job_id,
                "status": r.status,
                "tx_hash": r.tx_hash,
                "charge_wei": str(r.charge_wei),
                "coordinator_fee_wei": str(r.coordinator_fee),
                "payments": [
                    {"worker": w, "amount_wei": str(a)}
                    for w, a in zip(r.workers, r.amounts, strict=True)
                ],
            }
            for r in ledger.recent_settlements(50)
        ]
    )
    return {
        "coordinator": {
            "address": address,
            "chain_address": payments.chain.address if payments.chain else None,
            "payment_policy": config.payment_policy,
            "spot_check_p": config.spot_check_p,
            "uptime_s": round(now - started, 1),
        },
        "workers": workers,
        "jobs": board.jobs(),
        "verdicts": verdicts,
        "payments": settlements,
    }
