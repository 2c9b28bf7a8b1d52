"""Peer comparison: shardnet vs Ray Serve, same model, same batch, same cores, same client.

shardnet: a coordinator and 2 workers (one onnxruntime intra-op thread, one shard at a
time each). Ray Serve: the same ONNX file in onnxruntime inside a deployment with 2
replicas (`num_cpus=1`, one intra-op thread, one request at a time each) behind an ingress
deployment (`num_cpus=0`) that plays the coordinator's part: it cuts the batch into the
same number of pieces shardnet cuts it into (2 workers x 4 shards), sends them to the
replicas through a DeploymentHandle and concatenates the answers. The ingress speaks the
Open Inference Protocol through Ray Serve's gRPC proxy (our generated servicer), so the
very same `shardnet.client.Client` call times both systems, end to end, outputs checked.

Both systems are up at once and take turns, round after round (medians), so load from
elsewhere on the machine falls on both alike; each one's idle background processes run
while the other is timed. Ray runs with `num_cpus=2` (the 2 cores of the dev machine).

    python benchmarks/peer_ray.py [--rows 8192] [--repeats 7] [--quick]

Needs `ray[serve]` (the `bench` extra) in the interpreter that runs this script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from benchlib import (
    HEAVY,
    describe,
    goal,
    interleaved,
    local_session,
    machine_note,
    medians,
    network,
    print_table,
    save_plot,
)

from shardnet.chain.anvil import free_port
from shardnet.client import Client
from shardnet.demo import demo_inputs, write_demo_model
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol import inference_pb2_grpc as pb_grpc
from shardnet.protocol.tensors import add_outputs, decode_request_inputs

SERVICER = "shardnet.protocol.inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
REPLICAS = 2
PIECES = REPLICAS * 4  # shardnet's default --shards-per-worker is 4
SHARDNET = "shardnet (coordinator + 2 workers)"
RAY = "Ray Serve (ingress + 2 replicas)"
APP = "heavy"


def ray_app(model_path: Path, pieces: int):
    """The Ray Serve application: an OIP ingress fanning out to onnxruntime replicas."""
    from ray import serve

    @serve.deployment(
        num_replicas=REPLICAS, max_ongoing_requests=1, ray_actor_options={"num_cpus": 1}
    )
    class OnnxModel:
        def __init__(self, path: str) -> None:
            import onnxruntime as ort  # in the replica process (benchlib is not importable)

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def run(self, x: np.ndarray) -> np.ndarray:
            return self.session.run(["logits"], {"x": x})[0]

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
    class Ingress:
        def __init__(self, model) -> None:
            self.model = model

        # Named after the gRPC method: Serve's proxy calls the method of that name.
        async def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
            x = decode_request_inputs(request)["x"]
            parts = [self.model.run.remote(piece) for piece in np.array_split(x, pieces)]
            logits = np.concatenate([await part for part in parts])
            response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            add_outputs(response, [("logits", logits)])
            return response

    return Ingress.bind(OnnxModel.bind(str(model_path)))


@contextlib.contextmanager
def ray_serve(model_path: Path, pieces: int) -> Iterator[str]:
    """Start Ray (2 CPUs) and Serve with the gRPC proxy; yield its address; shut down."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        serve.start(
            http_options={"host": "127.0.0.1", "port": free_port()},
            grpc_options=gRPCOptions(port=port, grpc_servicer_functions=[SERVICER]),
        )
        serve.run(ray_app(model_path, pieces), name=APP, route_prefix=f"/{APP}")
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):  # best effort: ray.shutdown() still runs
            serve.shutdown()
        ray.shutdown()


class _AppMetadata(grpc.UnaryUnaryClientInterceptor):
    """Adds the `application` metadata Serve's gRPC proxy routes by."""

    def __init__(self, app: str) -> None:
        self.app = app

    def intercept_unary_unary(self, continuation, details, request):
        metadata = [*(details.metadata or ()), ("application", self.app)]
        return continuation(details._replace(metadata=metadata), request)


def ray_client(address: str) -> Client:
    """Our client, its calls tagged for Serve's proxy (the SDK takes no custom metadata,
    so its stub is rebuilt over an intercepted channel)."""
    client = Client(address)
    channel = grpc.intercept_channel(client._channel, _AppMetadata(APP))
    client._stub = pb_grpc.GRPCInferenceServiceStub(channel)
    return client


def timed_job(client: Client, x: np.ndarray, expected: np.ndarray):
    def job():
        out = client.infer(HEAVY["name"], {"x": x}, outputs=["logits"])
        assert np.allclose(out.outputs["logits"], expected, atol=1e-5, rtol=1e-4)

    return job


def measure(tmp: Path, rows: int, repeats: int) -> dict[str, float]:
    model_path = write_demo_model(tmp / "models", **HEAVY)
    x = demo_inputs(rows, d_in=HEAVY["d_in"])["x"]
    expected = local_session(model_path).run(["logits"], {"x": x})[0]
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(network(tmp / "net", tmp / "models", REPLICAS))
        ours = stack.enter_context(Client(net.coordinator.address))
        print("  shardnet up; starting Ray Serve", flush=True)
        ray_address = stack.enter_context(ray_serve(model_path, PIECES))
        theirs = stack.enter_context(ray_client(ray_address))
        print("  Ray Serve up", flush=True)
        jobs = {SHARDNET: timed_job(ours, x, expected), RAY: timed_job(theirs, x, expected)}
        return medians(interleaved(jobs, repeats, warmup=2))


def report(results: dict[str, float], rows: int, repeats: int) -> None:
    print(
        f"model: {describe(HEAVY)}, batch {rows} rows, {PIECES} pieces, median of {repeats} "
        f"rounds, 1 intra-op thread x {REPLICAS} per system; {machine_note()}"
    )
    print_table(
        ("system", "wall s", "rows/s"),
        [(label, wall, f"{rows / wall:,.0f}") for label, wall in results.items()],
    )
    ratio = results[RAY] / results[SHARDNET]
    print(f"shardnet / Ray Serve throughput: {ratio:.3f}x  (goal >= 1.0: {goal(ratio >= 1.0)})")


def plot(results: dict[str, float], rows: int) -> None:
    def draw(plt):
        _, ax = plt.subplots(figsize=(5.5, 3.5))
        labels = list(results)
        ax.barh(labels, [rows / results[k] for k in labels], color=["tab:blue", "tab:orange"])
        ax.set(xlabel="rows/s (higher is better)", title=f"{describe(HEAVY)}, {rows} rows")

    save_plot("peer_ray", draw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7, help="rounds")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home

    started = time.perf_counter()
    print(f"{machine_note()}; systems taking turns, {repeats} rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="shardnet-bench-") as tmp:
        results = measure(Path(tmp), args.rows, repeats)
    print()
    report(results, args.rows, repeats)
    plot(results, args.rows)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
