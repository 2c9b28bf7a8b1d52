"""The coordinator's two services: the Open Inference Protocol for clients and shardnet.v1
Coordinator for workers; and running them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

import shardnet
from shardnet.chain import Chain, ChainError, Deployment
from shardnet.config import ConfigError, CoordinatorConfig
from shardnet.coordinator.batching import DynamicBatcher
from shardnet.coordinator.discovery import run_discovery
from shardnet.coordinator.feeds import JobFeeds, dashboard_state
from shardnet.coordinator.jobs import Job, JobResult, JobRunner
from shardnet.coordinator.jobstore import JobStore
from shardnet.coordinator.ledger import Ledger
from shardnet.coordinator.metrics import register_collector
from shardnet.coordinator.payments import (
    EscrowRejected,
    Payments,
    PaymentTerms,
    parse_escrow_id,
)
from shardnet.coordinator.registry import WorkerRegistry, parse_worker_info, worker_channel
from shardnet.coordinator.verify import Verifier
from shardnet.errors import (
    DeadlineExceeded,
    Excluded,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    ShardnetError,
    Unavailable,
)
from shardnet.events import EventBus, EventsUnavailable, parse_broker
from shardnet.identity import (
    IdentityError,
    heartbeat_text,
    open_identity,
    recover_text_signer,
    verify_peer_signature,
    worker_claim,
)
from shardnet.node.models import ModelRepository, session_options
from shardnet.observe import JobBoard, health_servicer, set_serving, start_http
from shardnet.p2p.node import P2PNode
from shardnet.protocol import (
    ESCROW_PARAM,
    JOB_ID_PARAM,
    RECEIPTS_PARAM,
    REQUEST_KEY_PARAM,
    SHARDS_PARAM,
    VERDICTS_PARAM,
)
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.protocol import shardnet_v1_pb2_grpc as v1_grpc
from shardnet.protocol.tensors import decode_request_inputs, param_value, set_param, to_raw
from shardnet.receipts import Domain, job_key, tensors_digest
from shardnet.rpc import announce_ready, bind, create_server, split_host_port, translate_errors
from shardnet.sharding import WorkerId
from shardnet.signature import select_outputs, validate_inputs
from shardnet.stats import ModelStats
from shardnet.tls import fingerprint
from shardnet.verification import parse_tolerances
from shardnet.wallet import fund_from_dev_account
from shardnet.watch import watch

log = logging.getLogger(__name__)

WORKER_STATUS_TOPICS = "shardnet/v1/workers/+/status"


def inputs_digest(model_sha256: str, names, arrays) -> str:
    """What a repeated request must match: model, requested outputs and inputs."""
    tensors = []
    for name, array in arrays.items():
        datatype, raw = to_raw(array)
        tensors.append((name, datatype, list(array.shape), raw))
    head = f"{model_sha256}|{','.join(names)}".encode()
    return hashlib.sha256(head + tensors_digest(tensors)).hexdigest()


def result_parts(result: JobResult) -> dict:
    """What a response carries besides the outputs (also stored for retried requests)."""
    return {
        "job_id": result.job_id,
        "escrow_id": result.escrow_id,
        "shards": [s.summary() for s in result.shards],
        "verdicts": result.verdicts,
        "receipts": [json.loads(s.receipt.to_json()) for s in result.shards if s.receipt],
    }


def _reason(exc: BaseException, deadline: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"deadline of {deadline:.1f}s exceeded"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled by the client"
    return str(exc) or type(exc).__name__


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        registry: WorkerRegistry,
        config: CoordinatorConfig,
        payments: Payments,
        verifier: Verifier,
        feeds: JobFeeds | None = None,
        store: JobStore | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.payments = payments
        assert payments.ledger is not None
        self.store = store or JobStore(payments.ledger, None)
        self.feeds = feeds or JobFeeds(None)
        self.batcher = None
        if config.max_queue_delay_ms > 0:
            self.batcher = DynamicBatcher(
                self._run_merged,
                max_delay_s=config.max_queue_delay_ms / 1000,
                max_rows=config.max_batch_rows,
            )
        self.runner = JobRunner(registry, config, verifier)
        self.stats = ModelStats("coordinator")
        self.active_jobs = 0

    @translate_errors
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @translate_errors
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=any(True for w in self.registry.all() if not w.suspect))

    @translate_errors
    async def ModelReady(self, request, context):
        try:
            self.registry.resolve(request.name, request.version)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @translate_errors
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="shardnet-coordinator", version=shardnet.__version__)

    @translate_errors
    async def ModelMetadata(self, request, context):
        metadata = self.registry.resolve(request.name, request.version).to_metadata()
        del metadata.versions[:]
        metadata.versions.extend(self.registry.versions(request.name))
        return metadata

    @translate_errors
    async def ModelStatistics(self, request, context):
        return self.stats.to_proto(request.name, request.version)

    @translate_errors
    async def ModelInfer(self, request, context):
        started = time.perf_counter_ns()
        escrow_text = request_key = None
        for key, value in request.parameters.items():
            if key == ESCROW_PARAM:
                escrow_text = str(param_value(value))
            elif key == REQUEST_KEY_PARAM:
                request_key = "key:" + str(param_value(value))[:200]
            elif key.startswith("shardnet."):
                raise InvalidRequest(f"unknown request parameter {key!r}")
        repeat = await self._repeat(request, escrow_text, request_key, context)
        if repeat is not None:
            return repeat
        sig = self.registry.resolve(request.model_name, request.model_version)
        arrays = decode_request_inputs(request)
        rows = validate_inputs(sig, arrays)
        names = select_outputs(sig, [o.name for o in request.outputs])
        remaining = context.time_remaining()
        deadline = (
            self.config.job_timeout_s
            if remaining is None
            else min(remaining, self.config.job_timeout_s)
        )
        try:
            if (
                self.batcher is not None
                and escrow_text is None
                and request_key is None
                and rows is not None
                and (rows < self.config.max_batch_rows)
            ):
                # Small unpaid requests ride together in one job (dynamic batching).
                key = (sig.sha256, tuple(names), tuple(arrays))
                outputs, parts = await self.batcher.submit(
                    key, arrays, rows, (sig, names, deadline)
                )
            else:
                outputs, parts = await self._run_job(
                    sig, arrays, names, rows, escrow_text, deadline, request_key
                )
        except BaseException:
            self.stats.record(
                sig.name, sig.sha256, ok=False, duration_ns=time.perf_counter_ns() - started
            )
            raise
        self.stats.record(
            sig.name,
            sig.sha256,
            ok=True,
            rows=rows or 1,
            duration_ns=time.perf_counter_ns() - started,
        )
        return self._response(request, sig, outputs, parts)

    async def _repeat(self, request, escrow_text, request_key, context):
        """A request this coordinator has a durable job for (a client retrying, maybe
        across a restart) is answered from that job, even before its workers are back."""
        key = request_key
        if escrow_text is not None:
            key = "0x" + parse_escrow_id(escrow_text).hex()
        if key is None or not self.store.enabled:
            return None
        row = self.store.ledger.job_by_key(key)
        if row is None:
            return None
        names = [o.name for o in request.outputs] or json.loads(row["output_names"])
        digest = inputs_digest(row["model_sha256"], names, decode_request_inputs(request))
        remaining = context.time_remaining()
        deadline = self.config.job_timeout_s if remaining is None else remaining
        outputs, parts = await self._stored(key, digest, deadline)
        sig = SimpleNamespace(name=row["model_name"], sha256=row["model_sha256"])
        return self._response(request, sig, outputs, parts)

    async def _run_merged(self, context, inputs, rows: int):
        """Run a dynamic batch as one unpaid job (the batcher splits the outputs back)."""
        sig, names, deadline = context
        return await self._run_job(sig, inputs, names, rows, None, deadline)

    async def _run_job(
        self,
        sig,
        arrays,
        names,
        rows: int | None,
        escrow_text: str | None,
        deadline: float,
        request_key: str | None = None,
    ) -> tuple[list, dict]:
        """Answer one job: from the store when this request (same escrow or request key)
        was seen before, else admit it (reserving the escrow), run it within `deadline`,
        and record what it owes. Returns (outputs, response parts)."""
        key = request_key
        if escrow_text is not None:
            key = "0x" + parse_escrow_id(escrow_text).hex()
        durable = key is not None and self.store.enabled
        digest = ""
        if durable:
            digest = inputs_digest(sig.sha256, names, arrays)
            stored = await self._stored(key, digest, deadline)
            if stored is not None:
                return stored
        if self.active_jobs >= self.config.max_jobs:
            raise Overloaded(
                f"coordinator is running {self.active_jobs} jobs, its limit; retry later"
            )
        job_id = uuid.uuid4().hex
        escrow_id = await self.payments.admit(escrow_text, rows or 1, job_id)
        if durable:
            inputs_path = await self.store.save_inputs(job_id, arrays)
            self.store.ledger.add_job(
                job_id=job_id,
                request_key=key,
                escrow_id=escrow_id,
                model_name=sig.name,
                model_sha256=sig.sha256,
                output_names=list(names),
                rows=rows,
                inputs_path=inputs_path,
                inputs_digest=digest,
            )
        return await self._execute(
            job_id, sig, arrays, names, rows, escrow_id, key if durable else None, deadline
        )

    async def _execute(
        self,
        job_id: str,
        sig,
        arrays,
        names,
        rows,
        escrow_id: str | None,
        key: str | None,
        deadline: float,
    ) -> tuple[list, dict]:
        """Run an admitted job; record payouts, store its answer (durable jobs), tell the
        feeds. Shared by new requests and jobs resumed after a restart."""
        started = time.perf_counter_ns()
        waiter = asyncio.get_running_loop().create_future() if key else None
        if key:
            self.store.running[key] = waiter
        self.active_jobs += 1
        try:
            job = Job(
                job_id,
                sig,
                arrays,
                names,
                rows,
                escrow_id=escrow_id,
                events=self.feeds.open(job_id, escrow_id),
                # On a chain, workers sign a receipt for every shard.
                receipt_job=job_key(escrow_id, job_id) if self.payments.enabled else b"",
            )
            async with asyncio.timeout(deadline):
                result = await self.runner.run(job)
        except BaseException as exc:
            reason = _reason(exc, deadline)
            self.feeds.failed(job_id, reason, paid=escrow_id is not None)
            if escrow_id is not None:
                self.payments.record(escrow_id, rows or 1, {}, [])  # owes nothing: refund now
            if key:
                self.store.ledger.job_done(job_id, status="failed", error=reason)
                self.store.running.pop(key, None)
                waiter.set_exception(Unavailable(f"job {job_id} failed: {reason}"))
                waiter.exception()  # retrieved: nobody may be waiting
            if isinstance(exc, TimeoutError):
                raise DeadlineExceeded(
                    f"job {job_id} did not finish within {deadline:.1f}s"
                ) from None
            raise
        finally:
            self.active_jobs -= 1
        if escrow_id is not None:
            rows_by_address: dict[str, int] = {}
            for shard in result.shards:
                if not shard.address:
                    continue  # rows the coordinator's referee computed itself
                rows_by_address[shard.address] = rows_by_address.get(shard.address, 0) + (
                    shard.spec.rows if rows else 1
                )
            self.payments.record(
                escrow_id, rows or 1, rows_by_address, [s.raws for s in result.shards]
            )
        parts = result_parts(result)
        if key:
            outputs_path = await self.store.save_outputs(job_id, result.outputs)
            self.store.ledger.job_done(
                job_id, status="completed", outputs_path=outputs_path, result=json.dumps(parts)
            )
            self.store.running.pop(key, None)
            waiter.set_result((result.outputs, parts))
        self.feeds.completed(
            job_id,
            paid=escrow_id is not None,
            rows=rows or 1,
            shards=len(result.shards),
            workers=sorted({s.worker for s in result.shards}),
        )
        log.info(
            "job %s: %s rows of %s in %d shard(s) on %d worker(s), %.1f ms",
            job_id,
            rows,
            sig.name,
            len(result.shards),
            len({s.worker for s in result.shards}),
            (time.perf_counter_ns() - started) / 1e6,
        )
        return result.outputs, parts

    async def _stored(self, key: str, digest: str, deadline: float) -> tuple[list, dict] | None:
        """The answer to a request seen before: stored, or awaited while it runs. The same
        escrow (or key) with other inputs is refused: it paid for something else."""
        row = self.store.ledger.job_by_key(key)
        if row is None:
            return None
        if row["inputs_digest"] != digest:
            raise EscrowRejected(
                f"{key} already paid for job {row['job_id']} with other inputs; open a new one"
            )
        try:
            async with asyncio.timeout(deadline):
                while row["status"] == "running":
                    waiter = self.store.running.get(key)
                    if waiter is not None:
                        return await asyncio.shield(waiter)
                    await asyncio.sleep(0.2)  # resumed at start-up; not registered yet
                    row = self.store.ledger.job_by_key(key)
        except TimeoutError:
            raise DeadlineExceeded(f"job {row['job_id']} is still running; ask again") from None
        if row["status"] == "failed":
            raise EscrowRejected(f"job {row['job_id']} for this request failed: {row['error']}")
        return self.store.load_outputs(row["outputs_path"]), json.loads(row["result"])

    async def resume_interrupted(self) -> None:
        """At start-up: run again every durable job a crash left `running`, and refund
        escrows reserved for jobs that never got as far as the ledger."""
        if self.store.enabled:
            jobs = self.store.ledger.jobs_with_status("running")
            known = {r["escrow_id"] for r in jobs}
            for row in self.payments.ledger.with_status("running") if self.payments.chain else []:
                if row.escrow_job_id not in known:
                    self.payments.record(row.escrow_job_id, 1, {}, [])
            async with asyncio.TaskGroup() as tg:
                for row in jobs:
                    tg.create_task(self._resume(row), name=f"coordinator.resume[{row['job_id']}]")

    async def _resume(self, row: dict) -> None:
        log.warning("resuming job %s interrupted by a restart", row["job_id"])
        deadline = time.monotonic() + self.config.job_timeout_s
        sig = None
        while sig is None:  # wait for workers serving the model to (re)join
            try:
                sig = self.registry.resolve(row["model_name"], row["model_sha256"])
            except ModelNotFound:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        if sig is None:
            self.store.ledger.job_done(
                row["job_id"], status="failed", error="no worker serves the model after the restart"
            )
            if row["escrow_id"]:
                self.payments.record(row["escrow_id"], 1, {}, [])
            return
        arrays = self.store.load_inputs(row["inputs_path"])
        try:
            await self._execute(
                row["job_id"],
                sig,
                arrays,
                json.loads(row["output_names"]),
                row["rows"],
                row["escrow_id"],
                row["request_key"],
                self.config.job_timeout_s,
            )
        except ShardnetError as exc:
            log.error("resumed job %s failed: %s", row["job_id"], exc)

    def _response(self, request, sig, outputs, parts: dict) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(
            model_name=sig.name, model_version=sig.sha256, id=request.id
        )
        for name, datatype, shape, raw in outputs:
            response.outputs.add(name=name, datatype=datatype, shape=shape)
            response.raw_output_contents.append(raw)
        set_param(response.parameters, JOB_ID_PARAM, parts["job_id"])
        if parts["escrow_id"] is not None:
            set_param(response.parameters, ESCROW_PARAM, parts["escrow_id"])
        set_param(response.parameters, SHARDS_PARAM, json.dumps(parts["shards"]))
        if parts["verdicts"]:
            set_param(response.parameters, VERDICTS_PARAM, json.dumps(parts["verdicts"]))
        if parts["receipts"]:
            set_param(response.parameters, RECEIPTS_PARAM, json.dumps(parts["receipts"]))
        return response


class CoordinatorServicer(v1_grpc.CoordinatorServicer):
    def __init__(
        self, registry: WorkerRegistry, config: CoordinatorConfig, payments: Payments
    ) -> None:
        self.registry = registry
        self.config = config
        self.payments = payments

    @translate_errors
    async def Register(self, request, context):
        await self.admit(request.worker)
        return v1.RegisterResponse(
            heartbeat_interval_s=self.config.heartbeat_interval_s, ttl_s=self.config.worker_ttl_s
        )

    async def admit(self, info: v1.WorkerInfo, *, discovered: bool = False) -> None:
        """Add a worker to the table if it may take shards: well-formed, not excluded,
        TLS (unless plaintext is allowed), staked and bound to its key on a chain, and
        answering on its endpoint. A discovered worker's signed ad already proves its peer
        key; a registering one signs a claim with its address key instead."""
        parse_worker_info(info)  # reject a malformed registration before dialing anyone
        reason = self.registry.banned_reason(info)
        if reason is not None:
            raise Excluded(f"this worker is excluded from the network: {reason}")
        if not info.tls_certificate and not self.config.allow_plaintext_workers:
            raise EscrowRejected(
                "this worker serves plaintext gRPC; drop --plaintext, or start the "
                "coordinator with --allow-plaintext-workers (local debugging only)"
            )
        if not discovered:
            self._check_peer_signature(info)
        if self.payments.enabled:
            if discovered:
                await self.payments.check_worker(info.chain_address, info.peer_key)
            else:
                await self._check_paid_identity(info)
        await self._check_reachable(info)
        await self.registry.add(info)

    def _check_peer_signature(self, info: v1.WorkerInfo) -> None:
        """A registration must be signed by its peer key; a worker id already in the table
        can only be taken again by the same key (a restart), not by someone else."""
        claim = worker_claim(
            info.worker_id,
            info.endpoint,
            info.chain_address,
            info.peer_key,
            fingerprint(info.tls_certificate) if info.tls_certificate else "none",
        )
        if len(info.peer_key) != 32 or not verify_peer_signature(
            info.peer_key, claim, info.peer_signature
        ):
            raise InvalidRequest("the registration is not signed by its peer_key")
        current = self.registry.get(WorkerId(info.worker_id))
        if current is not None and current.info.peer_key != info.peer_key:
            raise EscrowRejected(
                f"worker id {info.worker_id!r} belongs to another peer; choose another name"
            )

    async def _check_paid_identity(self, info: v1.WorkerInfo) -> None:
        """Only a staked worker that proves it holds its address's key may take shards."""
        if not info.chain_address or len(info.peer_key) != 32:
            raise EscrowRejected(
                "this coordinator pays workers on chain: "
                "start the worker with --chain and --key-dir"
            )
        claim = worker_claim(
            info.worker_id,
            info.endpoint,
            info.chain_address,
            info.peer_key,
            fingerprint(info.tls_certificate) if info.tls_certificate else "none",
        )
        try:
            signer = recover_text_signer(claim, info.address_proof)
        except IdentityError as exc:
            raise InvalidRequest(f"address_proof: {exc}") from None
        if signer.lower() != info.chain_address.lower():
            raise InvalidRequest(f"address_proof is not signed by {info.chain_address}")
        await self.payments.check_worker(info.chain_address, info.peer_key)

    async def _check_reachable(self, info: v1.WorkerInfo) -> None:
        endpoint = info.endpoint
        async with worker_channel(info) as ch:
            try:
                reply = await pb_grpc.GRPCInferenceServiceStub(ch).ServerReady(
                    pb.ServerReadyRequest(), timeout=3.0
                )
            except grpc.aio.AioRpcError as exc:
                raise Unavailable(
                    f"the coordinator cannot reach your endpoint {endpoint}: {exc.code().name}"
                ) from None
        if not reply.ready:
            raise Unavailable(f"worker at {endpoint} says it is not ready")

    @translate_errors
    async def Heartbeat(self, request, context):
        worker = self.registry.get(WorkerId(request.worker_id))
        if worker is None:
            return v1.HeartbeatResponse(known=False)
        text = heartbeat_text(request.worker_id, request.timestamp)
        if request.timestamp <= worker.last_heartbeat_ts or not verify_peer_signature(
            worker.info.peer_key, text, request.signature
        ):
            raise InvalidRequest("heartbeat not signed by this worker's peer key, or replayed")
        worker.last_heartbeat_ts = request.timestamp
        return v1.HeartbeatResponse(known=self.registry.heartbeat(request.worker_id))

    @translate_errors
    async def ListWorkers(self, request, context):
        return v1.ListWorkersResponse(workers=self.registry.status())

    @translate_errors
    async def Quote(self, request, context):
        self.registry.resolve(request.model_name, request.model_version)
        return self.payments.quote(max(1, request.rows))

    @translate_errors
    async def GetSettlement(self, request, context):
        return self.payments.settlement(request.escrow_job_id)

    @translate_errors
    async def ListVerdicts(self, request, context):
        assert self.payments.ledger is not None
        rows = self.payments.ledger.verdicts(job_id=request.job_id or None)
        return v1.ListVerdictsResponse(
            verdicts=[
                v1.Verdict(
                    id=r["id"],
                    job_id=r["job_id"],
                    shard=r["shard"],
                    outcome=r["outcome"],
                    primary_worker=r["primary_worker"],
                    checker_worker=r["checker_worker"],
                    referee=r["referee"],
                    loser=r["loser"] or "",
                    reason=r["reason"],
                    offending_receipt=r["offending"] or "",
                    witness_receipt=r["witness"] or "",
                    slash_status=r["slash_status"],
                    slash_tx=r["slash_tx"] or "",
                    slash_error=r["slash_error"] or "",
                )
                for r in rows
            ]
        )


