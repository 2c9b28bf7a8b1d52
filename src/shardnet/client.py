"""A small Python SDK for submitting jobs to a coordinator (or straight to a worker).

with Client("127.0.0.1:8001") as client:
    result = client.infer("mlp", {"x": x})
    result.outputs["logits"]
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from shardnet.chain import Chain, Deployment
from shardnet.errors import InvalidRequest, RemoteError
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
from shardnet.protocol.tensors import (
    add_inputs,
    decode_response_outputs,
    param_value,
    set_param,
    to_raw,
)
from shardnet.receipts import Domain, SignedReceipt, tensors_digest
from shardnet.rpc import GRPC_OPTIONS
from shardnet.signature import ModelSignature

# Large inputs are sent as several requests of about this many bytes each.
DEFAULT_REQUEST_BYTES = 32 * 2**20


@dataclass
class InferResult:
    outputs: dict[str, np.ndarray]
    job_ids: list[str] = field(default_factory=list)
    # What the coordinator reported for each shard (worker, rows, attempts, ms), per request.
    shards: list[dict] = field(default_factory=list)
    # Escrow job ids (0x hex) that paid for the requests, when paying.
    escrow_jobs: list[str] = field(default_factory=list)
    # Spot-check disputes the coordinator decided (who lost, why, referee).
    verdicts: list[dict] = field(default_factory=list)
    # The workers' signed receipts, one per shard in order (on a chain); check them
    # offline with `verify_receipts`.
    receipts: list[SignedReceipt] = field(default_factory=list)


@dataclass(frozen=True)
class Payer:
    """Pays for requests: opens one escrow per request at the coordinator's quoted price."""

    deployment: Deployment
    private_key: bytes = field(repr=False)
    # Extra time beyond the coordinator's minimum before the client may take a refund.
    deadline_margin_s: int = 600

    def open_escrow(self, quote: v1.QuoteResponse) -> str:
        if not quote.coordinator_address:
            raise InvalidRequest("the coordinator runs without a chain; submit without paying")
        if quote.escrow_address.lower() != self.deployment.escrow.lower():
            raise InvalidRequest(
                f"the coordinator settles on escrow {quote.escrow_address}, "
                f"the deployment file names {self.deployment.escrow}"
            )
        return asyncio.run(self._open(quote))

    async def _open(self, quote: v1.QuoteResponse) -> str:
        job_id = secrets.token_bytes(32)
        price = int(quote.price_wei)
        async with await Chain.connect(self.deployment, self.private_key) as chain:
            now = await chain.block_timestamp()
            deadline = now + quote.min_deadline_s + self.deadline_margin_s
            await chain.open_job(job_id, quote.coordinator_address, deadline, price, price)
        return "0x" + job_id.hex()


def sync_channel(address: str, tls_certificate: bytes | None = None) -> grpc.Channel:
    if tls_certificate:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_certificate)
        return grpc.secure_channel(address, credentials, options=GRPC_OPTIONS)
    return grpc.insecure_channel(address, options=GRPC_OPTIONS)


def _remote(exc: grpc.RpcError) -> RemoteError:
    return RemoteError(exc.code(), exc.details() or "")


