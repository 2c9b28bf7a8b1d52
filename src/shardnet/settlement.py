"""Pure settlement arithmetic: what a job costs, who gets what, and the results commitment.

All amounts are integers in wei. `split_payment` never creates or loses a wei: the
workers' amounts plus the coordinator's fee equal the charge exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shardnet.sharding import apportion

BPS = 10_000


def quote(rows: int, price_per_row_wei: int, minimum_wei: int = 0) -> int:
    """The price of a job of `rows` rows."""
    if rows < 0 or price_per_row_wei < 0 or minimum_wei < 0:
        raise ValueError("rows and prices must be >= 0")
    return max(rows * price_per_row_wei, minimum_wei)


@dataclass(frozen=True)
class Payout:
    workers: tuple[str, ...]  # chain addresses, in a stable order
    amounts: tuple[int, ...]
    coordinator_fee: int

    @property
    def total(self) -> int:
        return sum(self.amounts) + self.coordinator_fee


def split_payment(charge: int, fee_bps: int, rows_by_worker: Mapping[str, int]) -> Payout:
    """Split `charge` wei: `fee_bps` of it (rounded down) to the coordinator, the rest to the
    workers in proportion to the rows each computed and had accepted (largest remainder,
    so each is within 1 wei of its exact share). Workers with no rows get nothing."""
    if charge < 0 or not 0 <= fee_bps <= BPS:
        raise ValueError("charge must be >= 0 and fee_bps in [0, 10000]")
    if any(r < 0 for r in rows_by_worker.values()):
        raise ValueError("row counts must be >= 0")
    paid = {w: r for w, r in sorted(rows_by_worker.items()) if r > 0}
    if not paid:
        return Payout((), (), charge)  # nothing computed by anyone: nothing for workers
    fee = charge * fee_bps // BPS
    shares = apportion(charge - fee, paid)
    return Payout(tuple(shares), tuple(shares.values()), fee)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary SHA-256 Merkle root of 32-byte leaves, in order; an odd node is paired with
    itself. The empty tree's root is 32 zero bytes."""
    if not leaves:
        return bytes(32)
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [digest(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]
