"""Bad and hostile input against a real coordinator and real workers.

Every hostile call must end in a clear client-side status (never INTERNAL or UNKNOWN) with
a message, or — when hypothesis happens to build a valid request — in the answer in-process
onnxruntime gives. After each hostile call the target still answers a good request, and the
module ends by checking the whole network: processes alive, the same three workers live,
nothing failed or disputed, answers equal to the reference.
"""

from __future__ import annotations

import math
import socket
import ssl
import struct

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shardnet.demo import demo_inputs
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol import shardnet_v1_pb2 as v1
from shardnet.protocol import shardnet_v1_pb2_grpc as v1_grpc
from shardnet.protocol.tensors import (
    _CONTENTS_FIELD,
    DATATYPES,
    add_inputs,
    decode_request_inputs,
)

pytestmark = pytest.mark.slow

CLEAR = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}
D_IN = 64  # the demo MLP: x[N, 64] FP32 -> logits[N, 10], probs[N, 10]
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


# --- strategy library ----------------------------------------------------------------------

# Text protobuf accepts (valid UTF-8: no lone surrogates).
texts = st.text(st.characters(codec="utf-8"), max_size=40)
huge_texts = st.integers(1_000, 200_000).map(lambda n: "w" * n)

model_names = st.sampled_from(["mlp", "mlp", "mlp", "", "MLP", "nope"]) | texts
model_versions = st.just("") | st.sampled_from(["0" * 64, "latest", "1"]) | texts

# Known datatypes, as well as names no server knows.
datatype_names = st.sampled_from(sorted(DATATYPES)) | st.sampled_from(
    ["fp32", "FLOAT", "FP8", "BF16", ""]
)

# Dimensions: small ones (valid requests come out of these), the "any" marker, negatives, and
# sizes that would take terabytes if a server believed them.
small_dims = st.integers(0, 8)
absurd_dims = st.sampled_from([-1, -2, -(2**63), 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1])
dims = st.one_of(small_dims, st.just(D_IN), absurd_dims)
shapes = st.one_of(
    st.tuples(st.integers(0, 8), st.sampled_from([D_IN, D_IN, D_IN - 1, 0])).map(list),
    st.lists(dims, max_size=6),
    st.integers(33, 80).map(lambda n: [1] * n),  # more dimensions than numpy allows
    st.lists(st.sampled_from([0, 1, 2**62, 2**63 - 1]), min_size=2, max_size=4),  # 0 x huge
)
huge_shapes = st.lists(st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1]), min_size=1, max_size=3)

input_names = st.sampled_from(["x", "x", "x", "y", ""])
output_names = st.sampled_from(["logits", "probs", "nope", ""])


def _count(shape: list[int]) -> int | None:
    """Elements a shape holds, or None when it is not a small valid shape."""
    if any(d < 0 for d in shape):
        return None
    count = math.prod(shape)
    return count if count <= 1 << 16 else None


def _fill(seed: bytes, length: int) -> bytes:
    return (seed * (length // len(seed) + 1))[:length]


def raw_contents(datatype: str, shape: list[int]) -> st.SearchStrategy[bytes]:
    """Bytes of exactly the right length (when the shape is small), a few bytes off, or any
    length at all."""
    arbitrary = st.binary(max_size=64) | st.tuples(
        st.binary(min_size=1, max_size=8), st.integers(0, 1 << 16)
    ).map(lambda t: _fill(*t))
    count = _count(shape)
    dtype = DATATYPES.get(datatype)
    if count is None or dtype is None or datatype == "BYTES":
        return arbitrary
    need = count * dtype.itemsize
    exact = st.binary(min_size=need, max_size=need) if need <= 4096 else st.just(b"\x00" * need)
    near = st.integers(-3, 3).filter(lambda k: need + k >= 0).map(lambda k: b"\x7f" * (need + k))
    return st.one_of(exact, exact, near, arbitrary)


def bytes_elements(count: int) -> st.SearchStrategy[bytes]:
    """A BYTES tensor: well-formed, or with length prefixes that lie."""
    items = st.lists(st.binary(max_size=6), min_size=count, max_size=count)
    good = items.map(lambda xs: b"".join(struct.pack("<I", len(x)) + x for x in xs))
    lying_prefix = st.tuples(
        st.sampled_from([2**32 - 1, 2**31, 7, 0x7FFFFFFF]), st.binary(max_size=6)
    ).map(lambda t: struct.pack("<I", t[0]) + t[1])
    truncated_prefix = st.binary(min_size=1, max_size=3)
    return st.one_of(good, good.map(lambda b: b + b"\x01"), lying_prefix, truncated_prefix)


_VALUES = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),  # NaN and infinities included
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=8),
}


