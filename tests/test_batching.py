"""Dynamic batching: concurrent small requests merge into one job and each gets its rows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from shardnet.coordinator.batching import DynamicBatcher, split_rows
from shardnet.protocol.tensors import to_raw


def out(name, array):
    datatype, raw = to_raw(array)
    return (name, datatype, list(array.shape), raw)


def test_split_rows_gives_each_caller_its_rows():
    y = np.arange(12, dtype=np.float32).reshape(6, 2)
    pieces = split_rows([out("y", y)], [1, 3, 2])
    got = [np.frombuffer(p[0][3], np.float32).reshape(p[0][2]) for p in pieces]
    assert [g.tolist() for g in got] == [y[:1].tolist(), y[1:4].tolist(), y[4:].tolist()]


def test_concurrent_requests_are_merged_into_one_run():
    calls = []

    async def run(context, inputs, rows):
        calls.append(rows)
        await asyncio.sleep(0)
        return [out("y", inputs["x"] * 2)], "job"

    async def scenario():
        batcher = DynamicBatcher(run, max_delay_s=0.05, max_rows=1000)
        xs = [np.full((1, 3), i, np.float32) for i in range(8)]
        results = await asyncio.gather(*(batcher.submit(("k",), {"x": x}, 1) for x in xs))
        for x, (outputs, job) in zip(xs, results, strict=True):
            assert np.frombuffer(outputs[0][3], np.float32).tolist() == (x * 2).ravel().tolist()
            assert job == "job"

    asyncio.run(scenario())
    assert calls == [8]


def test_a_full_batch_runs_without_waiting_and_errors_reach_every_caller():
    async def run(context, inputs, rows):
        raise ValueError(f"boom {rows}")

    async def scenario():
        batcher = DynamicBatcher(run, max_delay_s=60, max_rows=2)
        one = {"x": np.zeros((1, 3), np.float32)}
        results = await asyncio.wait_for(
            asyncio.gather(
                batcher.submit(("k",), one, 1),
                batcher.submit(("k",), one, 1),
                return_exceptions=True,
            ),
            timeout=5,
        )
        assert [str(r) for r in results] == ["boom 2", "boom 2"]

    asyncio.run(scenario())


@pytest.mark.parametrize("sizes", [[1], [2, 2], [5, 1, 0]])
def test_split_rows_covers_every_row(sizes):
    y = np.arange(sum(sizes) * 2, dtype=np.int64).reshape(-1, 2)
    pieces = split_rows([out("y", y)], sizes)
    joined = b"".join(p[0][3] for p in pieces)
    assert joined == y.tobytes()


@pytest.mark.slow
def test_concurrent_clients_share_jobs_and_get_their_own_rows(fresh_network, reference):
    from concurrent.futures import ThreadPoolExecutor

    from shardnet.client import Client
    from shardnet.demo import demo_inputs

    net = fresh_network
    net.start_coordinator("--max-queue-delay-ms", "20")
    net.start_worker("--intra-op-threads", "1")
    net.start_worker("--intra-op-threads", "1")
    net.wait_for_workers(2)
    xs = [demo_inputs(1 + i % 3, seed=i)["x"] for i in range(24)]
    with Client(net.coordinator.address) as client:
        client.infer("mlp", {"x": xs[0]})  # warm up connections

        def one(x):
            return client.infer("mlp", {"x": x})

        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(one, xs))
    for x, result in zip(xs, results, strict=True):
        assert result.outputs["logits"].tobytes() == reference(x)["logits"].tobytes()
    jobs = {r.job_ids[0] for r in results}
    assert len(jobs) < len(xs)  # some requests ran together
