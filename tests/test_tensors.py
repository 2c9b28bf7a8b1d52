"""The tensor codec and request validation, without a network."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shardnet.errors import InvalidRequest
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol.tensors import (
    DATATYPES,
    add_inputs,
    decode_raw,
    decode_request_inputs,
    to_raw,
)
from shardnet.signature import ModelSignature, TensorSpec, select_outputs, validate_inputs

NUMERIC = [n for n in DATATYPES if n != "BYTES"]


@given(
    st.sampled_from(NUMERIC).flatmap(
        lambda name: hnp.arrays(
            DATATYPES[name], hnp.array_shapes(min_dims=0, max_dims=4, min_side=0)
        )
    )
)
def test_raw_round_trip_is_exact(array):
    datatype, raw = to_raw(array)
    back = decode_raw(raw, datatype, array.shape, "t")
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bit-exact, NaN payloads included


def test_bytes_round_trip():
    array = np.array([[b"a", b""], [b"\x00\xff", "text"]], dtype=object)
    datatype, raw = to_raw(array)
    assert datatype == "BYTES"
    back = decode_raw(raw, datatype, [2, 2], "t")
    assert back.tolist() == [[b"a", b""], [b"\x00\xff", b"text"]]


def test_raw_decode_is_zero_copy():
    raw = np.arange(12, dtype="<f4").tobytes()
    array = decode_raw(raw, "FP32", [3, 4], "t")
    assert not array.flags.owndata


@pytest.mark.parametrize(
    ("raw", "datatype", "shape", "message"),
    [
        (b"\x00" * 7, "FP32", [2], "hold 7 bytes but .* needs 8"),
        (b"", "FP33", [1], "unknown datatype"),
        (b"", "FP32", [-1, 2], "negative dimension"),
        (b"", "FP32", [2**20, 2**20], "over the limit"),
        (b"\x05\x00\x00\x00ab", "BYTES", [1], "runs past the end"),
        (b"\x01\x00\x00\x00ab", "BYTES", [1], "1 bytes left"),
    ],
)
def test_bad_raw_contents_are_rejected(raw, datatype, shape, message):
    with pytest.raises(InvalidRequest, match=message):
        decode_raw(raw, datatype, shape, "t")


def test_typed_contents_are_accepted():
    request = pb.ModelInferRequest()
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    assert decode_request_inputs(request)["x"].tolist() == [[1, 2], [3, 4]]


def test_raw_and_typed_contents_together_are_rejected():
    request = pb.ModelInferRequest()
    add_inputs(request, {"x": np.zeros(2, np.float32)})
    request.inputs[0].contents.fp32_contents.append(1)
    with pytest.raises(InvalidRequest, match="both"):
        decode_request_inputs(request)


SIG = ModelSignature(
    "m",
    "0" * 64,
    (TensorSpec("x", "FP32", (-1, 4)), TensorSpec("ids", "INT64", (-1,))),
    (TensorSpec("y", "FP32", (-1, 2)),),
)


def test_validate_returns_batch_rows():
    rows = validate_inputs(SIG, {"x": np.zeros((5, 4), np.float32), "ids": np.zeros(5, np.int64)})
    assert rows == 5


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.zeros((5, 4), np.float32)}, "missing input"),
        ({"x": np.zeros((5, 4)), "ids": np.zeros(5, np.int64)}, "is FP32, got FP64"),
        ({"x": np.zeros((5, 3), np.float32), "ids": np.zeros(5, np.int64)}, "has shape"),
        ({"x": np.zeros((5, 4), np.float32), "ids": np.zeros(4, np.int64)}, "disagree"),
        ({"x": np.zeros((0, 4), np.float32), "ids": np.zeros(0, np.int64)}, "empty batch"),
        (
            {"x": np.zeros((1, 4), np.float32), "ids": np.zeros(1, np.int64), "z": np.zeros(1)},
            "no input 'z'",
        ),
    ],
)
def test_validate_rejects(inputs, message):
    with pytest.raises(InvalidRequest, match=message):
        validate_inputs(SIG, inputs)


def test_select_outputs():
    assert select_outputs(SIG, []) == ["y"]
    with pytest.raises(InvalidRequest, match="no output 'q'"):
        select_outputs(SIG, ["q"])