class Client:
    def __init__(
        self, address: str, *, timeout_s: float = 300.0, tls_certificate: bytes | None = None
    ) -> None:
        """`tls_certificate`: the PEM certificate to trust when talking straight to a worker
        (workers serve TLS with a self-signed certificate; coordinators plaintext here)."""
        self.address = address
        self.timeout_s = timeout_s
        self._channel = sync_channel(address, tls_certificate)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout or self.timeout_s)
        except grpc.RpcError as exc:
            raise _remote(exc) from None

    def live(self, timeout_s: float = 5.0) -> bool:
        return self._call(self._stub.ServerLive, pb.ServerLiveRequest(), timeout_s).live

    def ready(self, timeout_s: float = 5.0) -> bool:
        return self._call(self._stub.ServerReady, pb.ServerReadyRequest(), timeout_s).ready

    def signature(self, model: str, version: str = "") -> ModelSignature:
        md = self._call(
            self._stub.ModelMetadata, pb.ModelMetadataRequest(name=model, version=version)
        )
        return ModelSignature.from_metadata(md, md.versions[0] if md.versions else "")

    def workers(self) -> Sequence[v1.WorkerStatus]:
        stub = v1_grpc.CoordinatorStub(self._channel)
        return self._call(stub.ListWorkers, v1.ListWorkersRequest()).workers

    def quote(self, model: str, rows: int, version: str = "") -> v1.QuoteResponse:
        stub = v1_grpc.CoordinatorStub(self._channel)
        request = v1.QuoteRequest(model_name=model, model_version=version, rows=rows)
        return self._call(stub.Quote, request, 10)

    def settlement(self, escrow_job: str) -> v1.Settlement:
        stub = v1_grpc.CoordinatorStub(self._channel)
        return self._call(stub.GetSettlement, v1.GetSettlementRequest(escrow_job_id=escrow_job), 10)

    def verdicts(self, job_id: str = "") -> Sequence[v1.Verdict]:
        stub = v1_grpc.CoordinatorStub(self._channel)
        return self._call(stub.ListVerdicts, v1.ListVerdictsRequest(job_id=job_id), 10).verdicts

    def wait_settled(self, escrow_job: str, timeout_s: float = 60.0) -> v1.Settlement:
        """Poll until the coordinator's settlement of `escrow_job` landed (or failed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            settlement = self.settlement(escrow_job)
            if settlement.status in ("settled", "failed") or time.monotonic() > deadline:
                return settlement
            time.sleep(0.1)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        outputs: Sequence[str] = (),
        version: str = "",
        batch_rows: int | None = None,
        max_in_flight: int = 2,
        progress: Callable[[int], None] | None = None,
        payer: Payer | None = None,
        request_key: str | None = None,
        retry_s: float = 120.0,
    ) -> InferResult:
        """Run `model` on `inputs`. Inputs with many rows are split along dim 0 into
        requests of `batch_rows` rows (default: about 32 MiB each), up to `max_in_flight`
        at a time; `progress(rows_done)` is called as each completes. With a `payer`, each
        request is paid through its own escrow, opened at the coordinator's quote. Paid
        requests, and requests given a `request_key`, are retried for up to `retry_s` while
        the coordinator is unreachable (it answers a repeat from its ledger)."""
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        if not arrays:
            raise InvalidRequest("no inputs given")
        rows = {a.shape[0] if a.ndim else None for a in arrays.values()}
        chunks: list[tuple[int, int]] | None = None
        if len(rows) == 1 and None not in rows:
            (total,) = rows
            if batch_rows is None:
                row_bytes = sum(a[:1].nbytes for a in arrays.values()) or 1
                batch_rows = max(1, DEFAULT_REQUEST_BYTES // row_bytes)
            if total > batch_rows:
                chunks = [(s, min(s + batch_rows, total)) for s in range(0, total, batch_rows)]
        if chunks is None:
            chunks = [(0, -1)]  # one request, inputs as given
        whole_rows = rows.pop() if len(rows) == 1 and None not in rows else 1

        result = InferResult(outputs={})

        def request_for(start: int, stop: int) -> pb.ModelInferRequest:
            req = pb.ModelInferRequest(model_name=model, model_version=version)
            add_inputs(req, arrays if stop < 0 else {k: a[start:stop] for k, a in arrays.items()})
            for name in outputs:
                req.outputs.add(name=name)
            if payer is not None:
                quote = self.quote(model, stop - start if stop >= 0 else whole_rows, version)
                escrow = payer.open_escrow(quote)
                set_param(req.parameters, ESCROW_PARAM, escrow)
                result.escrow_jobs.append(escrow)
            elif request_key is not None:
                set_param(req.parameters, REQUEST_KEY_PARAM, f"{request_key}/{start}")
            return req

        # A request with an escrow or a request key is idempotent: the coordinator answers
        # a repeat from its ledger, so a lost connection or a coordinator restart is waited
        # out by sending the same request again, for up to `retry_s`.
        retryable = payer is not None or request_key is not None

        def send(request):
            return self._stub.ModelInfer.future(request, timeout=self.timeout_s)

        parts: list[dict[str, np.ndarray]] = []
        pending: deque = deque()
        todo = deque(chunks)
        while todo or pending:
            while todo and len(pending) < max(1, max_in_flight):
                start, stop = todo.popleft()
                request = request_for(start, stop)
                pending.append((start, stop, request, send(request)))
            start, stop, request, future = pending.popleft()
            give_up = time.monotonic() + retry_s
            while True:
                try:
                    response = future.result()
                    break
                except grpc.RpcError as exc:
                    if (
                        retryable
                        and exc.code() == grpc.StatusCode.UNAVAILABLE
                        and (time.monotonic() < give_up)
                    ):
                        time.sleep(0.5)
                        future = send(request)
                        continue
                    for *_, other in pending:
                        other.cancel()
                    raise _remote(exc) from None
            parts.append(decode_response_outputs(response))
            params = response.parameters
            if JOB_ID_PARAM in params:
                result.job_ids.append(str(param_value(params[JOB_ID_PARAM])))
            if SHARDS_PARAM in params:
                result.shards.extend(json.loads(str(param_value(params[SHARDS_PARAM]))))
            if VERDICTS_PARAM in params:
                result.verdicts.extend(json.loads(str(param_value(params[VERDICTS_PARAM]))))
            if RECEIPTS_PARAM in params:
                result.receipts.extend(
                    SignedReceipt.from_json(json.dumps(r))
                    for r in json.loads(str(param_value(params[RECEIPTS_PARAM])))
                )
            if progress is not None:
                progress(stop - start if stop >= 0 else whole_rows)
        if len(parts) == 1:
            result.outputs = {k: np.array(v) for k, v in parts[0].items()}
        else:
            result.outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return result


def verify_receipts(
    result: InferResult,
    inputs: Mapping[str, np.ndarray],
    domain: Domain,
    workers: Mapping[str, str] | None = None,
) -> list[str]:
    """Check a job's receipts offline: each is signed by the worker it names (and, given
    `workers` {worker id: address}, by the worker the coordinator reported for the shard),
    and its digests match the client's own input rows and output rows for that shard.
    Returns the problems found (empty when all is well). One request's result only."""
    problems = []
    if len(result.receipts) != len(result.shards):
        return [f"{len(result.receipts)} receipts for {len(result.shards)} shards"]
    for shard, signed in zip(result.shards, result.receipts, strict=True):
        start, stop = shard["rows"]
        r = signed.receipt
        if signed.signer(domain).lower() != r.worker.lower():
            problems.append(f"shard {shard['shard']}: not signed by {r.worker}")
        expected = (workers or {}).get(shard["worker"])
        if expected and expected.lower() != r.worker.lower():
            problems.append(f"shard {shard['shard']}: signed by {r.worker}, ran on {expected}")
        if r.input_digest != _rows_digest(inputs, start, stop):
            problems.append(f"shard {shard['shard']}: input digest differs from your inputs")
        if r.output_digest != _rows_digest(result.outputs, start, stop):
            problems.append(f"shard {shard['shard']}: output digest differs from your outputs")
    return problems


def _rows_digest(arrays: Mapping[str, np.ndarray], start: int, stop: int) -> bytes:
    tensors = []
    for name, array in arrays.items():
        piece = array[start:stop]
        datatype, raw = to_raw(piece)
        tensors.append((name, datatype, list(piece.shape), raw))
    return tensors_digest(tensors)
