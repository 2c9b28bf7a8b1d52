"""The coordinator's side of settlement: quotes, admitting escrowed jobs, recording what
each job owes, and landing one settle transaction per job, exactly once.

The amounts come from pure functions (shardnet.settlement); this module is the I/O around
them: the chain (shardnet.chain) and the durable ledger (coordinator.ledger).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from shardnet.chain import JOB_OPEN, JOB_SETTLED, Chain, ChainError, ChainUnavailable, TxReverted
from shardnet.coordinator.ledger import PENDING, Ledger, SettlementRow
from shardnet.errors import InvalidRequest, ShardnetError, Unavailable
from shardnet.protocol import ESCROW_PARAM
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.receipts import SignedReceipt
from shardnet.settlement import digest, merkle_root, quote, split_payment

log = logging.getLogger(__name__)


class PaymentRequired(ShardnetError):
    """This coordinator only serves requests that name an open escrow."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class EscrowRejected(ShardnetError):
    """The named escrow cannot pay for this job (wrong coordinator, too little, too late)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class PaymentTerms:
    policy: str  # "open" or "required"
    price_per_row_wei: int
    fee_bps: int
    min_deadline_s: int
    settle_retry_s: float


def parse_escrow_id(text: str) -> bytes:
    raw = text.removeprefix("0x")
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise InvalidRequest(f"{ESCROW_PARAM} must be 0x + 64 hex digits, got {text!r}")
    return value


class Payments:
    """`chain` is None when the coordinator runs without a chain: then only unpaid requests
    are served (and `required` cannot be the policy)."""

    def __init__(self, chain: Chain | None, ledger: Ledger | None, terms: PaymentTerms) -> None:
        if chain is None and terms.policy == "required":
            raise ChainError("payment policy 'required' needs --chain and --key-dir")
        self.chain = chain
        self.ledger = ledger
        self.terms = terms
        self.identity = None  # the coordinator's keys, when it runs on a chain
        self._wake = asyncio.Event()
        # Told when a job's settlement lands or is refused (the coordinator publishes it).
        self.on_settled: Callable[[str, str, int], None] = lambda job_id, tx, charge: None
        self.on_settle_failed: Callable[[str, str], None] = lambda job_id, reason: None

    @property
    def enabled(self) -> bool:
        return self.chain is not None

    async def close(self) -> None:
        if self.chain is not None:
            await self.chain.close()
        if self.ledger is not None:
            self.ledger.close()

    def quote(self, rows: int) -> v1.QuoteResponse:
        reply = v1.QuoteResponse(
            price_wei=str(quote(rows, self.terms.price_per_row_wei)),
            min_deadline_s=self.terms.min_deadline_s,
            payment_policy=self.terms.policy,
        )
        if self.chain is not None:
            reply.coordinator_address = self.chain.address
            reply.escrow_address = self.chain.deployment.escrow
            reply.chain_id = self.chain.deployment.chain_id
        return reply

    # --- workers -------------------------------------------------------------------------

    async def check_worker(self, address: str, peer_key: bytes) -> None:
        """A worker may take shards only if its address is staked and bound to its key."""
        if self.chain is None:
            return
        if not address:
            raise EscrowRejected(
                "the worker names no chain address; this coordinator pays on chain"
            )
        try:
            staked = await self.chain.is_staked(address)
            bound = await self.chain.peer_key_of(address) if staked else b""
        except ChainUnavailable as exc:
            raise Unavailable(f"cannot check the worker's stake now: {exc}") from exc
        if not staked:
            raise EscrowRejected(f"worker address {address} is not staked in the registry")
        if bound != peer_key:
            raise EscrowRejected(f"worker address {address} is bound to another peer key")

    # --- jobs ----------------------------------------------------------------------------

    async def admit(self, escrow_text: str | None, rows: int, job_id: str) -> str | None:
        """Check the escrow a request names and reserve it for this job; return its id
        (0x hex), or None for an unpaid request the policy allows."""
        if escrow_text is None:
            if self.terms.policy == "required":
                raise PaymentRequired(
                    f"this coordinator requires payment: open an escrow with `Quote` and pass "
                    f"its job id in the {ESCROW_PARAM!r} request parameter"
                )
            return None
        escrow_id = parse_escrow_id(escrow_text)
        if self.chain is None or self.ledger is None:
            raise EscrowRejected(f"this coordinator runs without a chain; drop {ESCROW_PARAM!r}")
        try:
            state = await self.chain.get_job(escrow_id)
            now = await self.chain.block_timestamp()
        except ChainUnavailable as exc:
            raise Unavailable(f"cannot check the escrow now: {exc}") from exc
        price = quote(rows, self.terms.price_per_row_wei)
        hex_id = "0x" + escrow_id.hex()
        if state.status != JOB_OPEN:
            raise EscrowRejected(f"escrow job {hex_id} is not open (status {state.status})")
        if state.coordinator.lower() != self.chain.address.lower():
            raise EscrowRejected(
                f"escrow job {hex_id} names coordinator {state.coordinator}, "
                f"not this one ({self.chain.address})"
            )
        if state.price_cap < price:
            raise EscrowRejected(
                f"escrow job {hex_id} caps the price at {state.price_cap} wei; "
                f"{rows} rows cost {price} wei"
            )
        if state.deadline < now + self.terms.min_deadline_s:
            raise EscrowRejected(
                f"escrow job {hex_id} ends in {state.deadline - now}s; "
                f"at least {self.terms.min_deadline_s}s are needed to settle"
            )
        self.ledger.reserve(hex_id, job_id)
        return hex_id

    def release(self, escrow_id: str) -> None:
        assert self.ledger is not None
        self.ledger.release(escrow_id)

    def record(
        self,
        escrow_id: str,
        rows: int,
        rows_by_worker: Mapping[str, int],
        shard_outputs: Sequence[Sequence[bytes]],
    ) -> None:
        """A paid job finished: write what it owes (durably) and wake the settler. A failed
        job owes nothing: settling it at zero returns the whole deposit at once."""
        assert self.ledger is not None
        charge = quote(rows, self.terms.price_per_row_wei) if rows_by_worker else 0
        payout = split_payment(charge, self.terms.fee_bps, rows_by_worker)
        root = merkle_root([digest(b"".join(raws)) for raws in shard_outputs])
        self.ledger.finish(
            escrow_id,
            charge_wei=charge,
            workers=list(payout.workers),
            amounts=list(payout.amounts),
            coordinator_fee=payout.coordinator_fee,
            results_root="0x" + root.hex(),
        )
        self._wake.set()

    def settlement(self, escrow_id: str) -> v1.Settlement:
        if self.ledger is None or self.chain is None:
            raise EscrowRejected("this coordinator runs without a chain")
        row = self.ledger.get("0x" + parse_escrow_id(escrow_id).hex())
        if row is None:
            raise EscrowRejected(f"no job paid with escrow {escrow_id} here")
        return _to_proto(row)

    # --- the settler ---------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run_settler(self) -> None:
        """Land every pending settlement and slash; retry while the chain is unreachable."""
        assert self.chain is not None and self.ledger is not None
        while True:
            self._wake.clear()
            for row in self.ledger.with_status(PENDING):
                await self._settle(row)
            for verdict in self.ledger.verdicts(slash_status="pending"):
                await self._slash(verdict)
            retry = bool(self.ledger.with_status(PENDING)) or bool(
                self.ledger.verdicts(slash_status="pending")
            )
            try:
                async with asyncio.timeout(self.terms.settle_retry_s if retry else None):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _settle(self, row: SettlementRow) -> None:
        assert self.chain is not None and self.ledger is not None
        job = bytes.fromhex(row.escrow_job_id.removeprefix("0x"))
        try:
            # Landed already (sent before a crash or a lost reply)? Then only record it.
            if (await self.chain.get_job(job)).status == JOB_SETTLED:
                events = await self.chain.settlements(job)
                tx = events[0].tx_hash if events else None
                self.ledger.settled(row.escrow_job_id, tx, None)
                self.on_settled(row.job_id, tx or "", row.charge_wei)
                log.info("settlement of %s found on chain (%s)", row.escrow_job_id, tx)
                return
            t0 = time.monotonic()
            result = await self.chain.settle(
                job,
                list(row.workers),
                list(row.amounts),
                row.coordinator_fee,
                bytes.fromhex(row.results_root.removeprefix("0x")),
            )
        except ChainUnavailable as exc:
            self.ledger.attempt_failed(row.escrow_job_id, str(exc))
            log.warning("settlement of %s waits for the chain: %s", row.escrow_job_id, exc)
            return
        except TxReverted as exc:
            if exc.error_name == "WorkerNotStaked":
                # A payee unbonded after its work was accepted: its share goes back to the
                # client, the others are still paid (next round).
                self._drop_payee(row, str(exc.error_args.get("worker", "")))
                return
            self.ledger.failed(row.escrow_job_id, str(exc))
            self.on_settle_failed(row.job_id, str(exc))
            log.error("settlement of %s refused: %s", row.escrow_job_id, exc)
            return
        self.ledger.settled(row.escrow_job_id, result.tx_hash, result.gas_used)
        self.on_settled(row.job_id, result.tx_hash, row.charge_wei)
        log.info(
            "settled %s in tx %s (%d gas, %.0f ms)",
            row.escrow_job_id,
            result.tx_hash,
            result.gas_used,
            (time.monotonic() - t0) * 1000,
        )

    async def _slash(self, verdict: dict) -> None:
        """Submit a lost verdict's conflicting signed receipts to JobEscrow.slash."""
        assert self.chain is not None and self.ledger is not None
        offending = SignedReceipt.from_json(verdict["offending"])
        witness = SignedReceipt.from_json(verdict["witness"])
        try:
            result = await self.chain.slash(
                offending.receipt, offending.signature, witness.receipt, witness.signature
            )
        except ChainUnavailable as exc:
            self.ledger.slash_attempt_failed(verdict["id"], str(exc))
            return
        except TxReverted as exc:
            if exc.error_name == "EvidenceAlreadyUsed":  # sent before a crash: it landed
                self.ledger.slash_done(verdict["id"], tx_hash=None, error=None)
            else:
                self.ledger.slash_done(verdict["id"], tx_hash=None, error=str(exc))
                log.error(
                    "slashing %s (verdict #%d) refused: %s", verdict["loser"], verdict["id"], exc
                )
            return
        self.ledger.slash_done(verdict["id"], tx_hash=result.tx_hash, error=None)
        log.warning(
            "slashed %s for verdict #%d in tx %s",
            offending.receipt.worker,
            verdict["id"],
            result.tx_hash,
        )

    def _drop_payee(self, row: SettlementRow, worker: str) -> None:
        assert self.ledger is not None
        keep = [
            (w, a)
            for w, a in zip(row.workers, row.amounts, strict=True)
            if w.lower() != worker.lower()
        ]
        dropped = sum(row.amounts) - sum(a for _, a in keep)
        self.ledger.revise(
            row.escrow_job_id,
            workers=[w for w, _ in keep],
            amounts=[a for _, a in keep],
            charge_wei=row.charge_wei - dropped,
            note=f"{worker} is no longer staked; its {dropped} wei stay with the client",
        )
        log.warning(
            "settlement of %s: %s is not staked, dropping its share", row.escrow_job_id, worker
        )


def _to_proto(row: SettlementRow) -> v1.Settlement:
    return v1.Settlement(
        escrow_job_id=row.escrow_job_id,
        job_id=row.job_id,
        status=row.status,
        tx_hash=row.tx_hash or "",
        gas_used=row.gas_used or 0,
        payments=[
            v1.Payment(worker_address=w, amount_wei=str(a))
            for w, a in zip(row.workers, row.amounts, strict=True)
        ],
        coordinator_fee_wei=str(row.coordinator_fee),
        charge_wei=str(row.charge_wei),
        results_root=row.results_root,
        attempts=row.attempts,
        last_error=row.last_error or "",
    )
