"""Pure verification logic: sampling, dtype-aware comparison, verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardnet.protocol.tensors import to_raw
from shardnet.verification import (
    Outcome,
    compare,
    detection_probability,
    judge,
    parse_tolerances,
    should_check,
)


def t(name, array):
    datatype, raw = to_raw(np.asarray(array))
    return (name, datatype, list(np.shape(array)), raw)


def test_sampling_rate_is_p_and_depends_on_the_seed():
    n = 20_000
    picked = sum(should_check(b"seed", "job", i, 0.1) for i in range(n))
    assert abs(picked / n - 0.1) < 0.01
    assert [should_check(b"a", "j", i, 0.5) for i in range(64)] != [
        should_check(b"b", "j", i, 0.5) for i in range(64)
    ]
    assert not any(should_check(b"s", "j", i, 0.0) for i in range(100))
    assert all(should_check(b"s", "j", i, 1.0) for i in range(100))


def test_detection_probability():
    assert detection_probability(0.1, 1) == pytest.approx(0.1)
    assert detection_probability(0.1, 10) == pytest.approx(1 - 0.9**10)


@given(st.floats(-1e6, 1e6, allow_nan=False), st.floats(-1e-6, 1e-6))
@settings(max_examples=200)
def test_fp32_within_tolerance_agrees(value, jitter):
    a = np.float32(value)
    b = np.float32(value * (1 + 1e-6) + jitter)
    assert compare([t("y", [a])], [t("y", [b])]) is None


def test_fp32_beyond_tolerance_differs():
    assert "element 1" in compare([t("y", [1.0, 2.0])], [t("y", [1.0, 2.01])])


def test_integers_and_bytes_are_exact():
    assert compare([t("i", np.array([1, 2], np.int64))], [t("i", np.array([1, 3], np.int64))])
    assert compare([t("s", np.array([b"a"], object))], [t("s", np.array([b"b"], object))])
    assert compare([t("i", np.array([7], np.int32))], [t("i", np.array([7], np.int32))]) is None


def test_nan_and_inf():
    nan, inf = float("nan"), float("inf")
    assert compare([t("y", np.float32([nan, inf]))], [t("y", np.float32([nan, inf]))]) is None
    assert "NaN" in compare([t("y", np.float32([nan]))], [t("y", np.float32([1.0]))])
    assert compare([t("y", np.float32([inf]))], [t("y", np.float32([-inf]))])


def test_shape_and_name_mismatch():
    assert "different outputs" in compare([t("a", [1.0])], [t("b", [1.0])])
    assert "FP32" in compare([t("a", np.float32([1.0]))], [t("a", np.float32([1.0, 2.0]))])


def test_judge():
    assert judge(True, False) is Outcome.CHECKER_WRONG
    assert judge(False, True) is Outcome.PRIMARY_WRONG
    assert judge(False, False) is Outcome.BOTH_WRONG
    assert judge(True, True) is Outcome.NO_FAULT


def test_parse_tolerances():
    tol = parse_tolerances(["fp32=1e-3,1e-2"])
    assert (tol["FP32"].atol, tol["FP32"].rtol) == (1e-3, 1e-2)
    with pytest.raises(ValueError):
        parse_tolerances(["FP32=1e-3"])
