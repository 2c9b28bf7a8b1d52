"""Running one job: plan shards, send them to workers (several in flight per worker),
re-send failed or straggling shards elsewhere, spot-check a secret sample of shards on
other workers, and reassemble the outputs in row order.

The planning, sampling and verdicts are pure (shardnet.sharding, shardnet.verification);
this module is the I/O around them. The consequences of a verdict (strikes, exclusion,
slashing evidence) belong to coordinator.verify.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from shardnet.config import CoordinatorConfig
from shardnet.coordinator.metrics import SHARDS
from shardnet.coordinator.registry import Worker, WorkerRegistry
from shardnet.coordinator.verify import Verifier
from shardnet.errors import InvalidRequest, ShardnetError, Unavailable
from shardnet.events import JobEvents
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol.tensors import decode_raw, param_value, set_param, to_raw
from shardnet.receipts import (
    RECEIPT_JOB_PARAM,
    RECEIPT_PARAM,
    SHARD_ID_PARAM,
    SignedReceipt,
    tensors_digest,
)
from shardnet.sharding import ShardSpec, WorkerId, plan_shards, shard_timeout
from shardnet.signature import ModelSignature
from shardnet.verification import Tensor

log = logging.getLogger(__name__)
_random = secrets.SystemRandom()

COORDINATOR = WorkerId("coordinator")  # rows the coordinator's own referee computed


@dataclass(frozen=True)
class Job:
    job_id: str
    signature: ModelSignature
    inputs: dict[str, np.ndarray]
    output_names: list[str]
    rows: int | None  # None: the model has no batch dimension; the request is one shard
    receipt_job: bytes = b""  # the bytes32 receipts name (escrow job, or hash of job_id)
    escrow_id: str | None = None  # 0x hex of the escrow paying for the job
    events: JobEvents | None = None  # where the job's progress is published (MQTT)


@dataclass
class ShardOutcome:
    """One worker's accepted answer for one shard."""

    spec: ShardSpec
    worker: WorkerId
    address: str  # the worker's chain address ("" without a chain)
    attempts: int
    seconds: float
    finished: float  # time.monotonic() at completion
    tensors: list[Tensor] = field(repr=False)
    receipt: SignedReceipt | None = field(default=None, repr=False)
    checked: bool = False

    @property
    def raws(self) -> list[bytes]:
        return [t[3] for t in self.tensors]

    def summary(self) -> dict:
        return {
            "shard": self.spec.index,
            "rows": [self.spec.start, self.spec.stop],
            "worker": self.worker,
            "attempts": self.attempts,
            "ms": round(self.seconds * 1000, 2),
            "checked": self.checked,
        }


@dataclass(frozen=True)
class JobResult:
    outputs: list[tuple[str, str, list[int], bytes]]  # name, datatype, shape, raw
    shards: list[ShardOutcome]
    verdicts: list[dict]
    job_id: str = ""
    escrow_id: str | None = None


class ShardFailed(Exception):
    """One attempt at a shard failed in a way another worker may not repeat."""


# Worker errors that are about the request itself: every worker would answer the same.
_CLIENT_FAULT = {grpc.StatusCode.INVALID_ARGUMENT}


@dataclass
class _JobState:
    """What one job learned while running: who cheated in it, what was decided."""

    cheaters: set[WorkerId] = field(default_factory=set)
    verdicts: list[dict] = field(default_factory=list)


