"""Pure verification logic: which shards to re-execute, when two answers agree, who lost.

Spot checks are chosen from a secret seed the workers never see (HMAC-SHA256 of the job
and shard), so a worker cannot tell a checked shard from any other. Outputs are compared
dtype-aware: exactly for integers, booleans and bytes; for floats element-wise
`|a - b| <= atol + rtol * |b|`, with NaN matching only NaN.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from shardnet.protocol.tensors import decode_raw

# (name, datatype, shape, raw bytes): one output tensor as it travels.
Tensor = tuple[str, str, Sequence[int], bytes]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


# Defaults from onnxruntime's own op tests.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = {
    "FP32": Tolerance(1e-5, 1e-4),
    "FP64": Tolerance(1e-5, 1e-4),
    "FP16": Tolerance(2.5e-3, 1e-3),
}


def should_check(seed: bytes, job_id: str, shard_index: int, p: float) -> bool:
    """Whether to re-execute a shard: true with probability `p`, decided by a keyed hash so
    the choice is reproducible by the coordinator and unpredictable to workers."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    mac = hmac.new(seed, f"{job_id}/{shard_index}".encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big") / 2**64 < p


def detection_probability(p: float, shards: int) -> float:
    """P(at least one of a cheater's `shards` shards is checked) = 1 - (1 - p)^k."""
    return 1 - (1 - p) ** shards


def compare(
    a: Sequence[Tensor], b: Sequence[Tensor], tolerances: Mapping[str, Tolerance] | None = None
) -> str | None:
    """None when the two answers agree, else a short reason naming the first difference."""
    tolerances = DEFAULT_TOLERANCES if tolerances is None else tolerances
    if [t[0] for t in a] != [t[0] for t in b]:
        return f"different outputs: {[t[0] for t in a]} vs {[t[0] for t in b]}"
    for (name, dt_a, shape_a, raw_a), (_, dt_b, shape_b, raw_b) in zip(a, b, strict=True):
        if dt_a != dt_b or list(shape_a) != list(shape_b):
            return f"{name}: {dt_a}{list(shape_a)} vs {dt_b}{list(shape_b)}"
        tol = tolerances.get(dt_a)
        if tol is None:  # integers, bool, bytes: exact
            if raw_a != raw_b:
                return f"{name}: exact values differ"
            continue
        x = decode_raw(raw_a, dt_a, shape_a, name).astype(np.float64)
        y = decode_raw(raw_b, dt_b, shape_b, name).astype(np.float64)
        nan_x, nan_y = np.isnan(x), np.isnan(y)
        if not np.array_equal(nan_x, nan_y):
            return f"{name}: NaN in different places"
        finite = np.isfinite(x) & np.isfinite(y)  # an infinity must match exactly
        with np.errstate(invalid="ignore"):  # inf - inf
            close = (x == y) | (finite & (np.abs(x - y) <= tol.atol + tol.rtol * np.abs(y)))
        close |= nan_x
        if not close.all():
            i = int(np.argmin(close.reshape(-1)))
            return (
                f"{name}: element {i} is {float(x.reshape(-1)[i]):.7g} vs "
                f"{float(y.reshape(-1)[i]):.7g} "
                f"(atol {tol.atol}, rtol {tol.rtol})"
            )
    return None


class Outcome(enum.Enum):
    PRIMARY_WRONG = "primary_wrong"  # the checker (and referee) were right
    CHECKER_WRONG = "checker_wrong"
    BOTH_WRONG = "both_wrong"  # the referee agrees with neither
    NO_FAULT = "no_fault"  # the referee agrees with both (tolerances are not transitive)


def judge(primary_matches_referee: bool, checker_matches_referee: bool) -> Outcome:
    if primary_matches_referee and checker_matches_referee:
        return Outcome.NO_FAULT
    if primary_matches_referee:
        return Outcome.CHECKER_WRONG
    if checker_matches_referee:
        return Outcome.PRIMARY_WRONG
    return Outcome.BOTH_WRONG


def parse_tolerances(specs: Sequence[str]) -> dict[str, Tolerance]:
    """`DATATYPE=ATOL,RTOL` entries (e.g. `FP32=1e-4,1e-3`) over the defaults."""
    out = dict(DEFAULT_TOLERANCES)
    for spec in specs:
        datatype, _, values = spec.partition("=")
        try:
            atol, rtol = (float(v) for v in values.split(","))
        except ValueError:
            raise ValueError(f"tolerance {spec!r} is not DATATYPE=ATOL,RTOL") from None
        if atol < 0 or rtol < 0:
            raise ValueError(f"tolerance {spec!r} is negative")
        out[datatype.strip().upper()] = Tolerance(atol, rtol)
    return out
