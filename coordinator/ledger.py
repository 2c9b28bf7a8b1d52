"""The coordinator's durable record of settlements, in SQLite (WAL).

A settlement row is written (`running`) when a paid job is accepted, so one escrow cannot
pay for two jobs; it becomes `pending` with its payouts when the job ends, and `settled`
once the transaction has landed. A coordinator that restarts finds its `pending` rows and
sends them again; the contract refuses a second settle, so nothing is paid twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from shardnet.errors import ShardnetError

RUNNING, PENDING, SETTLED, FAILED = "running", "pending", "settled", "failed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS settlements (
    escrow_job_id   TEXT PRIMARY KEY,          -- 0x hex of the bytes32 job id on chain
    job_id          TEXT NOT NULL,             -- the coordinator's job id
    status          TEXT NOT NULL CHECK (status IN ('running', 'pending', 'settled', 'failed')),
    charge_wei      TEXT NOT NULL DEFAULT '0',
    workers         TEXT NOT NULL DEFAULT '[]',  -- JSON list of addresses
    amounts         TEXT NOT NULL DEFAULT '[]',  -- JSON list of decimal wei strings
    coordinator_fee TEXT NOT NULL DEFAULT '0',
    results_root    TEXT NOT NULL DEFAULT '',
    tx_hash         TEXT,
    gas_used        INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS settlements_status ON settlements (status);

CREATE TABLE IF NOT EXISTS verdicts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL,
    shard           INTEGER NOT NULL,
    outcome         TEXT NOT NULL,             -- shardnet.verification.Outcome values
    primary_worker  TEXT NOT NULL,
    checker_worker  TEXT NOT NULL,
    referee         TEXT NOT NULL,
    loser           TEXT,                      -- NULL when nobody was at fault
    reason          TEXT NOT NULL,
    offending       TEXT,                      -- the loser's signed receipt (JSON)
    witness         TEXT,                      -- a conflicting signed receipt (JSON)
    slash_status    TEXT NOT NULL CHECK (slash_status IN ('none', 'pending', 'slashed', 'failed')),
    slash_tx        TEXT,
    slash_error     TEXT,
    created_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_slash ON verdicts (slash_status);

CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    request_key     TEXT UNIQUE NOT NULL,      -- the escrow id, or the client's request key
    escrow_id       TEXT,
    model_name      TEXT NOT NULL,
    model_sha256    TEXT NOT NULL,
    output_names    TEXT NOT NULL,             -- JSON list
    rows            INTEGER,                   -- NULL: not batched
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    inputs_path     TEXT NOT NULL,
    inputs_digest   TEXT NOT NULL,             -- a repeat must carry the same inputs
    outputs_path    TEXT,
    result          TEXT,                      -- JSON: shards, verdicts, receipts
    error           TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
"""


