"""The worker's GRPCInferenceService: validates each request against the model's signature
and runs it on onnxruntime in a bounded pool of threads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

import shardnet
from shardnet.chain.contracts import Receipt
from shardnet.errors import InvalidRequest, ModelNotFound, Overloaded
from shardnet.node.faults import FaultInjector
from shardnet.node.models import LoadedModel, ModelRepository
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol.tensors import (
    add_outputs,
    decode_request_inputs,
    param_value,
    set_param,
    to_raw,
)
from shardnet.receipts import (
    RECEIPT_JOB_PARAM,
    RECEIPT_PARAM,
    SHARD_ID_PARAM,
    Domain,
    SignedReceipt,
    tensors_digest,
)
from shardnet.rpc import translate_errors
from shardnet.signature import select_outputs, validate_inputs
from shardnet.stats import ModelStats

# onnxruntime reports bad input values (e.g. an index out of range) with this class.
_OrtInvalidArgument = ort_state.InvalidArgument


@dataclass(frozen=True)
class ReceiptSigner:
    """The worker's chain key and the EIP-712 domain its receipts are signed in."""

    address: str
    key: bytes = field(repr=False)
    domain: Domain = field(repr=False)


class WorkerServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        repo: ModelRepository,
        *,
        max_concurrency: int,
        max_queue: int,
        fault_delay_s: float = 0.0,
        faults: FaultInjector | None = None,
        signer: ReceiptSigner | None = None,
    ) -> None:
        self.repo = repo
        self.stats = ModelStats()
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_concurrency)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="onnxruntime")
        self._waiting = 0
        self.fault_delay_s = fault_delay_s
        self.faults = faults
        self.signer = signer
        self.cancelled = 0  # runs stopped because their caller went away

    def _compute(self, model: LoadedModel, arrays, names, run_options) -> list:
        results = model.run(arrays, names, run_options)
        if self.faults is not None:
            results = self.faults.apply(model, arrays, names, results)
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @translate_errors
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @translate_errors
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    @translate_errors
    async def ModelReady(self, request, context):
        try:
            self.repo.get(request.name, request.version)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @translate_errors
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="shardnet-worker", version=shardnet.__version__)

    @translate_errors
    async def ModelMetadata(self, request, context):
        return self.repo.get(request.name, request.version).signature.to_metadata()

    @translate_errors
    async def ModelStatistics(self, request, context):
        return self.stats.to_proto(request.name, request.version)

    @translate_errors
    async def ModelInfer(self, request, context):
        started = time.perf_counter_ns()
        model = self.repo.get(request.model_name, request.model_version)
        sig = model.signature
        try:
            arrays = decode_request_inputs(request)
            rows = validate_inputs(sig, arrays)
            names = select_outputs(sig, [o.name for o in request.outputs])
            results, compute_ns, queue_ns = await self._run(model, arrays, names)
        except BaseException:
            self.stats.record(
                sig.name, sig.sha256, ok=False, duration_ns=time.perf_counter_ns() - started
            )
            raise
        response = pb.ModelInferResponse(
            model_name=sig.name, model_version=sig.sha256, id=request.id
        )
        add_outputs(response, zip(names, results, strict=True))
        set_param(response.parameters, "shardnet.compute_ns", compute_ns)
        if self.signer is not None and RECEIPT_JOB_PARAM in request.parameters:
            receipt = self._receipt(request, arrays, response)
            set_param(response.parameters, RECEIPT_PARAM, receipt.to_json())
        self.stats.record(
            sig.name,
            sig.sha256,
            ok=True,
            rows=rows or 1,
            compute_ns=compute_ns,
            queue_ns=queue_ns,
            duration_ns=time.perf_counter_ns() - started,
        )
        return response

    def _receipt(self, request, arrays, response) -> SignedReceipt:
        """Sign what this worker answered for the shard the request names."""
        assert self.signer is not None
        job = str(param_value(request.parameters[RECEIPT_JOB_PARAM]))
        shard_id = param_value(request.parameters.get(SHARD_ID_PARAM, pb.InferParameter()))
        try:
            job_key = bytes.fromhex(job.removeprefix("0x"))
            if len(job_key) != 32:
                raise ValueError
        except ValueError:
            raise InvalidRequest(f"{RECEIPT_JOB_PARAM} must be 0x + 64 hex digits") from None
        if not isinstance(shard_id, int) or isinstance(shard_id, bool) or not 0 <= shard_id < 2**64:
            raise InvalidRequest(f"{SHARD_ID_PARAM} must be an unsigned 64-bit integer")
        if request.raw_input_contents:
            inputs = [
                (t.name, t.datatype, list(t.shape), raw)
                for t, raw in zip(request.inputs, request.raw_input_contents, strict=True)
            ]
        else:
            inputs = []
            for name, array in arrays.items():
                datatype, raw = to_raw(array)
                inputs.append((name, datatype, list(array.shape), raw))
        receipt = Receipt(
            job_id=job_key,
            shard_id=shard_id,
            model_sha256=bytes.fromhex(response.model_version),
            input_digest=tensors_digest(inputs),
            output_digest=tensors_digest(
                [
                    (t.name, t.datatype, list(t.shape), raw)
                    for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)
                ]
            ),
            worker=self.signer.address,
        )
        return SignedReceipt.sign(receipt, self.signer.key, self.signer.domain)

    async def _run(self, model: LoadedModel, arrays, names) -> tuple[list, int, int]:
        """Run the model in the pool; return (outputs, compute ns, ns spent queued)."""
        if self._slots.locked() and self._waiting >= self.max_queue:
            raise Overloaded(
                f"worker queue is full ({self._waiting} requests waiting); retry later"
            )
        if self.fault_delay_s:
            await asyncio.sleep(self.fault_delay_s)  # fault injection: act as a straggler
        self._waiting += 1
        queued = time.perf_counter_ns()
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        queued = time.perf_counter_ns() - queued
        try:
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter_ns()
            run_options = ort.RunOptions()
            future = loop.run_in_executor(
                self._pool, self._compute, model, arrays, names, run_options
            )
            try:
                results = await asyncio.shield(future)
            except asyncio.CancelledError:
                # Nobody waits for this answer any more (client deadline, cancellation, a
                # re-sent straggler): stop onnxruntime, and free the slot only once the
                # thread is really done.
                run_options.terminate = True
                self.cancelled += 1
                with contextlib.suppress(Exception):
                    await future
                raise
            except _OrtInvalidArgument as exc:
                raise InvalidRequest(
                    f"model {model.signature.name!r} rejected the input: {exc}"
                ) from exc
            return results, time.perf_counter_ns() - t0, queued
        finally:
            self._slots.release()
