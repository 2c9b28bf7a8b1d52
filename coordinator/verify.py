"""Consequences of spot checks: agreeing, refereeing, and punishing the worker that lost.

Which shards to check and who is right are pure functions (shardnet.verification); this
module keeps the score (checks passed, strikes, exclusion), asks the coordinator's own
onnxruntime when it must referee, records every verdict with its evidence, and queues the
loser's conflicting signed receipt for slashing on chain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shardnet.coordinator.ledger import Ledger
from shardnet.coordinator.metrics import MISMATCHES, SPOT_CHECKS
from shardnet.coordinator.registry import WorkerRegistry
from shardnet.protocol.tensors import to_raw
from shardnet.receipts import Domain
from shardnet.sharding import ShardSpec, WorkerId
from shardnet.verification import Outcome, Tensor, Tolerance, compare, judge, should_check

if TYPE_CHECKING:
    from shardnet.coordinator.jobs import Job, ShardOutcome
    from shardnet.node.models import ModelRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    winner: ShardOutcome | None  # whose answer stands (None: the referee's own)
    losers: tuple[WorkerId, ...]
    referee_tensors: list[Tensor]
    reason: str


class Verifier:
    def __init__(
        self,
        *,
        p: float,
        seed: bytes,
        tolerances: dict[str, Tolerance],
        registry: WorkerRegistry,
        ledger: Ledger,
        max_strikes: int,
        domain: Domain | None = None,
        referee: ModelRepository | None = None,
        on_slash_queued=None,
    ) -> None:
        self.p = p
        self.seed = seed
        self.tolerances = tolerances
        self.registry = registry
        self.ledger = ledger
        self.max_strikes = max_strikes
        self.domain = domain
        self.referee = referee
        self.on_slash_queued = on_slash_queued or (lambda: None)
        self.checks = 0
        self.unchecked_count = 0
        self.mismatches = 0
        # One strike and one slash per worker per job, however many of its shards failed.
        self._punished: set[tuple[str, WorkerId]] = set()

    def should_check(self, job_id: str, index: int) -> bool:
        return self.p > 0 and should_check(self.seed, job_id, index, self.p)

    def agree(self, a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
        self.checks += 1
        SPOT_CHECKS.inc()
        return compare(a, b, self.tolerances) is None

    def passed(self, *workers: WorkerId) -> None:
        for worker_id in workers:
            worker = self.registry.get(worker_id)
            if worker is not None:
                worker.checks_passed += 1

    def unchecked(self, job: Job, spec: ShardSpec) -> None:
        self.unchecked_count += 1
        log.info(
            "job %s shard %d drew a spot check but no other worker could run it",
            job.job_id,
            spec.index,
        )

    def decide(
        self, primary: ShardOutcome, checker: ShardOutcome, referee: list[Tensor]
    ) -> Decision:
        primary_diff = compare(primary.tensors, referee, self.tolerances)
        checker_diff = compare(checker.tensors, referee, self.tolerances)
        outcome = judge(primary_diff is None, checker_diff is None)
        if outcome is Outcome.PRIMARY_WRONG:
            return Decision(
                outcome, checker, (primary.worker,), referee, f"{primary.worker}: {primary_diff}"
            )
        if outcome is Outcome.CHECKER_WRONG:
            return Decision(
                outcome, primary, (checker.worker,), referee, f"{checker.worker}: {checker_diff}"
            )
        if outcome is Outcome.NO_FAULT:
            return Decision(outcome, primary, (), referee, "the referee agrees with both")
        return Decision(
            outcome,
            None,
            (primary.worker, checker.worker),
            referee,
            f"{primary.worker}: {primary_diff}; {checker.worker}: {checker_diff}",
        )

    async def local_referee(self, job: Job, spec: ShardSpec) -> list[Tensor] | None:
        """The shard computed by the coordinator's own onnxruntime, when configured."""
        if self.referee is None:
            return None
        model = next((m for m in self.referee if m.signature.sha256 == job.signature.sha256), None)
        if model is None:
            return None
        inputs = {n: (a[spec.start : spec.stop] if job.rows else a) for n, a in job.inputs.items()}
        results = await asyncio.to_thread(model.run, inputs, job.output_names)
        tensors = []
        for name, array in zip(job.output_names, results, strict=True):
            datatype, raw = to_raw(array)
            tensors.append((name, datatype, list(array.shape), raw))
        return tensors

    def judge_and_punish(
        self,
        job: Job,
        spec: ShardSpec,
        primary: ShardOutcome,
        checker: ShardOutcome,
        referee: ShardOutcome | None,
        decision: Decision,
        *,
        local: bool,
    ) -> dict:
        """Record the verdict with its evidence and punish each loser: a strike, exclusion
        at `max_strikes`, and its signed receipt queued for slashing."""
        self.mismatches += 1
        MISMATCHES.inc()
        referee_name = "coordinator (local onnxruntime)" if local else str(referee.worker)
        by_worker = {primary.worker: primary, checker.worker: checker}
        slashes = []
        for loser in decision.losers:
            first_offence = (job.job_id, loser) not in self._punished
            self._punished.add((job.job_id, loser))
            offending = by_worker[loser].receipt
            witness_outcome = (
                decision.winner
                if decision.winner is not None
                else by_worker[checker.worker if loser == primary.worker else primary.worker]
            )
            witness = witness_outcome.receipt if witness_outcome is not None else None
            slashable = (
                first_offence
                and job.escrow_id is not None  # only a paid job is known to JobEscrow
                and offending is not None
                and witness is not None
                and offending.receipt.output_digest != witness.receipt.output_digest
            )
            verdict_id = self.ledger.add_verdict(
                job_id=job.job_id,
                shard=spec.index,
                outcome=decision.outcome.value,
                primary=str(primary.worker),
                checker=str(checker.worker),
                referee=referee_name,
                loser=str(loser),
                reason=decision.reason,
                offending=offending.to_json() if offending else None,
                witness=witness.to_json() if slashable and witness else None,
                slash=slashable,
            )
            slashes.append(slashable)
            if first_offence:
                self._strike(loser, decision.reason)
            log.warning(
                "VERDICT job %s shard %d: %s lost (%s); referee %s; verdict #%d%s",
                job.job_id,
                spec.index,
                loser,
                decision.reason,
                referee_name,
                verdict_id,
                ", slashing queued" if slashable else "",
            )
        if decision.outcome is Outcome.NO_FAULT:
            self.ledger.add_verdict(
                job_id=job.job_id,
                shard=spec.index,
                outcome=decision.outcome.value,
                primary=str(primary.worker),
                checker=str(checker.worker),
                referee=referee_name,
                loser=None,
                reason=decision.reason,
                offending=None,
                witness=None,
                slash=False,
            )
            self.passed(primary.worker, checker.worker)
        if any(slashes):
            self.on_slash_queued()
        return {
            "shard": spec.index,
            "outcome": decision.outcome.value,
            "primary": primary.worker,
            "checker": checker.worker,
            "referee": referee_name,
            "losers": list(decision.losers),
            "reason": decision.reason,
            "slash_queued": any(slashes),
        }

    def _strike(self, worker_id: WorkerId, reason: str) -> None:
        worker = self.registry.get(worker_id)
        strikes = self.registry.strike(worker_id)
        if strikes >= self.max_strikes:
            self.registry.ban(
                worker_id,
                worker.info if worker else None,
                f"{strikes} failed verification(s): {reason}",
            )
