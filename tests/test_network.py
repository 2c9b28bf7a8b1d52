"""A coordinator and workers as real processes on loopback, driven over gRPC."""

from __future__ import annotations

import itertools
import threading
import time

import grpc
import numpy as np
import pytest

from shardnet.client import Client
from shardnet.demo import demo_inputs
from shardnet.errors import RemoteError
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol.tensors import add_inputs

pytestmark = pytest.mark.slow


def assert_bit_identical(outputs, expected):
    assert list(outputs) == list(expected)
    for name, array in expected.items():
        assert outputs[name].dtype == array.dtype and outputs[name].shape == array.shape
        assert outputs[name].tobytes() == array.tobytes(), f"{name} differs"


def test_job_on_three_workers_equals_in_process_onnxruntime(network, reference):
    x = demo_inputs(3000, seed=7)["x"]
    with Client(network.coordinator.address) as client:
        result = client.infer("mlp", {"x": x})
    assert_bit_identical(result.outputs, reference(x))
    assert {s["worker"] for s in result.shards} == {"worker-1", "worker-2", "worker-3"}
    covered = sorted(tuple(s["rows"]) for s in result.shards)
    assert covered[0][0] == 0 and covered[-1][1] == 3000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))


def test_large_input_is_split_into_several_requests(network, reference):
    x = demo_inputs(2500, seed=3)["x"]
    done = []
    with Client(network.coordinator.address) as client:
        result = client.infer("mlp", {"x": x}, batch_rows=1000, progress=done.append)
    assert done == [1000, 1000, 500]
    assert len(result.job_ids) == 3
    assert_bit_identical(result.outputs, reference(x))


def test_requested_output_subset(network, reference):
    x = demo_inputs(64)["x"]
    with Client(network.coordinator.address) as client:
        result = client.infer("mlp", {"x": x}, outputs=["probs"])
    assert list(result.outputs) == ["probs"]
    assert result.outputs["probs"].tobytes() == reference(x)["probs"].tobytes()


def test_throughput_is_measured_after_a_job(network):
    with Client(network.coordinator.address) as client:
        client.infer("mlp", demo_inputs(2000))
        workers = client.workers()
    assert len(workers) == 3
    for w in workers:
        (rate,) = w.rows_per_second.values()
        assert rate > 0
        assert w.info.hardware.cpu_count >= 1
        assert "CPUExecutionProvider" in w.info.hardware.execution_providers


# --- bad input ---------------------------------------------------------------------------


def _request(model="mlp", x=None, name="x"):
    request = pb.ModelInferRequest(model_name=model)
    add_inputs(request, {name: demo_inputs(4)["x"] if x is None else x})
    return request


def _wrong_length():
    request = _request()
    request.raw_input_contents[0] = request.raw_input_contents[0][:-3]
    return request


BAD_REQUESTS = {
    "wrong dtype": (lambda: _request(x=np.zeros((4, 64))), "INVALID_ARGUMENT", "is FP32, got FP64"),
    "wrong shape": (
        lambda: _request(x=np.zeros((4, 63), np.float32)),
        "INVALID_ARGUMENT",
        "has shape",
    ),
    "unknown model": (lambda: _request(model="nope"), "NOT_FOUND", "'nope'"),
    "unknown input": (lambda: _request(name="y"), "INVALID_ARGUMENT", "no input 'y'"),
    "raw bytes of wrong length": (_wrong_length, "INVALID_ARGUMENT", "1021 bytes"),
    "empty batch": (
        lambda: _request(x=np.zeros((0, 64), np.float32)),
        "INVALID_ARGUMENT",
        "empty batch",
    ),
}


@pytest.mark.parametrize("target", ["coordinator", "worker"])
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_the_right_status_and_servers_keep_serving(network, target, case):
    proc = network.coordinator if target == "coordinator" else network.workers[0]
    make, code, message = BAD_REQUESTS[case]
    with proc.channel() as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(make(), timeout=10)
        assert info.value.code().name == code
        assert message in info.value.details()
        good = stub.ModelInfer(_request(), timeout=10)
        assert good.raw_output_contents and len(good.raw_output_contents) == 2


def test_sdk_raises_readable_errors(network):
    with Client(network.coordinator.address) as client:
        with pytest.raises(RemoteError, match="NOT_FOUND: no live worker serves a model named 'x'"):
            client.infer("x", {"x": np.zeros((1, 64), np.float32)})


# --- workers failing ---------------------------------------------------------------------


def _start(net, workers, *worker_args, coordinator_args=()):
    net.start_coordinator(*coordinator_args)
    for i in range(workers):
        net.start_worker("--intra-op-threads", "1", *(worker_args if i == 0 else ()))
    net.wait_for_workers(workers)


def test_worker_killed_mid_job_the_job_still_completes(fresh_network, reference):
    # worker-1 holds each shard 3 s (fault injection), so the SIGKILL lands while it has
    # shards in flight, whatever the machine's speed.
    _start(fresh_network, 3, "--fault-delay-s", "3")
    victim = fresh_network.workers[0]
    x = demo_inputs(3000, seed=11)["x"]
    outcome = {}

    def submit():
        with Client(fresh_network.coordinator.address) as client:
            outcome["result"] = client.infer("mlp", {"x": x})

    thread = threading.Thread(target=submit)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the job finished before the worker could be killed"
    victim.kill()
    thread.join(60)
    result = outcome["result"]
    assert_bit_identical(result.outputs, reference(x))
    assert "worker-1" not in {s["worker"] for s in result.shards}
    assert any(s["attempts"] > 1 for s in result.shards)


def test_straggler_shards_are_resent_elsewhere(fresh_network, reference):
    _start(
        fresh_network,
        2,
        "--fault-delay-s",
        "30",
        coordinator_args=("--min-shard-timeout-s", "1", "--shard-timeout-s", "2"),
    )
    x = demo_inputs(500, seed=5)["x"]
    t0 = time.monotonic()
    with Client(fresh_network.coordinator.address) as client:
        result = client.infer("mlp", {"x": x})
    assert time.monotonic() - t0 < 20
    assert_bit_identical(result.outputs, reference(x))
    assert {s["worker"] for s in result.shards} == {"worker-2"}


def test_no_worker_left_is_unavailable_not_a_partial_result(fresh_network):
    _start(fresh_network, 1)
    fresh_network.workers[0].kill()
    with Client(fresh_network.coordinator.address) as client:
        with pytest.raises(RemoteError) as info:
            client.infer("mlp", {"x": demo_inputs(100)["x"]})
    assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND)


def test_killed_worker_is_dropped_and_a_restarted_one_rejoins(fresh_network, reference):
    _start(fresh_network, 2, coordinator_args=("--worker-ttl-s", "1.5"))
    fresh_network.workers[0].kill()
    fresh_network.wait_for_workers(1, timeout_s=10)
    fresh_network.start_worker("--intra-op-threads", "1", name="worker-1")
    fresh_network.wait_for_workers(2, timeout_s=10)
    x = demo_inputs(2000)["x"]
    with Client(fresh_network.coordinator.address) as client:
        result = client.infer("mlp", {"x": x})
    assert {s["worker"] for s in result.shards} == {"worker-1", "worker-2"}
    assert_bit_identical(result.outputs, reference(x))