@st.composite
def typed_contents(draw, shape: list[int], datatype: str = "") -> pb.InferTensorContents:
    """Typed contents in the field of `datatype` or any other, with the right element
    count or a wrong one; values span each field's whole range."""
    own = _CONTENTS_FIELD.get(datatype)
    any_field = st.sampled_from(sorted(_VALUES))
    field = draw(st.one_of(st.just(own), any_field) if own else any_field)
    count = _count(shape)
    size = count if count is not None and count <= 512 and draw(st.booleans()) else None
    if size is None:
        size = draw(st.integers(0, 70))
    values = draw(st.lists(_VALUES[field], min_size=size, max_size=size))
    return pb.InferTensorContents(**{field: values})


finite_or_not = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.just(D_IN)),
    elements=st.floats(width=32) | st.sampled_from([np.inf, -np.inf, np.nan]),
)


def raw_request(shape: list[int], raw: bytes, datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


def _parameters(draw, params) -> None:
    for key in draw(st.lists(st.sampled_from(["shardnet.nope", "priority", "x"]) | texts)):
        kind = draw(st.sampled_from(["bool_param", "int64_param", "string_param", "none"]))
        if kind == "bool_param":
            params[key].bool_param = True
        elif kind == "int64_param":
            params[key].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
        elif kind == "string_param":
            params[key].string_param = draw(texts)
        else:
            params[key].CopyFrom(pb.InferParameter())


def _tensor_contents(draw, request, tensor, i: int) -> None:
    """New contents for input `i` that fit its (possibly mutated) datatype and shape, or
    not: raw bytes, length-prefixed BYTES, or typed contents."""
    shape, count = list(tensor.shape), _count(list(tensor.shape))
    kind = draw(st.sampled_from(["raw", "raw", "typed"]))
    if kind == "typed" or i >= len(request.raw_input_contents):
        tensor.contents.CopyFrom(draw(typed_contents(shape, tensor.datatype)))
    elif tensor.datatype == "BYTES" and count is not None and count <= 64:
        request.raw_input_contents[i] = draw(bytes_elements(count))
    else:
        request.raw_input_contents[i] = draw(raw_contents(tensor.datatype, shape))


# One fault each; a request gets none (it is valid), one or several.
MUTATIONS = {
    "model": lambda draw, r: setattr(r, "model_name", draw(model_names)),
    "version": lambda draw, r: setattr(r, "model_version", draw(model_versions)),
    "input name": lambda draw, r: setattr(r.inputs[0], "name", draw(input_names)),
    "datatype": lambda draw, r: setattr(r.inputs[0], "datatype", draw(datatype_names)),
    "shape": lambda draw, r: r.inputs[0].shape.__setitem__(slice(None), draw(shapes)),
    "contents": lambda draw, r: _tensor_contents(draw, r, r.inputs[0], 0),
    "typed and raw": lambda draw, r: r.inputs[0].contents.CopyFrom(
        draw(typed_contents(list(r.inputs[0].shape)))
    ),
    "raw count": lambda draw, r: (
        r.raw_input_contents.append(draw(st.binary(max_size=16)))
        if draw(st.booleans())
        else r.ClearField("raw_input_contents")
    ),
    "more inputs": lambda draw, r: _more_inputs(draw, r),
    "outputs": lambda draw, r: r.outputs.extend(
        pb.ModelInferRequest.InferRequestedOutputTensor(name=n)
        for n in draw(st.lists(output_names, min_size=1, max_size=3))
    ),
    "parameters": lambda draw, r: _parameters(draw, r.parameters),
    "id": lambda draw, r: setattr(r, "id", draw(texts | huge_texts)),
}


def _more_inputs(draw, request) -> None:
    for _ in range(draw(st.integers(1, 2))):
        tensor = request.inputs.add(
            name=draw(input_names), datatype=draw(datatype_names), shape=draw(shapes)
        )
        request.raw_input_contents.append(b"")
        _tensor_contents(draw, request, tensor, len(request.inputs) - 1)


@st.composite
def hostile_requests(draw) -> tuple[pb.ModelInferRequest, set[str]]:
    """A valid request for the demo MLP (NaN and infinities included), then none, one or
    several faults from MUTATIONS applied to it, in a fixed order."""
    request = pb.ModelInferRequest(model_name="mlp")
    add_inputs(request, {"x": draw(finite_or_not)})
    how_many = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3, 4]))
    faults = draw(st.sets(st.sampled_from(list(MUTATIONS)), min_size=how_many, max_size=how_many))
    if faults & {"datatype", "shape"}:
        faults.add("contents")  # new contents, which may fit the new datatype and shape
    for name in MUTATIONS:  # in order: datatype and shape before contents
        if name in faults:
            MUTATIONS[name](draw, request)
    return request, faults


