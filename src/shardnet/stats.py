"""Per-model inference statistics: the protocol's ModelStatistics, and the same counts as
Prometheus metrics named like Triton's `nv_inference_*` (here `shardnet_inference_*`)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from shardnet.protocol import inference_pb2 as pb

_LABELS = ("role", "model", "version")
REQUEST_SUCCESS = Counter(
    "shardnet_inference_request_success", "Successful inference requests", _LABELS
)
REQUEST_FAILURE = Counter(
    "shardnet_inference_request_failure", "Failed inference requests", _LABELS
)
INFERENCE_COUNT = Counter("shardnet_inference_count", "Rows inferred", _LABELS)
EXEC_COUNT = Counter(
    "shardnet_inference_exec_count", "Model executions (requests or shards)", _LABELS
)
REQUEST_DURATION = Counter(
    "shardnet_inference_request_duration_us", "Cumulative request time, microseconds", _LABELS
)
QUEUE_DURATION = Counter(
    "shardnet_inference_queue_duration_us",
    "Cumulative time waiting for a slot, microseconds",
    _LABELS,
)
COMPUTE_DURATION = Counter(
    "shardnet_inference_compute_infer_duration_us",
    "Cumulative model compute time, microseconds",
    _LABELS,
)
REQUEST_SECONDS = Histogram(
    "shardnet_inference_request_seconds",
    "Request latency",
    ("role", "model"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass
class _Counters:
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    compute_count: int = 0
    compute_ns: int = 0
    inference_count: int = 0  # rows
    execution_count: int = 0  # model runs (requests or shards)
    last_inference_ms: int = 0


@dataclass
class ModelStats:
    role: str = "worker"  # the `role` label of the Prometheus metrics
    _by_model: dict[tuple[str, str], _Counters] = field(
        default_factory=lambda: defaultdict(_Counters)
    )

    def record(
        self,
        name: str,
        version: str,
        *,
        ok: bool,
        duration_ns: int,
        rows: int = 0,
        compute_ns: int = 0,
        queue_ns: int = 0,
    ) -> None:
        labels = (self.role, name, version[:12])
        REQUEST_SECONDS.labels(self.role, name).observe(duration_ns / 1e9)
        if ok:
            REQUEST_SUCCESS.labels(*labels).inc()
            INFERENCE_COUNT.labels(*labels).inc(rows)
            EXEC_COUNT.labels(*labels).inc()
            REQUEST_DURATION.labels(*labels).inc(duration_ns / 1000)
            QUEUE_DURATION.labels(*labels).inc(queue_ns / 1000)
            COMPUTE_DURATION.labels(*labels).inc(compute_ns / 1000)
        else:
            REQUEST_FAILURE.labels(*labels).inc()
        c = self._by_model[(name, version)]
        c.last_inference_ms = time.time_ns() // 1_000_000
        if ok:
            c.success_count += 1
            c.success_ns += duration_ns
            c.inference_count += rows
            c.execution_count += 1
            if compute_ns:
                c.compute_count += 1
                c.compute_ns += compute_ns
        else:
            c.fail_count += 1
            c.fail_ns += duration_ns

    def to_proto(self, name: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        out = pb.ModelStatisticsResponse()
        for (n, v), c in sorted(self._by_model.items()):
            if (name and n != name) or (version and v != version):
                continue
            s = out.model_stats.add(
                name=n,
                version=v,
                last_inference=c.last_inference_ms,
                inference_count=c.inference_count,
                execution_count=c.execution_count,
            )
            s.inference_stats.success.count = c.success_count
            s.inference_stats.success.ns = c.success_ns
            s.inference_stats.fail.count = c.fail_count
            s.inference_stats.fail.ns = c.fail_ns
            s.inference_stats.compute_infer.count = c.compute_count
            s.inference_stats.compute_infer.ns = c.compute_ns
        return out
