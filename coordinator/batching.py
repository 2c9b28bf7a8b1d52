"""Dynamic batching (as in Triton): small requests for the same model that arrive within
`max_queue_delay` of each other run as one job, so many single-row clients cost a few
shards instead of one round trip each. Each request gets back exactly its own rows.

Only unpaid requests of batched models are merged: a paid request has its own escrow and
settles on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from shardnet.protocol.tensors import decode_raw, to_raw

# (name, datatype, shape, raw)
Output = tuple[str, str, list[int], bytes]


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    context: object  # passed to `run` (the first request's, for the whole batch)
    future: asyncio.Future = field(repr=False)


def split_rows(outputs: list[Output], sizes: list[int]) -> list[list[Output]]:
    """Cut each output along dim 0 into consecutive pieces of `sizes` rows."""
    pieces: list[list[Output]] = [[] for _ in sizes]
    for name, datatype, shape, raw in outputs:
        array = decode_raw(raw, datatype, shape, name)
        start = 0
        for i, size in enumerate(sizes):
            part = array[start : start + size]
            start += size
            _, part_raw = to_raw(part)
            pieces[i].append((name, datatype, [size, *shape[1:]], part_raw))
    return pieces


class DynamicBatcher:
    """Merges concurrent requests per key (model version and requested outputs)."""

    def __init__(
        self,
        run: Callable[[object, dict[str, np.ndarray], int], Awaitable[tuple[list[Output], object]]],
        *,
        max_delay_s: float,
        max_rows: int,
    ) -> None:
        self.run = run
        self.max_delay_s = max_delay_s
        self.max_rows = max_rows
        self._queues: dict[tuple, list[_Pending]] = {}
        self._timers: dict[tuple, asyncio.Task] = {}

    async def submit(
        self, key: tuple, inputs: dict[str, np.ndarray], rows: int, context: object = None
    ):
        """Run `inputs` (with others of the same `key` that arrive within the delay);
        return (outputs for these rows, the merged job's result)."""
        future = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(key, [])
        queue.append(_Pending(inputs, rows, context, future))
        if sum(p.rows for p in queue) >= self.max_rows:
            self._flush(key)
        elif key not in self._timers:
            self._timers[key] = asyncio.create_task(
                self._flush_later(key), name=f"batcher.flush[{key[0][:12]}]"
            )
        return await future

    async def _flush_later(self, key: tuple) -> None:
        await asyncio.sleep(self.max_delay_s)
        self._timers.pop(key, None)
        self._flush(key)

    def _flush(self, key: tuple) -> None:
        batch = self._queues.pop(key, [])
        timer = self._timers.pop(key, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        batch = [p for p in batch if not p.future.done()]  # callers that gave up
        if batch:
            task = asyncio.create_task(self._run_batch(batch), name="batcher.run")
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        names = list(batch[0].inputs)
        merged = {n: np.concatenate([p.inputs[n] for p in batch]) for n in names}
        try:
            outputs, result = await self.run(batch[0].context, merged, sum(p.rows for p in batch))
        except BaseException as exc:  # every caller of the batch gets the job's error
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for p, piece in zip(batch, split_rows(outputs, [p.rows for p in batch]), strict=True):
            if not p.future.done():
                p.future.set_result((piece, result))
