"""Tensor codec for the Open Inference Protocol: numpy arrays <-> raw tensor contents.

Fixed-size datatypes travel as the array's C-order bytes (little-endian); BYTES tensors as
a 4-byte little-endian length before each element, as Triton does. Decoding raw contents is
zero-copy (`np.frombuffer`): the arrays are read-only views of the request's bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from shardnet.errors import InvalidRequest
from shardnet.protocol import inference_pb2 as pb

# KServe v2 datatype -> numpy dtype (explicitly little-endian).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# onnxruntime's type strings -> KServe datatype.
ONNX_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# Which InferTensorContents field carries each datatype when raw contents are not used.
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# No tensor may claim more elements than this (a guard before any allocation), nor more
# dimensions than numpy 1.x supports.
MAX_ELEMENTS = 1 << 31
MAX_DIMS = 32


def datatype_of(array: np.ndarray) -> str:
    """The KServe datatype name of a numpy array."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if name != "BYTES" and array.dtype.newbyteorder("<") == dtype:
            return name
    raise InvalidRequest(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")


def element_count(shape: Sequence[int], what: str) -> int:
    """Elements in a tensor of `shape`, after checking numpy can hold that shape without
    anyone allocating anything: no negative dimension, at most MAX_DIMS of them, and at most
    MAX_ELEMENTS in the product of the non-zero ones (numpy refuses a zero-size array whose
    other dimensions overflow, e.g. [0, 2**62, 2**62])."""
    if len(shape) > MAX_DIMS:
        raise InvalidRequest(f"{what}: shape has {len(shape)} dimensions, over {MAX_DIMS}")
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"{what}: shape {list(shape)} has a negative dimension")
    extent = math.prod(d for d in shape if d)
    if extent > MAX_ELEMENTS:
        raise InvalidRequest(
            f"{what}: shape {list(shape)} spans {extent} elements, over the limit of {MAX_ELEMENTS}"
        )
    return math.prod(shape)


# --- BYTES ---------------------------------------------------------------------------------


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, count: int, what: str) -> np.ndarray:
    if count * 4 > len(raw):  # before allocating `count` slots: a prefix per element
        raise InvalidRequest(
            f"{what}: {len(raw)} bytes cannot hold {count} BYTES elements "
            "(each needs a 4-byte length)"
        )
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidRequest(f"{what}: BYTES contents end before element {i} of {count}")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidRequest(f"{what}: BYTES element {i} runs past the end of the contents")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidRequest(f"{what}: {len(view) - offset} bytes left after {count} elements")
    return out


# --- decoding ------------------------------------------------------------------------------


def decode_raw(raw: bytes, datatype: str, shape: Sequence[int], what: str) -> np.ndarray:
    """Turn one raw tensor into an array, checking its byte length against its shape."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidRequest(f"{what}: unknown datatype {datatype!r}")
    count = element_count(shape, what)
    if datatype == "BYTES":
        return deserialize_bytes(raw, count, what).reshape(tuple(shape))
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidRequest(
            f"{what}: raw contents hold {len(raw)} bytes but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def _decode_contents(contents: pb.InferTensorContents, datatype: str, shape, what: str):
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(f"{what}: datatype {datatype} must be sent as raw contents")
    values = getattr(contents, field)
    count = element_count(shape, what)
    if len(values) != count:
        raise InvalidRequest(
            f"{what}: {field} has {len(values)} elements but shape {list(shape)} needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(tuple(shape))
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu":
        # The field is wider than the datatype (e.g. uint_contents for UINT8): check the
        # range instead of letting numpy raise OverflowError or wrap around.
        wide = np.asarray(values, dtype="<u8" if field == "uint64_contents" else "<i8")
        limits = np.iinfo(dtype)
        if wide.size and (wide.min() < limits.min or wide.max() > limits.max):
            raise InvalidRequest(
                f"{what}: {field} holds a value outside the range of {datatype} "
                f"[{limits.min}, {limits.max}]"
            )
        return wide.astype(dtype).reshape(tuple(shape))
    return np.asarray(values, dtype=dtype).reshape(tuple(shape))


def decode_request_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """All inputs of a ModelInfer request as arrays, keyed by name."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents entries"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        if tensor.name in arrays:
            raise InvalidRequest(f"{what} appears twice")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"{what}: both contents and raw_input_contents are set")
            arrays[tensor.name] = decode_raw(raw[i], tensor.datatype, tensor.shape, what)
        else:
            arrays[tensor.name] = _decode_contents(
                tensor.contents, tensor.datatype, tensor.shape, what
            )
    return arrays


def decode_response_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    if len(response.raw_output_contents) != len(response.outputs):
        raise InvalidRequest(
            f"response has {len(response.outputs)} outputs but "
            f"{len(response.raw_output_contents)} raw_output_contents entries"
        )
    return {
        t.name: decode_raw(raw, t.datatype, t.shape, f"output {t.name!r}")
        for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


# --- encoding ------------------------------------------------------------------------------


def to_raw(array: np.ndarray) -> tuple[str, bytes]:
    datatype = datatype_of(array)
    if datatype == "BYTES":
        return datatype, serialize_bytes(array)
    return datatype, np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


def add_inputs(request: pb.ModelInferRequest, arrays: Mapping[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        datatype, raw = to_raw(np.asarray(array))
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(raw)


def add_outputs(response: pb.ModelInferResponse, arrays: Iterable[tuple[str, np.ndarray]]) -> None:
    for name, array in arrays:
        datatype, raw = to_raw(np.asarray(array))
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(raw)


# --- parameters ----------------------------------------------------------------------------


def param_value(param: pb.InferParameter) -> bool | int | float | str | None:
    kind = param.WhichOneof("parameter_choice")
    return None if kind is None else getattr(param, kind)


def set_param(params, key: str, value: bool | int | float | str) -> None:
    """Set one entry of a protobuf `map<string, InferParameter>`."""
    if isinstance(value, bool):
        params[key].bool_param = value
    elif isinstance(value, int):
        params[key].int64_param = value
    elif isinstance(value, float):
        params[key].double_param = value
    else:
        params[key].string_param = str(value)