async def _expire_loop(registry: WorkerRegistry, period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        await registry.expire()


def _incarnation(info: v1.WorkerInfo) -> str:
    """What tells one run of a worker from another: its fresh TLS certificate."""
    return fingerprint(info.tls_certificate) if info.tls_certificate else info.endpoint


async def _watch_worker_status(registry: WorkerRegistry, broker: tuple[str, int]) -> None:
    """Stop routing to a worker the moment MQTT says it went offline (its Last Will, or a
    clean shutdown). The gRPC heartbeat TTL still catches what MQTT misses (a frozen
    process, or no broker at all)."""
    backoff = 0.5
    while True:
        try:
            async for event in watch(*broker, topics=[WORKER_STATUS_TOPICS]):
                backoff = 0.5
                if event.kind != "worker_status" or event.data.get("state") != "offline":
                    continue
                worker = registry.get(WorkerId(event.subject))
                if worker is not None and event.data.get("incarnation") == _incarnation(
                    worker.info
                ):
                    log.warning(
                        "worker %s is offline (%s): no more shards",
                        worker.id,
                        event.data.get("cause", "will"),
                    )
                    await registry.remove(worker.id)
        except EventsUnavailable as exc:
            log.debug("worker status feed unavailable: %s", exc)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


async def _stake_watch_loop(registry: WorkerRegistry, payments: Payments, period_s: float):
    """Drop workers whose stake went away (unbonded, slashed below the minimum), and keep
    each worker's current stake for the dashboard."""
    first = True
    while True:
        await asyncio.sleep(1.0 if first else period_s)
        first = False
        for worker in registry.all():
            try:
                await payments.check_worker(worker.info.chain_address, worker.info.peer_key)
                assert payments.chain is not None
                worker.stake_wei = await payments.chain.stake_of(worker.info.chain_address)
            except EscrowRejected as exc:
                log.warning("dropping worker %s: %s", worker.id, exc)
                await registry.remove(worker.id)
            except ShardnetError as exc:  # chain unreachable: keep the table as it is
                log.warning("cannot re-check stakes: %s", exc)
                break


async def open_payments(config: CoordinatorConfig) -> Payments:
    terms = PaymentTerms(
        policy=config.payment_policy,
        price_per_row_wei=config.price_per_row_wei,
        fee_bps=config.fee_bps,
        min_deadline_s=config.min_deadline_s,
        settle_retry_s=config.settle_retry_s,
    )
    if config.chain is None:
        return Payments(None, Ledger(config.ledger), terms)
    if config.key_dir is None:
        raise ChainError("--chain needs --key-dir: the coordinator signs settlements")
    if config.ledger is None:
        raise ChainError("--chain needs --ledger: settlements must survive a restart")
    identity = open_identity(config.key_dir, config.passphrase_file, create=config.generate_keys)
    deployment = Deployment.load(config.chain)
    if config.faucet_wei:
        await fund_from_dev_account(deployment, identity.address, config.faucet_wei)
    chain = await Chain.connect(deployment, identity.account.key)
    payments = Payments(chain, Ledger(config.ledger), terms)
    payments.identity = identity
    return payments


def make_verifier(
    config: CoordinatorConfig, registry: WorkerRegistry, payments: Payments
) -> Verifier:
    try:
        tolerances = parse_tolerances(config.tolerance)
    except ValueError as exc:
        raise ConfigError(f"--tolerance: {exc}") from None
    referee = None
    if config.referee_models_dir is not None:
        referee = ModelRepository.load_dir(
            config.referee_models_dir, session_options(0, "all"), ["CPUExecutionProvider"]
        )
    domain = None
    if payments.chain is not None:
        deployment = payments.chain.deployment
        domain = Domain(deployment.chain_id, deployment.escrow)
    seed = bytes.fromhex(config.spot_check_seed) if config.spot_check_seed else os.urandom(32)
    assert payments.ledger is not None
    return Verifier(
        p=config.spot_check_p,
        seed=seed,
        tolerances=tolerances,
        registry=registry,
        ledger=payments.ledger,
        max_strikes=config.max_strikes,
        domain=domain,
        referee=referee,
        on_slash_queued=payments.wake,
    )


async def run_coordinator(config: CoordinatorConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down gracefully."""
    payments = await open_payments(config)
    registry = WorkerRegistry(ttl_s=config.worker_ttl_s, ewma_alpha=config.ewma_alpha)
    verifier = make_verifier(config, registry, payments)
    assert payments.ledger is not None
    collector = register_collector(registry, payments.ledger)
    broker = parse_broker(config.mqtt)
    bus = None
    if broker is not None:
        bus = EventBus(*broker, f"shardnet-coordinator-{os.getpid()}-{secrets.token_hex(3)}")
        await bus.start()
    feeds = JobFeeds(bus, JobBoard())
    payments.on_settled = feeds.settled
    payments.on_settle_failed = feeds.settle_failed
    # Durable jobs need a ledger file; their inputs and outputs go in a folder beside it.
    spool = Path(f"{config.ledger}.spool") if config.ledger is not None else None
    store = JobStore(payments.ledger, spool)
    inference = InferenceServicer(registry, config, payments, verifier, feeds, store)
    server = create_server(int(config.max_request_mb * 2**20))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
    coordinator_servicer = CoordinatorServicer(registry, config, payments)
    v1_grpc.add_CoordinatorServicer_to_server(coordinator_servicer, server)
    health = health_servicer(server)
    port = bind(server, config.host, config.port)
    await server.start()
    address = f"{config.host}:{port}"
    log.info(
        "coordinator serving on %s%s",
        address,
        f", paid at {payments.chain.address}" if payments.chain else " (no chain)",
    )
    node = None
    if config.p2p_listen:
        key = payments.identity.ed25519 if payments.identity else Ed25519PrivateKey.generate()
        p2p_host, p2p_port = split_host_port(config.p2p_listen)
        node = await P2PNode.start(
            key, listen_host=p2p_host, listen_port=p2p_port, bootstrap=config.bootstrap
        )
        log.info("discovery on libp2p: %s", " ".join(node.listen_addrs))
    await set_serving(health, True)
    http = None
    http_address = None
    if config.http_listen:
        started = time.monotonic()
        http, http_address = await start_http(
            config.http_listen,
            state=lambda: dashboard_state(
                address=address,
                config=config,
                registry=registry,
                payments=payments,
                board=feeds.board,
                started=started,
            ),
        )
        log.info("dashboard at http://%s/ (metrics at /metrics)", http_address)
    announce_ready(
        config.ready_file,
        address=address,
        p2p_addrs=node.listen_addrs if node else [],
        http_address=http_address,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            loops = [
                tg.create_task(
                    _expire_loop(registry, config.worker_ttl_s / 4), name="coordinator.expire"
                )
            ]
            tg.create_task(inference.resume_interrupted(), name="coordinator.resume")
            if node is not None:
                loops.append(
                    tg.create_task(
                        run_discovery(
                            node,
                            registry,
                            lambda info: coordinator_servicer.admit(info, discovered=True),
                        ),
                        name="coordinator.discovery",
                    )
                )
            if broker is not None:
                loops.append(
                    tg.create_task(
                        _watch_worker_status(registry, broker), name="coordinator.worker_status"
                    )
                )
            if payments.enabled:
                loops.append(tg.create_task(payments.run_settler(), name="coordinator.settle"))
                loops.append(
                    tg.create_task(
                        _stake_watch_loop(registry, payments, config.stake_check_s),
                        name="coordinator.stake_watch",
                    )
                )
            await stop.wait()
            for loop in loops:
                loop.cancel()
    finally:
        await set_serving(health, False)
        if http is not None:
            await http.cleanup()
        REGISTRY.unregister(collector)
        await server.stop(grace=2.0)
        await registry.close()
        await payments.close()
        if bus is not None:
            await bus.close()
        if node is not None:
            await node.close()