class JobRunner:
    def __init__(
        self, registry: WorkerRegistry, config: CoordinatorConfig, verifier: Verifier
    ) -> None:
        self.registry = registry
        self.config = config
        self.verifier = verifier

    async def run(self, job: Job) -> JobResult:
        sha = job.signature.sha256
        workers = self.registry.serving(sha)
        if not workers:
            raise Unavailable(f"no live worker serves model {job.signature.name!r} now")
        rates = self.registry.rates_for(sha, workers)
        plan = plan_shards(
            job.rows or 1,
            rates,
            shards_per_worker=self.config.shards_per_worker if job.rows else 1,
            min_shard_rows=self.config.min_shard_rows if job.rows else 1,
        )
        state = _JobState()
        if job.events is not None:
            job.events.accepted(job.signature.name, job.rows or 1, len(plan))
        started = time.monotonic()
        outcomes = await self._gather(
            [
                self._run_shard(
                    job, spec, state, self.verifier.should_check(job.job_id, spec.index)
                )
                for spec in plan
            ]
        )
        # A worker caught cheating in this job: nothing it answered here is trusted. Its
        # unchecked shards are computed again by others (who are then paid for them).
        while tainted := [i for i, o in enumerate(outcomes) if o.worker in state.cheaters]:
            redone = await self._gather(
                [
                    self._run_shard(
                        job, outcomes[i].spec, state, check=False, avoid=set(state.cheaters)
                    )
                    for i in tainted
                ]
            )
            for i, outcome in zip(tainted, redone, strict=True):
                outcomes[i] = outcome
        self._record_throughput(sha, outcomes, started)
        return JobResult(
            self._reassemble(job, outcomes), outcomes, state.verdicts, job.job_id, job.escrow_id
        )

    async def _gather(self, coros) -> list:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(c) for c in coros]
        except ExceptionGroup as group:
            # Report the first deliberate error (e.g. the input is invalid) as the job's error.
            first = next((e for e in _leaves(group) if isinstance(e, ShardnetError)), None)
            if first is not None:
                raise first from None
            raise
        return [t.result() for t in tasks]

    # --- one shard, maybe checked ------------------------------------------------------

    async def _run_shard(
        self,
        job: Job,
        spec: ShardSpec,
        state: _JobState,
        check: bool,
        avoid: set[WorkerId] | None = None,
    ) -> ShardOutcome:
        avoid = set(avoid or ())
        if not check:
            return await self._attempts(job, spec, first=spec.worker, avoid=avoid)
        # The re-execution goes out at the same time as the primary, to a different worker,
        # in a request that looks like any other shard.
        async with asyncio.TaskGroup() as tg:
            primary_task = tg.create_task(self._attempts(job, spec, first=spec.worker, avoid=avoid))
            checker_task = tg.create_task(
                self._attempts(
                    job,
                    spec,
                    first=None,
                    avoid=avoid | {spec.worker},
                    optional=True,
                    attempts=2,
                )
            )
        primary, checker = primary_task.result(), checker_task.result()
        if checker is not None and checker.worker == primary.worker:  # the primary moved there
            checker = await self._attempts(
                job, spec, first=None, optional=True, attempts=2, avoid=avoid | {primary.worker}
            )
        if checker is None:
            self.verifier.unchecked(job, spec)
            return primary
        primary.checked = True
        if self.verifier.agree(primary.tensors, checker.tensors):
            self.verifier.passed(primary.worker, checker.worker)
            return primary
        return await self._dispute(job, spec, state, primary, checker, avoid)

    async def _dispute(
        self,
        job: Job,
        spec: ShardSpec,
        state: _JobState,
        primary: ShardOutcome,
        checker: ShardOutcome,
        avoid: set[WorkerId],
    ) -> ShardOutcome:
        """Primary and checker disagree: a referee decides; the loser pays for it."""
        referee = await self._attempts(
            job,
            spec,
            first=None,
            optional=True,
            attempts=2,
            avoid=avoid | {primary.worker, checker.worker},
        )
        local = False
        decision = None
        if referee is not None:
            decision = self.verifier.decide(primary, checker, referee.tensors)
            if decision.winner is None:  # three different answers: ask the local referee
                referee, decision = None, None
        if decision is None:
            tensors = await self.verifier.local_referee(job, spec)
            if tensors is None:
                raise Unavailable(
                    f"shard {spec.index}: {primary.worker} and {checker.worker} disagree and "
                    "no referee is available (start a third worker or give the coordinator "
                    "--referee-models-dir)"
                )
            local = True
            decision = self.verifier.decide(primary, checker, tensors)
        verdict = self.verifier.judge_and_punish(
            job, spec, primary, checker, referee, decision, local=local
        )
        state.verdicts.append(verdict)
        if job.events is not None:
            for loser in decision.losers or (None,):
                job.events.verdict(spec.index, loser, decision.outcome.value)
        state.cheaters.update(decision.losers)
        if decision.winner is primary:
            return primary
        if decision.winner is checker:
            checker.checked = True
            return checker
        if referee is not None and decision.winner is referee:
            return referee
        # Both wrong, decided by the coordinator's own onnxruntime: its answer stands and no
        # worker is paid for these rows.
        return ShardOutcome(
            spec,
            COORDINATOR,
            "",
            1,
            0.0,
            time.monotonic(),
            decision.referee_tensors,
            None,
            checked=True,
        )

    # --- attempts on workers -----------------------------------------------------------

    def _request(self, job: Job, spec: ShardSpec) -> pb.ModelInferRequest:
        sig = job.signature
        request = pb.ModelInferRequest(
            model_name=sig.name, model_version=sig.sha256, id=f"{job.job_id}/{spec.index}"
        )
        for name, array in job.inputs.items():
            piece = array[spec.start : spec.stop] if job.rows else array
            datatype, raw = to_raw(piece)
            request.inputs.add(name=name, datatype=datatype, shape=piece.shape)
            request.raw_input_contents.append(raw)
        for name in job.output_names:
            request.outputs.add(name=name)
        if job.receipt_job:
            set_param(request.parameters, RECEIPT_JOB_PARAM, "0x" + job.receipt_job.hex())
            # A fresh id per request: a retry or a re-execution looks like any other shard.
            set_param(request.parameters, SHARD_ID_PARAM, secrets.randbits(63))
        return request

    async def _attempts(
        self,
        job: Job,
        spec: ShardSpec,
        *,
        first: WorkerId | None,
        avoid: set[WorkerId],
        optional: bool = False,
        attempts: int | None = None,
    ) -> ShardOutcome | None:
        """Run a shard on `first` (or the best other worker), moving to another worker after
        each failure. An `optional` run (a check, a referee) returns None instead of failing
        the job when no worker is left."""
        sha = job.signature.sha256
        tried: set[WorkerId] = set(avoid)
        worker = self.registry.get(first) if first is not None else None
        errors: list[str] = []
        for attempt in range(1, (attempts or self.config.max_attempts) + 1):
            if worker is None or not self.registry.is_live(worker) or worker.id in tried:
                worker = self._pick_other(sha, tried, at_random=optional)
                if worker is None:
                    break
            tried.add(worker.id)
            request = self._request(job, spec)
            rate = self.registry.rates_for(sha, [worker])[worker.id]
            timeout = shard_timeout(
                spec.rows,
                rate,
                slack=self.config.straggler_slack,
                floor_s=self.config.min_shard_timeout_s,
                cap_s=self.config.shard_timeout_s,
            )
            t0 = time.monotonic()
            if job.events is not None:
                job.events.shard_dispatched(spec.index, spec.rows, worker.id)
            try:
                try:
                    response = await worker.stub.ModelInfer(request, timeout=timeout)
                except asyncio.CancelledError:
                    if asyncio.current_task().cancelling():
                        raise  # the job itself is being cancelled
                    # The call, not the job, was cancelled: its channel closed under it
                    # (the worker was dropped). Another worker takes the shard.
                    raise ShardFailed("the worker's channel closed during the call") from None
                tensors = self._check_response(job, spec, response)
                receipt = self._check_receipt(job, worker, request, response, tensors)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _CLIENT_FAULT:
                    raise InvalidRequest(exc.details() or "invalid input") from None
                worker.shards_failed += 1
                SHARDS.labels("failed").inc()
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    worker.suspect = True  # until its next heartbeat
                errors.append(f"{worker.id}: {exc.code().name} {exc.details()}")
                log.warning(
                    "job %s shard %d attempt %d on %s failed: %s %s",
                    job.job_id,
                    spec.index,
                    attempt,
                    worker.id,
                    exc.code().name,
                    exc.details(),
                )
                worker = None
                continue
            except ShardFailed as exc:
                worker.shards_failed += 1
                SHARDS.labels("failed").inc()
                errors.append(f"{worker.id}: {exc}")
                log.warning(
                    "job %s shard %d from %s rejected: %s", job.job_id, spec.index, worker.id, exc
                )
                worker = None
                continue
            worker.shards_done += 1
            SHARDS.labels("done").inc()
            now = time.monotonic()
            if job.events is not None:
                job.events.shard_done(spec.index, worker.id, (now - t0) * 1000)
            return ShardOutcome(
                spec, worker.id, worker.info.chain_address, attempt, now - t0, now, tensors, receipt
            )
        if optional:
            return None
        raise Unavailable(
            f"shard {spec.index} (rows {spec.start}..{spec.stop}) of job {job.job_id} failed "
            f"on every worker tried: {'; '.join(errors) or 'no live worker left'}"
        )

    def _pick_other(
        self, sha: str, tried: set[WorkerId], *, at_random: bool = False
    ) -> Worker | None:
        """The worker to try next: the fastest untried one for a shard's own attempts; a
        uniformly random one for a check or a referee, so nobody can predict (or arrange)
        who checks whom."""
        candidates = [w for w in self.registry.serving(sha) if w.id not in tried]
        if not candidates:
            return None
        if at_random:
            return _random.choice(candidates)
        rates = self.registry.rates_for(sha, candidates)
        return max(candidates, key=lambda w: rates[w.id])

    def _check_response(self, job: Job, spec: ShardSpec, response) -> list[Tensor]:
        """A worker's answer must hold exactly the requested outputs, one row per input row."""
        names = [t.name for t in response.outputs]
        if names != job.output_names:
            raise ShardFailed(f"returned outputs {names}, asked for {job.output_names}")
        if len(response.raw_output_contents) != len(names):
            raise ShardFailed("raw_output_contents does not match outputs")
        expected = {t.name: t for t in job.signature.outputs}
        tensors = []
        for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
            if tensor.datatype != expected[tensor.name].datatype:
                raise ShardFailed(f"output {tensor.name!r} has datatype {tensor.datatype}")
            if job.rows and (not tensor.shape or tensor.shape[0] != spec.rows):
                raise ShardFailed(
                    f"output {tensor.name!r} has shape {list(tensor.shape)} for {spec.rows} rows"
                )
            try:
                decode_raw(raw, tensor.datatype, tensor.shape, f"output {tensor.name!r}")
            except ShardnetError as exc:
                raise ShardFailed(str(exc)) from None
            tensors.append((tensor.name, tensor.datatype, list(tensor.shape), raw))
        return tensors

    def _check_receipt(self, job: Job, worker: Worker, request, response, tensors):
        """A worker that is paid on chain must sign what it answered, correctly."""
        domain = self.verifier.domain
        if not job.receipt_job or domain is None or not worker.info.chain_address:
            return None
        if RECEIPT_PARAM not in response.parameters:
            raise ShardFailed("no receipt")
        try:
            signed = SignedReceipt.from_json(str(param_value(response.parameters[RECEIPT_PARAM])))
            signer = signed.signer(domain)
        except ShardnetError as exc:
            raise ShardFailed(str(exc)) from None
        r = signed.receipt
        sent = [
            (t.name, t.datatype, list(t.shape), raw)
            for t, raw in zip(request.inputs, request.raw_input_contents, strict=True)
        ]
        problems = [
            what
            for what, ok in (
                ("signer", signer.lower() == worker.info.chain_address.lower()),
                ("worker", r.worker.lower() == worker.info.chain_address.lower()),
                ("job", r.job_id == job.receipt_job),
                ("shard id", r.shard_id == param_value(request.parameters[SHARD_ID_PARAM])),
                ("model", r.model_sha256.hex() == job.signature.sha256),
                ("input digest", r.input_digest == tensors_digest(sent)),
                ("output digest", r.output_digest == tensors_digest(tensors)),
            )
            if not ok
        ]
        if problems:
            raise ShardFailed(f"receipt does not match the shard: {', '.join(problems)}")
        return signed

    # --- the whole job -----------------------------------------------------------------

    def _reassemble(self, job: Job, outcomes: list[ShardOutcome]):
        result = []
        for i, name in enumerate(job.output_names):
            _, datatype, first_shape, _ = outcomes[0].tensors[i]
            trailing = list(first_shape[1:])
            if job.rows:
                for outcome in outcomes:
                    if list(outcome.tensors[i][2][1:]) != trailing:
                        raise Unavailable(
                            f"workers disagree on the shape of output {name!r}: "
                            f"{trailing} vs {list(outcome.tensors[i][2][1:])}"
                        )
                shape = [job.rows, *trailing]
            else:
                shape = list(first_shape)
            raw = b"".join(o.tensors[i][3] for o in outcomes)
            result.append((name, datatype, shape, raw))
        return result

    def _record_throughput(self, sha: str, outcomes: list[ShardOutcome], started: float) -> None:
        """One throughput sample per worker per job: its rows over the time from the job's
        start to its last shard's completion (pipelined shards overlap, so per-shard times
        would undercount)."""
        rows: dict[WorkerId, int] = {}
        last: dict[WorkerId, float] = {}
        for outcome in outcomes:
            rows[outcome.worker] = rows.get(outcome.worker, 0) + outcome.spec.rows
            last[outcome.worker] = max(last.get(outcome.worker, started), outcome.finished)
        for worker_id, count in rows.items():
            worker = self.registry.get(worker_id)
            if worker is not None:
                self.registry.record_throughput(worker, sha, count, last[worker_id] - started)


def _leaves(group: BaseExceptionGroup):
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
