"""Durable jobs. A request that names an escrow (or a client request key) is written to
the ledger and its inputs to a spool folder before it runs, and its outputs after. So:

- a client that lost its connection (the coordinator crashed, the network broke) sends the
  same request again and gets the stored answer, or waits for the one still running;
- a coordinator killed mid-job finds the job `running` at restart, runs it again from its
  spooled inputs, and settles it once (the escrow was reserved before the crash).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np

from shardnet.coordinator.ledger import Ledger

Output = tuple[str, str, list[int], bytes]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


class JobStore:
    def __init__(self, ledger: Ledger, spool: Path | None) -> None:
        self.ledger = ledger
        self.spool = Path(spool) if spool is not None else None
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
        # Jobs running in this process, by request key: a retry waits on them.
        self.running: dict[str, asyncio.Future] = {}

    @property
    def enabled(self) -> bool:
        return self.spool is not None

    async def save_inputs(self, job_id: str, arrays: dict[str, np.ndarray]) -> str:
        assert self.spool is not None
        path = self.spool / f"{job_id}.inputs.npz"

        def write() -> None:
            import io

            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            _write_atomic(path, buffer.getvalue())

        await asyncio.to_thread(write)
        return str(path)

    def load_inputs(self, path: str) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    async def save_outputs(self, job_id: str, outputs: list[Output]) -> str:
        assert self.spool is not None
        path = self.spool / f"{job_id}.outputs"
        meta = [
            {"name": n, "datatype": d, "shape": list(s), "bytes": len(r)} for n, d, s, r in outputs
        ]
        header = json.dumps(meta).encode()
        blob = len(header).to_bytes(8, "little") + header + b"".join(r for *_, r in outputs)
        await asyncio.to_thread(_write_atomic, path, blob)
        return str(path)

    def load_outputs(self, path: str) -> list[Output]:
        blob = Path(path).read_bytes()
        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8 : 8 + size])
        out, offset = [], 8 + size
        for m in meta:
            out.append((m["name"], m["datatype"], m["shape"], blob[offset : offset + m["bytes"]]))
            offset += m["bytes"]
        return out

    def forget_inputs(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)
