"""Settlement arithmetic: value is conserved and shares are proportional."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardnet.settlement import digest, merkle_root, quote, split_payment

rows_st = st.dictionaries(
    st.text("0123456789abcdef", min_size=4, max_size=4).map(lambda s: "0x" + s),
    st.integers(0, 10**9),
    max_size=12,
)


@given(st.integers(0, 10**30), st.integers(0, 10_000), rows_st)
def test_split_conserves_value(charge, fee_bps, rows):
    payout = split_payment(charge, fee_bps, rows)
    assert payout.total == charge
    assert all(a >= 0 for a in payout.amounts)
    assert set(payout.workers) == {w for w, r in rows.items() if r > 0}


@given(st.integers(0, 10**24), st.integers(0, 10_000), rows_st)
def test_split_is_proportional_to_rows(charge, fee_bps, rows):
    payout = split_payment(charge, fee_bps, rows)
    if not payout.workers:
        return
    assert payout.coordinator_fee == charge * fee_bps // 10_000
    pool = charge - payout.coordinator_fee
    total_rows = sum(rows.values())
    for worker, amount in zip(payout.workers, payout.amounts, strict=True):
        exact = pool * rows[worker] / total_rows
        assert abs(amount - exact) <= 1 + exact * 1e-12


def test_example_split():
    payout = split_payment(1000, 500, {"0xb": 1, "0xa": 3})
    assert payout.workers == ("0xa", "0xb")
    assert payout.amounts == (713, 237) and payout.coordinator_fee == 50


def test_quote():
    assert quote(100, 7) == 700
    assert quote(0, 7, minimum_wei=5) == 5
    with pytest.raises(ValueError):
        quote(-1, 7)


def test_merkle_root():
    a, b, c = (digest(x) for x in (b"a", b"b", b"c"))
    assert merkle_root([]) == bytes(32)
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == digest(a + b)
    assert merkle_root([a, b, c]) == digest(digest(a + b) + digest(c + c))
    assert merkle_root([b, a]) != merkle_root([a, b])