# --- calling -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stubs(network):
    """One OIP stub for the coordinator and one per worker (over TLS), kept open."""
    targets = [network.coordinator, *network.workers]
    channels = [proc.channel() for proc in targets]
    yield {
        proc.name: pb_grpc.GRPCInferenceServiceStub(ch)
        for proc, ch in zip(targets, channels, strict=True)
    }
    for ch in channels:
        ch.close()


@pytest.fixture(scope="module")
def coordinator(network):
    with network.coordinator.channel() as channel:
        yield v1_grpc.CoordinatorStub(channel)


def expect_clear(call, request, allowed=CLEAR):
    """Make a call; return its response, or check it failed with a clear status."""
    try:
        return call(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in allowed, f"{exc.code().name}: {exc.details()}"
        assert exc.details(), f"{exc.code().name} with an empty message"
        return None


def assert_matches_reference(response: pb.ModelInferResponse, x: np.ndarray, reference):
    expected = reference(np.asarray(x, np.float32))
    assert len(response.outputs) == len(response.raw_output_contents) > 0
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        want = expected[tensor.name]
        got = np.frombuffer(raw, "<f4").reshape(tuple(tensor.shape))
        np.testing.assert_array_equal(got, want)  # exact; NaN only equal to NaN


def good_request(rows: int = 5, seed: int = 1) -> tuple[pb.ModelInferRequest, np.ndarray]:
    x = demo_inputs(rows, seed=seed)["x"]
    request = pb.ModelInferRequest(model_name="mlp")
    add_inputs(request, {"x": x})
    return request, x


def assert_serves(stub, reference) -> None:
    request, x = good_request()
    assert_matches_reference(stub.ModelInfer(request, timeout=30), x, reference)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


TARGETS = ["coordinator", "worker-1"]


# --- the Open Inference Protocol -----------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(case=hostile_requests())
def test_hostile_infer_requests_get_a_clear_status_or_the_right_answer(
    stubs, reference, target, case
):
    request, faults = case
    stub = stubs[target]
    response = expect_clear(stub.ModelInfer, request)
    event("refused" if response is None else "answered")
    if not faults:
        assert response is not None, "a valid request was refused"
    if response is not None:
        # hypothesis built a valid request: it must be answered correctly
        assert_matches_reference(response, decode_request_inputs(request)["x"], reference)
    assert_serves(stub, reference)


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=25)
@given(shape=huge_shapes, raw=st.binary(max_size=16), datatype=st.sampled_from(sorted(DATATYPES)))
def test_huge_dimensions_are_refused_without_allocating(
    network, stubs, reference, target, shape, raw, datatype
):
    proc = next(p for p in [network.coordinator, *network.workers] if p.name == target)
    before = rss_bytes(proc.pid)
    for candidate in (shape, [0, *shape], [*shape, 0]):
        response = expect_clear(stubs[target].ModelInfer, raw_request(candidate, raw, datatype))
        assert response is None
    assert rss_bytes(proc.pid) - before < 256 << 20
    assert_serves(stubs[target], reference)


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=20)
@given(x=finite_or_not)
def test_nan_and_infinities_are_valid_floats(stubs, reference, target, x):
    request = pb.ModelInferRequest(model_name="mlp")
    add_inputs(request, {"x": x})
    assert_matches_reference(stubs[target].ModelInfer(request, timeout=30), x, reference)


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=20)
@given(rows=st.integers(0, 6), extra=st.integers(-3, 3), seed=st.integers(0, 2**32 - 1))
def test_typed_contents_with_wrong_element_counts(stubs, reference, target, rows, extra, seed):
    need = rows * D_IN
    # Values from a seed: drawing up to ~400 floats one by one trips hypothesis's
    # data-size health checks; the count is what this test is about.
    count = max(0, need + extra)
    values = np.random.default_rng(seed).standard_normal(count).astype(np.float32).tolist()
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(
        name="x",
        datatype="FP32",
        shape=[rows, D_IN],
        contents=pb.InferTensorContents(fp32_contents=values),
    )
    response = expect_clear(stubs[target].ModelInfer, request)
    if rows > 0 and len(values) == need:
        assert response is not None
        assert_matches_reference(
            response, np.array(values, np.float32).reshape(rows, D_IN), reference
        )
    else:
        assert response is None
    assert_serves(stubs[target], reference)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "case",
    [
        pytest.param((DATATYPES["UINT8"], "uint_contents", [256]), id="uint8-overflow"),
        pytest.param((DATATYPES["INT8"], "int_contents", [-129]), id="int8-underflow"),
        pytest.param((DATATYPES["UINT16"], "uint_contents", [2**32 - 1]), id="uint16-overflow"),
        pytest.param((DATATYPES["INT16"], "int_contents", [2**31 - 1]), id="int16-overflow"),
    ],
)
def test_typed_contents_out_of_range_for_the_datatype(stubs, reference, target, case):
    dtype, field, values = case
    datatype = next(name for name, d in DATATYPES.items() if d == dtype)
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(
        name="x",
        datatype=datatype,
        shape=[len(values)],
        contents=pb.InferTensorContents(**{field: values}),
    )
    with pytest.raises(grpc.RpcError) as info:
        stubs[target].ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "range" in info.value.details()
    assert_serves(stubs[target], reference)