class EscrowAlreadyUsed(ShardnetError):
    """The escrow job id already paid (or is paying) for another job."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class SettlementRow:
    escrow_job_id: str
    job_id: str
    status: str
    charge_wei: int
    workers: tuple[str, ...]
    amounts: tuple[int, ...]
    coordinator_fee: int
    results_root: str
    tx_hash: str | None
    gas_used: int | None
    attempts: int
    last_error: str | None


class Ledger:
    def __init__(self, path: Path | None) -> None:
        """`path` None keeps the ledger in memory: nothing survives a restart."""
        self.path = path
        self._db = sqlite3.connect(
            ":memory:" if path is None else Path(path), isolation_level=None
        )  # autocommit
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a settled payment must survive power loss
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def reserve(self, escrow_job_id: str, job_id: str) -> None:
        """Claim an escrow for a job; fails if the escrow was claimed before."""
        now = time.time()
        try:
            self._db.execute(
                "INSERT INTO settlements (escrow_job_id, job_id, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (escrow_job_id, job_id, RUNNING, now, now),
            )
        except sqlite3.IntegrityError:
            raise EscrowAlreadyUsed(
                f"escrow job {escrow_job_id} already paid for another job; open a new one"
            ) from None

    def release(self, escrow_job_id: str) -> None:
        """Forget a reservation whose job never started (e.g. rejected input)."""
        self._db.execute(
            "DELETE FROM settlements WHERE escrow_job_id = ? AND status = ?",
            (escrow_job_id, RUNNING),
        )

    def finish(
        self,
        escrow_job_id: str,
        *,
        charge_wei: int,
        workers: list[str],
        amounts: list[int],
        coordinator_fee: int,
        results_root: str,
    ) -> None:
        """Record the payouts of a finished job; from now on it must land on chain."""
        self._db.execute(
            "UPDATE settlements SET status = ?, charge_wei = ?, workers = ?, amounts = ?,"
            " coordinator_fee = ?, results_root = ?, updated_at = ?"
            " WHERE escrow_job_id = ? AND status = ?",
            (
                PENDING,
                str(charge_wei),
                json.dumps(workers),
                json.dumps([str(a) for a in amounts]),
                str(coordinator_fee),
                results_root,
                time.time(),
                escrow_job_id,
                RUNNING,
            ),
        )

    def revise(
        self,
        escrow_job_id: str,
        *,
        workers: list[str],
        amounts: list[int],
        charge_wei: int,
        note: str,
    ) -> None:
        """Change a pending settlement's payees (e.g. drop one that is no longer staked)."""
        self._db.execute(
            "UPDATE settlements SET workers = ?, amounts = ?, charge_wei = ?, last_error = ?,"
            " updated_at = ? WHERE escrow_job_id = ? AND status = ?",
            (
                json.dumps(workers),
                json.dumps([str(a) for a in amounts]),
                str(charge_wei),
                note,
                time.time(),
                escrow_job_id,
                PENDING,
            ),
        )

    def settled(self, escrow_job_id: str, tx_hash: str | None, gas_used: int | None) -> None:
        self._db.execute(
            "UPDATE settlements SET status = ?, tx_hash = ?, gas_used = ?, last_error = NULL,"
            " updated_at = ? WHERE escrow_job_id = ?",
            (SETTLED, tx_hash, gas_used, time.time(), escrow_job_id),
        )

    def attempt_failed(self, escrow_job_id: str, error: str) -> None:
        self._db.execute(
            "UPDATE settlements SET attempts = attempts + 1, last_error = ?, updated_at = ?"
            " WHERE escrow_job_id = ?",
            (error, time.time(), escrow_job_id),
        )

    def failed(self, escrow_job_id: str, error: str) -> None:
        self._db.execute(
            "UPDATE settlements SET status = ?, attempts = attempts + 1, last_error = ?,"
            " updated_at = ? WHERE escrow_job_id = ?",
            (FAILED, error, time.time(), escrow_job_id),
        )

    # --- verdicts ---------------------------------------------------------------------

    def add_verdict(
        self,
        *,
        job_id: str,
        shard: int,
        outcome: str,
        primary: str,
        checker: str,
        referee: str,
        loser: str | None,
        reason: str,
        offending: str | None,
        witness: str | None,
        slash: bool,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO verdicts (job_id, shard, outcome, primary_worker, checker_worker,"
            " referee, loser, reason, offending, witness, slash_status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                shard,
                outcome,
                primary,
                checker,
                referee,
                loser,
                reason,
                offending,
                witness,
                "pending" if slash else "none",
                time.time(),
            ),
        )
        return int(cursor.lastrowid)

    def verdicts(self, *, job_id: str | None = None, slash_status: str | None = None) -> list[dict]:
        where, args = [], []
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        if slash_status is not None:
            where.append("slash_status = ?")
            args.append(slash_status)
        cursor = self._db.execute(
            "SELECT * FROM verdicts"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id",
            args,
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def slash_done(self, verdict_id: int, *, tx_hash: str | None, error: str | None) -> None:
        self._db.execute(
            "UPDATE verdicts SET slash_status = ?, slash_tx = ?, slash_error = ? WHERE id = ?",
            ("slashed" if error is None else "failed", tx_hash, error, verdict_id),
        )

    def slash_attempt_failed(self, verdict_id: int, error: str) -> None:
        self._db.execute("UPDATE verdicts SET slash_error = ? WHERE id = ?", (error, verdict_id))

    # --- jobs that can be resumed or fetched again ------------------------------------

    def add_job(
        self,
        *,
        job_id: str,
        request_key: str,
        escrow_id: str | None,
        model_name: str,
        model_sha256: str,
        output_names: list[str],
        rows: int | None,
        inputs_path: str,
        inputs_digest: str,
    ) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO jobs (job_id, request_key, escrow_id, model_name, model_sha256,"
            " output_names, rows, status, inputs_path, inputs_digest, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (
                job_id,
                request_key,
                escrow_id,
                model_name,
                model_sha256,
                json.dumps(output_names),
                rows,
                inputs_path,
                inputs_digest,
                now,
                now,
            ),
        )

    def job_done(
        self,
        job_id: str,
        *,
        status: str,
        outputs_path: str | None = None,
        result: str | None = None,
        error: str | None = None,
    ) -> None:
        self._db.execute(
            "UPDATE jobs SET status = ?, outputs_path = ?, result = ?, error = ?,"
            " updated_at = ? WHERE job_id = ?",
            (status, outputs_path, result, error, time.time(), job_id),
        )

    def job_by_key(self, request_key: str) -> dict | None:
        rows = self._jobs("WHERE request_key = ?", (request_key,))
        return rows[0] if rows else None

    def jobs_with_status(self, status: str) -> list[dict]:
        return self._jobs("WHERE status = ? ORDER BY created_at", (status,))

    def _jobs(self, where: str, args: tuple) -> list[dict]:
        cursor = self._db.execute(f"SELECT * FROM jobs {where}", args)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def get(self, escrow_job_id: str) -> SettlementRow | None:
        rows = self._select("WHERE escrow_job_id = ?", (escrow_job_id,))
        return rows[0] if rows else None

    def recent_settlements(self, limit: int) -> list[SettlementRow]:
        return self._select("ORDER BY created_at DESC LIMIT ?", (limit,))

    def with_status(self, status: str) -> list[SettlementRow]:
        return self._select("WHERE status = ? ORDER BY created_at", (status,))

    def _select(self, where: str, args: tuple) -> list[SettlementRow]:
        cursor = self._db.execute(
            "SELECT escrow_job_id, job_id, status, charge_wei, workers, amounts,"
            " coordinator_fee, results_root, tx_hash, gas_used, attempts, last_error"
            f" FROM settlements {where}",
            args,
        )
        return [
            SettlementRow(
                r[0],
                r[1],
                r[2],
                int(r[3]),
                tuple(json.loads(r[4])),
                tuple(int(a) for a in json.loads(r[5])),
                int(r[6]),
                r[7],
                r[8],
                r[9],
                r[10],
                r[11],
            )
            for r in cursor.fetchall()
        ]
