"""Running one job: plan shards, send them to workers (several in flight per worker),
re-send failed or straggling shards elsewhere, and reassemble the outputs in row order.

The planning is pure (shardnet.sharding); this module is the I/O around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from shardnet.config import CoordinatorConfig
from shardnet.coordinator.registry import Worker, WorkerRegistry
from shardnet.errors import InvalidRequest, ShardnetError, Unavailable
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol.tensors import decode_raw, to_raw
from shardnet.sharding import ShardSpec, WorkerId, plan_shards, shard_timeout
from shardnet.signature import ModelSignature

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    job_id: str
    signature: ModelSignature
    inputs: dict[str, np.ndarray]
    output_names: list[str]
    rows: int | None  # None: the model has no batch dimension; the request is one shard


@dataclass
class ShardOutcome:
    spec: ShardSpec
    worker: WorkerId
    address: str  # the worker's chain address ("" without a chain)
    attempts: int
    seconds: float
    finished: float  # time.monotonic() at completion
    outputs: list[pb.ModelInferResponse.InferOutputTensor] = field(repr=False)
    raws: list[bytes] = field(repr=False)

    def summary(self) -> dict:
        return {
            "shard": self.spec.index,
            "rows": [self.spec.start, self.spec.stop],
            "worker": self.worker,
            "attempts": self.attempts,
            "ms": round(self.seconds * 1000, 2),
        }


@dataclass(frozen=True)
class JobResult:
    outputs: list[tuple[str, str, list[int], bytes]]  # name, datatype, shape, raw
    shards: list[ShardOutcome]


class ShardFailed(Exception):
    """One attempt at a shard failed in a way another worker may not repeat."""


# Worker errors that are about the request itself: every worker would answer the same.
_CLIENT_FAULT = {grpc.StatusCode.INVALID_ARGUMENT}


class JobRunner:
    def __init__(self, registry: WorkerRegistry, config: CoordinatorConfig) -> None:
        self.registry = registry
        self.config = config

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
        started = time.monotonic()
        outcomes: list[ShardOutcome] = []
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(
                        self._run_shard(job, spec), name=f"job[{job.job_id}].shard[{spec.index}]"
                    )
                    for spec in plan
                ]
        except ExceptionGroup as group:
            # Report the first deliberate error (e.g. the input is invalid) as the job's error.
            first = next((e for e in _leaves(group) if isinstance(e, ShardnetError)), None)
            if first is not None:
                raise first from None
            raise
        outcomes = [t.result() for t in tasks]
        self._record_throughput(sha, outcomes, started)
        return JobResult(self._reassemble(job, outcomes), outcomes)

    # --- one shard ---------------------------------------------------------------------

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
        return request

    async def _run_shard(self, job: Job, spec: ShardSpec) -> ShardOutcome:
        request = self._request(job, spec)
        sha = job.signature.sha256
        tried: set[WorkerId] = set()
        worker: Worker | None = self.registry.get(spec.worker)
        errors: list[str] = []
        for attempt in range(1, self.config.max_attempts + 1):
            if worker is None or not self.registry.is_live(worker) or worker.id in tried:
                worker = self._pick_other(sha, tried)
                if worker is None:
                    break
            tried.add(worker.id)
            rate = self.registry.rates_for(sha, [worker])[worker.id]
            timeout = shard_timeout(
                spec.rows,
                rate,
                slack=self.config.straggler_slack,
                floor_s=self.config.min_shard_timeout_s,
                cap_s=self.config.shard_timeout_s,
            )
            t0 = time.monotonic()
            try:
                response = await worker.stub.ModelInfer(request, timeout=timeout)
                outputs, raws = self._check_response(job, spec, response)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _CLIENT_FAULT:
                    raise InvalidRequest(exc.details() or "invalid input") from None
                worker.shards_failed += 1
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
                errors.append(f"{worker.id}: {exc}")
                log.warning(
                    "job %s shard %d from %s rejected: %s", job.job_id, spec.index, worker.id, exc
                )
                worker = None
                continue
            worker.shards_done += 1
            now = time.monotonic()
            return ShardOutcome(
                spec, worker.id, worker.info.chain_address, attempt, now - t0, now, outputs, raws
            )
        raise Unavailable(
            f"shard {spec.index} (rows {spec.start}..{spec.stop}) of job {job.job_id} failed "
            f"on every worker tried: {'; '.join(errors) or 'no live worker left'}"
        )

    def _pick_other(self, sha: str, tried: set[WorkerId]) -> Worker | None:
        candidates = [w for w in self.registry.serving(sha) if w.id not in tried]
        if not candidates:
            return None
        rates = self.registry.rates_for(sha, candidates)
        return max(candidates, key=lambda w: rates[w.id])

    def _check_response(self, job: Job, spec: ShardSpec, response: pb.ModelInferResponse):
        """A worker's answer must hold exactly the requested outputs, one row per input row."""
        names = [t.name for t in response.outputs]
        if names != job.output_names:
            raise ShardFailed(f"returned outputs {names}, asked for {job.output_names}")
        if len(response.raw_output_contents) != len(names):
            raise ShardFailed("raw_output_contents does not match outputs")
        expected = {t.name: t for t in job.signature.outputs}
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
        return list(response.outputs), list(response.raw_output_contents)

    # --- the whole job -----------------------------------------------------------------

    def _reassemble(self, job: Job, outcomes: list[ShardOutcome]):
        result = []
        for i, name in enumerate(job.output_names):
            first = outcomes[0].outputs[i]
            trailing = list(first.shape[1:])
            if job.rows:
                for outcome in outcomes:
                    if list(outcome.outputs[i].shape[1:]) != trailing:
                        raise Unavailable(
                            f"workers disagree on the shape of output {name!r}: "
                            f"{trailing} vs {list(outcome.outputs[i].shape[1:])}"
                        )
                shape = [job.rows, *trailing]
            else:
                shape = list(first.shape)
            raw = b"".join(o.raws[i] for o in outcomes)
            result.append((name, first.datatype, shape, raw))
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
