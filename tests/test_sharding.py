"""Pure sharding logic: properties over many generated cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.sharding import (
    WorkerId,
    apportion,
    effective_rates,
    ewma,
    plan_shards,
    shard_timeout,
)

rates_st = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=4).map(WorkerId),
    st.floats(min_value=0.01, max_value=1e6, allow_nan=False),
    min_size=1,
    max_size=8,
)


@given(st.integers(0, 100_000), rates_st, st.integers(1, 4), st.integers(1, 64))
def test_every_row_in_exactly_one_shard_in_order(rows, rates, per_worker, min_rows):
    shards = plan_shards(rows, rates, shards_per_worker=per_worker, min_shard_rows=min_rows)
    covered = [r for s in shards for r in range(s.start, s.stop)]
    assert covered == list(range(rows))
    assert [s.index for s in shards] == list(range(len(shards)))
    assert all(s.rows > 0 for s in shards)
    assert all(s.worker in rates for s in shards)


@given(st.integers(1, 100_000), rates_st, st.integers(1, 4))
def test_shards_per_worker_bounded(rows, rates, per_worker):
    shards = plan_shards(rows, rates, shards_per_worker=per_worker)
    for worker in rates:
        assert sum(s.worker == worker for s in shards) <= per_worker


@given(st.integers(0, 1_000_000), rates_st)
def test_apportion_is_within_one_row_of_proportional(total, weights):
    counts = apportion(total, weights)
    assert sum(counts.values()) == total
    weight_sum = sum(weights.values())
    for key, w in weights.items():
        assert abs(counts[key] - total * w / weight_sum) < 1 + 1e-9


def test_split_is_proportional_to_rate():
    rates = {WorkerId("fast"): 300.0, WorkerId("slow"): 100.0}
    shards = plan_shards(4000, rates, shards_per_worker=2)
    per_worker = {w: sum(s.rows for s in shards if s.worker == w) for w in rates}
    assert per_worker == {"fast": 3000, "slow": 1000}
    assert len(shards) == 4


def test_empty_batch_has_no_shards():
    assert plan_shards(0, {WorkerId("a"): 1.0}) == []


def test_one_row_goes_to_the_fastest_worker():
    shards = plan_shards(1, {WorkerId("a"): 1.0, WorkerId("b"): 5.0}, min_shard_rows=8)
    assert [(s.start, s.stop, s.worker) for s in shards] == [(0, 1, "b")]


def test_small_batch_is_not_cut_below_min_shard_rows():
    rates = {WorkerId(c): 1.0 for c in "abcd"}
    shards = plan_shards(20, rates, shards_per_worker=4, min_shard_rows=8)
    assert len(shards) == 2 and all(s.rows == 10 for s in shards)


@pytest.mark.parametrize(
    "rates",
    [{}, {WorkerId("a"): 0.0}, {WorkerId("a"): -1.0}, {WorkerId("a"): math.nan}],
)
def test_no_usable_worker_is_an_error(rates):
    with pytest.raises(ValueError):
        plan_shards(10, rates)


def test_unmeasured_workers_get_rates_scaled_from_measured_ones():
    rates = effective_rates(
        {WorkerId("a"): 1000.0, WorkerId("b"): None},
        {WorkerId("a"): 2.0, WorkerId("b"): 4.0},
    )
    assert rates == {"a": 1000.0, "b": 2000.0}


def test_nothing_measured_uses_hardware_scores():
    scores = {WorkerId("a"): 2.0, WorkerId("b"): 16.0}
    assert effective_rates({WorkerId("a"): None, WorkerId("b"): None}, scores) == scores


def test_ewma():
    assert ewma(None, 10.0, 0.5) == 10.0
    assert ewma(10.0, 20.0, 0.5) == 15.0
    with pytest.raises(ValueError):
        ewma(1.0, 1.0, 0.0)


def test_shard_timeout_is_clamped():
    assert shard_timeout(100, 100.0, slack=4, floor_s=2, cap_s=60) == 4.0
    assert shard_timeout(1, 1e6, slack=4, floor_s=2, cap_s=60) == 2.0
    assert shard_timeout(10**9, 1.0, slack=4, floor_s=2, cap_s=60) == 60.0
