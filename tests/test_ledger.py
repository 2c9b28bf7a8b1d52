"""The settlement ledger: reservations are exclusive and rows survive reopening."""

from __future__ import annotations

import pytest

from shardnet.coordinator.ledger import PENDING, RUNNING, SETTLED, EscrowAlreadyUsed, Ledger


def test_lifecycle_survives_reopen(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.reserve("0xaa", "job1")
    assert ledger.get("0xaa").status == RUNNING
    ledger.finish(
        "0xaa",
        charge_wei=10**20,
        workers=["0x1", "0x2"],
        amounts=[6 * 10**19, 3 * 10**19],
        coordinator_fee=10**19,
        results_root="0xff",
    )
    ledger.close()

    ledger = Ledger(tmp_path / "l.db")
    (row,) = ledger.with_status(PENDING)
    assert row.amounts == (6 * 10**19, 3 * 10**19) and row.charge_wei == 10**20
    ledger.attempt_failed("0xaa", "chain down")
    ledger.settled("0xaa", "0xtx", 120_000)
    row = ledger.get("0xaa")
    assert (row.status, row.tx_hash, row.attempts, row.last_error) == (SETTLED, "0xtx", 1, None)


def test_an_escrow_pays_for_one_job_only(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.reserve("0xaa", "job1")
    with pytest.raises(EscrowAlreadyUsed):
        ledger.reserve("0xaa", "job2")


def test_release_frees_only_running_reservations(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    ledger.reserve("0xaa", "job1")
    ledger.release("0xaa")
    ledger.reserve("0xaa", "job2")
    ledger.finish("0xaa", charge_wei=1, workers=[], amounts=[], coordinator_fee=1, results_root="")
    ledger.release("0xaa")
    assert ledger.get("0xaa").status == PENDING
