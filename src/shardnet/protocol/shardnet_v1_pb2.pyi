from shardnet.protocol import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Gpu(_message.Message):
    __slots__ = ("name", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class Hardware(_message.Message):
    __slots__ = ("cpu_model", "cpu_count", "intra_op_threads", "memory_bytes", "execution_providers", "gpus")
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    INTRA_OP_THREADS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    cpu_model: str
    cpu_count: int
    intra_op_threads: int
    memory_bytes: int
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    def __init__(self, cpu_model: _Optional[str] = ..., cpu_count: _Optional[int] = ..., intra_op_threads: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., execution_providers: _Optional[_Iterable[str]] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "sha256", "metadata")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    metadata: _inference_pb2.ModelMetadataResponse
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., metadata: _Optional[_Union[_inference_pb2.ModelMetadataResponse, _Mapping]] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "endpoint", "hardware", "models", "max_concurrency", "chain_address", "peer_key", "address_proof", "tls_certificate", "peer_signature")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEER_KEY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_PROOF_FIELD_NUMBER: _ClassVar[int]
    TLS_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    PEER_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    endpoint: str
    hardware: Hardware
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    max_concurrency: int
    chain_address: str
    peer_key: bytes
    address_proof: bytes
    tls_certificate: bytes
    peer_signature: bytes
    def __init__(self, worker_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., max_concurrency: _Optional[int] = ..., chain_address: _Optional[str] = ..., peer_key: _Optional[bytes] = ..., address_proof: _Optional[bytes] = ..., tls_certificate: _Optional[bytes] = ..., peer_signature: _Optional[bytes] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("worker",)
    WORKER_FIELD_NUMBER: _ClassVar[int]
    worker: WorkerInfo
    def __init__(self, worker: _Optional[_Union[WorkerInfo, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("heartbeat_interval_s", "ttl_s")
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_s: float
    ttl_s: float
    def __init__(self, heartbeat_interval_s: _Optional[float] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "timestamp", "signature")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    timestamp: float
    signature: bytes
    def __init__(self, worker_id: _Optional[str] = ..., timestamp: _Optional[float] = ..., signature: _Optional[bytes] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: bool = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("info", "live", "seconds_since_heartbeat", "rows_per_second", "shards_done", "shards_failed", "checks_passed", "strikes")
    class RowsPerSecondEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INFO_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ROWS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SHARDS_DONE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FAILED_FIELD_NUMBER: _ClassVar[int]
    CHECKS_PASSED_FIELD_NUMBER: _ClassVar[int]
    STRIKES_FIELD_NUMBER: _ClassVar[int]
    info: WorkerInfo
    live: bool
    seconds_since_heartbeat: float
    rows_per_second: _containers.ScalarMap[str, float]
    shards_done: int
    shards_failed: int
    checks_passed: int
    strikes: int
    def __init__(self, info: _Optional[_Union[WorkerInfo, _Mapping]] = ..., live: bool = ..., seconds_since_heartbeat: _Optional[float] = ..., rows_per_second: _Optional[_Mapping[str, float]] = ..., shards_done: _Optional[int] = ..., shards_failed: _Optional[int] = ..., checks_passed: _Optional[int] = ..., strikes: _Optional[int] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "rows")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    rows: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class QuoteResponse(_message.Message):
    __slots__ = ("price_wei", "coordinator_address", "escrow_address", "chain_id", "min_deadline_s", "payment_policy")
    PRICE_WEI_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ESCROW_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_POLICY_FIELD_NUMBER: _ClassVar[int]
    price_wei: str
    coordinator_address: str
    escrow_address: str
    chain_id: int
    min_deadline_s: int
    payment_policy: str
    def __init__(self, price_wei: _Optional[str] = ..., coordinator_address: _Optional[str] = ..., escrow_address: _Optional[str] = ..., chain_id: _Optional[int] = ..., min_deadline_s: _Optional[int] = ..., payment_policy: _Optional[str] = ...) -> None: ...

class GetSettlementRequest(_message.Message):
    __slots__ = ("escrow_job_id",)
    ESCROW_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    escrow_job_id: str
    def __init__(self, escrow_job_id: _Optional[str] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("worker_address", "amount_wei")
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_WEI_FIELD_NUMBER: _ClassVar[int]
    worker_address: str
    amount_wei: str
    def __init__(self, worker_address: _Optional[str] = ..., amount_wei: _Optional[str] = ...) -> None: ...

class Settlement(_message.Message):
    __slots__ = ("escrow_job_id", "job_id", "status", "tx_hash", "gas_used", "payments", "coordinator_fee_wei", "charge_wei", "results_root", "attempts", "last_error")
    ESCROW_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TX_HASH_FIELD_NUMBER: _ClassVar[int]
    GAS_USED_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FEE_WEI_FIELD_NUMBER: _ClassVar[int]
    CHARGE_WEI_FIELD_NUMBER: _ClassVar[int]
    RESULTS_ROOT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    escrow_job_id: str
    job_id: str
    status: str
    tx_hash: str
    gas_used: int
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    coordinator_fee_wei: str
    charge_wei: str
    results_root: str
    attempts: int
    last_error: str
    def __init__(self, escrow_job_id: _Optional[str] = ..., job_id: _Optional[str] = ..., status: _Optional[str] = ..., tx_hash: _Optional[str] = ..., gas_used: _Optional[int] = ..., payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ..., coordinator_fee_wei: _Optional[str] = ..., charge_wei: _Optional[str] = ..., results_root: _Optional[str] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class ListVerdictsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("id", "job_id", "shard", "outcome", "primary_worker", "checker_worker", "referee", "loser", "reason", "offending_receipt", "witness_receipt", "slash_status", "slash_tx", "slash_error")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_WORKER_FIELD_NUMBER: _ClassVar[int]
    CHECKER_WORKER_FIELD_NUMBER: _ClassVar[int]
    REFEREE_FIELD_NUMBER: _ClassVar[int]
    LOSER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OFFENDING_RECEIPT_FIELD_NUMBER: _ClassVar[int]
    WITNESS_RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SLASH_STATUS_FIELD_NUMBER: _ClassVar[int]
    SLASH_TX_FIELD_NUMBER: _ClassVar[int]
    SLASH_ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    job_id: str
    shard: int
    outcome: str
    primary_worker: str
    checker_worker: str
    referee: str
    loser: str
    reason: str
    offending_receipt: str
    witness_receipt: str
    slash_status: str
    slash_tx: str
    slash_error: str
    def __init__(self, id: _Optional[int] = ..., job_id: _Optional[str] = ..., shard: _Optional[int] = ..., outcome: _Optional[str] = ..., primary_worker: _Optional[str] = ..., checker_worker: _Optional[str] = ..., referee: _Optional[str] = ..., loser: _Optional[str] = ..., reason: _Optional[str] = ..., offending_receipt: _Optional[str] = ..., witness_receipt: _Optional[str] = ..., slash_status: _Optional[str] = ..., slash_tx: _Optional[str] = ..., slash_error: _Optional[str] = ...) -> None: ...

class ListVerdictsResponse(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...
