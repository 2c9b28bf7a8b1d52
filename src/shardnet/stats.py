"""Per-model inference statistics in the shape of the protocol's ModelStatistics."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from shardnet.protocol import inference_pb2 as pb


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
    ) -> None:
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
