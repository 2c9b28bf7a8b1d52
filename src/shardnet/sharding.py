"""Pure sharding logic: how many rows each worker gets, cut into which shards.

Everything here is a plain function over plain data, so it is tested without a network.
Rates are rows per second (measured, EWMA) or, before a worker has been measured, a
hardware score scaled to the measured workers' units.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import NewType, TypeVar

WorkerId = NewType("WorkerId", str)
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class ShardSpec:
    index: int
    start: int  # first row (inclusive)
    stop: int  # last row (exclusive)
    worker: WorkerId

    @property
    def rows(self) -> int:
        return self.stop - self.start


def _check_weights(weights: Mapping[K, float]) -> None:
    for key, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of {key!r} must be finite and >= 0, got {w}")


def apportion(total: int, weights: Mapping[K, float] | Mapping[K, int]) -> dict[K, int]:
    """Split `total` items in proportion to `weights` (largest-remainder method).

    The counts sum to `total` exactly and each is within 1 of its exact share
    `total * w / sum(w)`. Ties go to the key that comes first in `weights`.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    _check_weights(weights)
    weight_sum = sum(weights.values())
    if total and weight_sum <= 0:
        raise ValueError("at least one weight must be positive")
    if not total:
        return {k: 0 for k in weights}
    # Exact rational arithmetic: floats would lose rows (or wei) once totals pass 2**53.
    frac_sum = sum(Fraction(w) for w in weights.values())
    exact = {k: total * Fraction(w) / frac_sum for k, w in weights.items()}
    counts = {k: math.floor(x) for k, x in exact.items()}
    left = total - sum(counts.values())
    order = list(weights)
    by_remainder = sorted(order, key=lambda k: (-(exact[k] - counts[k]), order.index(k)))
    for k in by_remainder[:left]:
        counts[k] += 1
    return counts


def plan_shards(
    rows: int,
    rates: Mapping[WorkerId, float],
    *,
    shards_per_worker: int = 2,
    min_shard_rows: int = 1,
) -> list[ShardSpec]:
    """Cut rows [0, rows) into contiguous shards, each worker's share in proportion to its rate.

    Each worker's share is cut into up to `shards_per_worker` shards so that several are in
    flight per worker (it computes one while the next is on the wire). No shard is smaller
    than `min_shard_rows` unless the whole batch is; when the batch is too small to give
    every worker a shard, the fastest workers get it. Every row lands in exactly one shard
    and shards are returned in row order.
    """
    if shards_per_worker < 1 or min_shard_rows < 1:
        raise ValueError("shards_per_worker and min_shard_rows must be >= 1")
    _check_weights(rates)
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if rows == 0:
        return []
    usable = {w: r for w, r in rates.items() if r > 0}
    if not usable:
        raise ValueError("no worker with a positive rate")
    most_workers = max(1, rows // min_shard_rows)
    if len(usable) > most_workers:
        fastest = sorted(usable, key=lambda w: -usable[w])[:most_workers]
        usable = {w: usable[w] for w in usable if w in fastest}
    shares = apportion(rows, usable)
    shards: list[ShardSpec] = []
    start = 0
    for worker, share in shares.items():
        if share == 0:
            continue
        pieces = max(1, min(shards_per_worker, share // min_shard_rows))
        for size in apportion(share, dict.fromkeys(range(pieces), 1.0)).values():
            shards.append(ShardSpec(len(shards), start, start + size, worker))
            start += size
    return shards


def effective_rates(
    measured: Mapping[WorkerId, float | None], scores: Mapping[WorkerId, float]
) -> dict[WorkerId, float]:
    """Rates for planning: measured rows/s where known, else the hardware score converted to
    rows/s with the median rows/s-per-score of the measured workers (or the raw score when
    nobody has been measured yet; only proportions matter then)."""
    ratios = sorted(
        rate / scores[w]
        for w, rate in measured.items()
        if rate is not None and scores.get(w, 0) > 0
    )
    scale = ratios[len(ratios) // 2] if ratios else 1.0
    out: dict[WorkerId, float] = {}
    for worker, score in scores.items():
        rate = measured.get(worker)
        out[worker] = rate if rate is not None else score * scale
    return out


def ewma(previous: float | None, sample: float, alpha: float) -> float:
    """Exponentially weighted moving average; the first sample is taken as is."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    return sample if previous is None else alpha * sample + (1 - alpha) * previous


def hardware_score(cpu_count: int, intra_op_threads: int, gpu_count: int) -> float:
    """A rough prior for throughput before anything is measured: usable threads, and a GPU
    counted as many cores. Measured rates replace it after the first job."""
    threads = intra_op_threads if intra_op_threads > 0 else max(1, cpu_count)
    return float(min(threads, max(1, cpu_count)) + 16 * gpu_count)


def shard_timeout(rows: int, rate: float, *, slack: float, floor_s: float, cap_s: float) -> float:
    """How long to wait for a shard before calling its worker a straggler and re-sending it:
    `slack` times the expected time at the worker's rate, clamped to [floor_s, cap_s]."""
    expected = rows / rate if rate > 0 else cap_s
    return min(cap_s, max(floor_s, slack * expected))