@pytest.mark.parametrize("target", TARGETS)
def test_bytes_tensor_claiming_billions_of_elements(network, stubs, reference, target):
    proc = next(p for p in [network.coordinator, *network.workers] if p.name == target)
    before = rss_bytes(proc.pid)
    for raw in (b"", b"\x00" * 4, struct.pack("<I", 2**32 - 1)):
        request = raw_request([2**31], raw, "BYTES")
        with pytest.raises(grpc.RpcError) as info:
            stubs[target].ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert rss_bytes(proc.pid) - before < 256 << 20
    assert_serves(stubs[target], reference)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("raw_entries", [0, 2, 5])
def test_raw_input_contents_count_mismatch(stubs, reference, target, raw_entries):
    request, _ = good_request()
    raw = request.raw_input_contents[0]
    del request.raw_input_contents[:]
    request.raw_input_contents.extend([raw] * raw_entries)
    with pytest.raises(grpc.RpcError) as info:
        stubs[target].ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert_serves(stubs[target], reference)


@pytest.mark.parametrize("target", TARGETS)
def test_large_message_with_a_lying_shape_is_refused(stubs, reference, target):
    """48 MiB of bytes that claim to be one row: refused on its byte length, not computed.
    (The receive cap is INT32_MAX today, so this size is accepted by gRPC itself.)"""
    request = raw_request([1, D_IN], b"\x00" * (48 << 20))
    with pytest.raises(grpc.RpcError) as info:
        stubs[target].ModelInfer(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(48 << 20) in info.value.details()
    assert_serves(stubs[target], reference)


@pytest.mark.parametrize("target", TARGETS)
@settings(FUZZ, max_examples=15)
@given(name=model_names, version=model_versions)
def test_model_queries_with_garbage_names(stubs, target, name, version):
    stub = stubs[target]
    expect_clear(stub.ModelMetadata, pb.ModelMetadataRequest(name=name, version=version))
    expect_clear(stub.ModelStatistics, pb.ModelStatisticsRequest(name=name, version=version))
    ready = expect_clear(stub.ModelReady, pb.ModelReadyRequest(name=name, version=version))
    assert ready is not None


# --- garbage on the TCP port ---------------------------------------------------------------


def _client_hello() -> bytes:
    """The first flight of a real TLS handshake (what a TLS client sends first)."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


GARBAGE = {
    "random bytes": bytes(range(256)) * 8,
    "http/1.1 request": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "http/1.1 post as grpc": (
        b"POST /inference.GRPCInferenceService/ModelInfer HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00"
    ),
    "truncated http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM",
    "http/2 preface then garbage frames": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
    "tls client hello": None,  # built at run time
}


def _throw(address: str, payload: bytes, hold_s: float = 0.3) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        sock.settimeout(hold_s)
        try:
            while sock.recv(4096):
                pass
        except (TimeoutError, ConnectionError):
            pass


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_garbage_on_the_port_does_not_hurt_the_server(network, stubs, reference, target, garbage):
    proc = next(p for p in [network.coordinator, *network.workers] if p.name == target)
    payload = GARBAGE[garbage] or _client_hello()
    _throw(proc.address, payload)
    # a connection left half-open must not block anyone else
    host, port = proc.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as idle:
        idle.sendall(payload[: len(payload) // 2])
        assert_serves(stubs[target], reference)
    assert proc.alive()
    assert_serves(stubs[target], reference)


# --- shardnet.v1 Coordinator ---------------------------------------------------------------

sha256s = st.one_of(
    st.just("ab" * 32),
    st.text("0123456789abcdefABCDEF", min_size=60, max_size=68),
    texts,
)
endpoints = st.one_of(
    st.sampled_from(
        ["127.0.0.1:1", "host", ":80", "h:0", "h:65536", "h:²", "h:٣", "h:-1", "[::1]"]
    ),
    st.builds(lambda h, p: f"{h}:{p}", texts, st.integers(-10, 2**20)),
    texts,
    huge_texts,
)
tensor_metadata = st.builds(
    pb.ModelMetadataResponse.TensorMetadata,
    name=st.sampled_from(["x", ""]) | texts,
    datatype=datatype_names | texts,
    shape=st.lists(st.sampled_from([-(2**63), -7, -1, 0, 64, 2**62]), max_size=70),
)


@st.composite
def worker_infos(draw) -> v1.WorkerInfo:
    models = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["mlp", ""]) | texts)
        metadata = pb.ModelMetadataResponse(
            name=draw(st.just(name) | texts),
            inputs=draw(st.lists(tensor_metadata, max_size=3)),
            outputs=draw(st.lists(tensor_metadata, max_size=3)),
        )
        models.append(v1.ModelInfo(name=name, sha256=draw(sha256s), metadata=metadata))
    return v1.WorkerInfo(
        worker_id=draw(st.sampled_from(["", "worker-1", "evil"]) | texts | huge_texts),
        endpoint=draw(endpoints),
        hardware=v1.Hardware(
            cpu_model=draw(texts | huge_texts),
            cpu_count=draw(st.integers(0, 2**32 - 1)),
            intra_op_threads=draw(st.integers(0, 2**32 - 1)),
            memory_bytes=draw(st.integers(0, 2**64 - 1)),
            execution_providers=draw(st.lists(texts, max_size=3)),
        ),
        models=models,
        max_concurrency=draw(st.integers(0, 2**32 - 1)),
        chain_address=draw(st.sampled_from(["", "0x" + "0" * 40]) | texts),
        peer_key=draw(st.binary(max_size=40)),
        address_proof=draw(st.binary(max_size=80)),
        tls_certificate=draw(
            st.just(b"") | st.binary(max_size=64) | st.just(b"-----BEGIN CERTIFICATE-----\n")
        ),
    )


@settings(FUZZ, max_examples=200)
@given(info=worker_infos())
def test_register_with_malformed_worker_info(coordinator, info):
    expect_clear(coordinator.Register, v1.RegisterRequest(worker=info))


def _absurd_signatures():
    """Model metadata no real worker can serve, each with a real worker's endpoint and
    certificate (so nothing but the metadata is wrong)."""
    spec = pb.ModelMetadataResponse.TensorMetadata
    good_x = spec(name="x", datatype="FP32", shape=[-1, D_IN])
    good_out = spec(name="logits", datatype="FP32", shape=[-1, 10])
    return {
        "unknown datatype": ([spec(name="x", datatype="FP128", shape=[-1])], [good_out]),
        "negative dimension": ([spec(name="x", datatype="FP32", shape=[-1, -7])], [good_out]),
        "huge dimension": ([spec(name="x", datatype="FP32", shape=[-1, 2**62])], [good_out]),
        "empty input name": ([spec(name="", datatype="FP32", shape=[-1, D_IN])], [good_out]),
        "duplicate input": ([good_x, good_x], [good_out]),
        "70 dimensions": ([spec(name="x", datatype="FP32", shape=[1] * 70)], [good_out]),
        "no outputs": ([good_x], []),
    }


@pytest.mark.parametrize("case", list(_absurd_signatures()))
def test_register_with_absurd_model_metadata_is_refused(network, coordinator, case):
    inputs, outputs = _absurd_signatures()[case]
    real = network.workers[0]
    info = v1.WorkerInfo(
        worker_id=f"absurd-{case.replace(' ', '-')}",
        endpoint=real.address,
        tls_certificate=real.tls_certificate,
        models=[
            v1.ModelInfo(
                name="absurd",
                sha256="cd" * 32,
                metadata=pb.ModelMetadataResponse(name="absurd", inputs=inputs, outputs=outputs),
            )
        ],
    )
    with pytest.raises(grpc.RpcError) as info_error:
        coordinator.Register(v1.RegisterRequest(worker=info), timeout=30)
    assert info_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info_error.value.details()
    listed = coordinator.ListWorkers(v1.ListWorkersRequest(), timeout=10).workers
    assert info.worker_id not in {w.info.worker_id for w in listed}


def test_register_with_an_unreachable_endpoint_is_unavailable(network, coordinator):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shardnet.identity import worker_claim
    from shardnet.p2p.ads import public_key_bytes
    from shardnet.tls import fingerprint

    real = network.workers[0]
    key = Ed25519PrivateKey.generate()
    info = v1.WorkerInfo(
        worker_id="elsewhere",
        endpoint="127.0.0.1:1",
        tls_certificate=real.tls_certificate,
        peer_key=public_key_bytes(key),
    )
    info.peer_signature = key.sign(
        worker_claim(
            info.worker_id, info.endpoint, "", info.peer_key, fingerprint(info.tls_certificate)
        ).encode()
    )
    with pytest.raises(grpc.RpcError) as error:
        coordinator.Register(v1.RegisterRequest(worker=info), timeout=30)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach" in error.value.details()


@settings(FUZZ, max_examples=40)
@given(
    worker_id=texts | huge_texts,
    model=model_names,
    version=model_versions,
    rows=st.integers(0, 2**64 - 1),
    escrow=st.sampled_from(["0x" + "00" * 32, "0x", "zz" * 32]) | texts | huge_texts,
    job_id=texts | huge_texts,
)
def test_other_coordinator_rpcs_with_garbage(
    coordinator, worker_id, model, version, rows, escrow, job_id
):
    beat = expect_clear(coordinator.Heartbeat, v1.HeartbeatRequest(worker_id=worker_id))
    if beat is not None and not worker_id.startswith("worker-"):
        assert not beat.known
    quote = expect_clear(
        coordinator.Quote, v1.QuoteRequest(model_name=model, model_version=version, rows=rows)
    )
    if quote is not None:
        assert int(quote.price_wei) >= 0
    expect_clear(coordinator.GetSettlement, v1.GetSettlementRequest(escrow_job_id=escrow))
    verdicts = expect_clear(coordinator.ListVerdicts, v1.ListVerdictsRequest(job_id=job_id))
    assert verdicts is not None and not verdicts.verdicts


# --- the network is whole ------------------------------------------------------------------


def test_zz_network_alive_and_consistent_after_all_that(network, stubs, coordinator, reference):
    """Runs last in the module (tests run in file order)."""
    assert network.coordinator.alive() and all(w.alive() for w in network.workers)
    listed = coordinator.ListWorkers(v1.ListWorkersRequest(), timeout=10).workers
    assert sorted(w.info.worker_id for w in listed) == ["worker-1", "worker-2", "worker-3"]
    assert all(w.live and w.shards_failed == 0 and w.strikes == 0 for w in listed)
    assert not coordinator.ListVerdicts(v1.ListVerdictsRequest(), timeout=10).verdicts
    for stub in stubs.values():
        assert_serves(stub, reference)
    request, x = good_request(rows=600, seed=9)
    response = stubs["coordinator"].ModelInfer(request, timeout=60)
    assert_matches_reference(response, x, reference)
