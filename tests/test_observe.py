"""Prometheus metrics, the dashboard's JSON and grpc.health.v1 on real processes."""

from __future__ import annotations

import json
import urllib.request

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shardnet.client import Client
from shardnet.demo import demo_inputs

pytestmark = pytest.mark.slow


def get(address: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_state_and_health(network):
    coordinator, worker = network.coordinator, network.workers[0]
    with Client(coordinator.address) as client:
        result = client.infer("mlp", demo_inputs(1200))
    (job_id,) = result.job_ids

    text = get(coordinator.info["http_address"], "/metrics")
    assert (
        metric(text, "shardnet_inference_request_success_total", role="coordinator", model="mlp")
        >= 1
    )
    assert metric(text, "shardnet_inference_count_total", role="coordinator", model="mlp") >= 1200
    assert "shardnet_inference_request_seconds_bucket" in text
    assert metric(text, "shardnet_workers", state="live") == 3
    assert metric(text, "shardnet_shards_total", outcome="done") >= len(result.shards)
    worker_text = get(worker.info["http_address"], "/metrics")
    assert metric(worker_text, "shardnet_inference_request_success_total", role="worker") >= 1
    assert (
        metric(worker_text, "shardnet_inference_compute_infer_duration_us_total", role="worker") > 0
    )

    state = json.loads(get(coordinator.info["http_address"], "/api/state"))
    assert {w["id"] for w in state["workers"]} == {"worker-1", "worker-2", "worker-3"}
    job = next(j for j in state["jobs"] if j["id"] == job_id)
    assert job["status"] == "completed" and job["shards_done"] == job["shards_total"]
    assert "<title>" in get(coordinator.info["http_address"], "/")

    for proc in (coordinator, worker):
        with proc.channel() as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
