"""Fixtures that start real shardnet processes on loopback and wait for readiness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from shardnet.demo import demo_inputs, write_demo_model
from shardnet.launch import LocalNetwork


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_demo_model(folder)
    return folder


@pytest.fixture(scope="session")
def reference(models_dir):
    """In-process onnxruntime on the same model: what every network answer must equal."""
    session = ort.InferenceSession(str(models_dir / "mlp.onnx"))

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {"x": x}), strict=True))

    return run


@pytest.fixture(scope="module")
def network(tmp_path_factory, models_dir):
    """A coordinator and three single-thread workers, shared by a test module."""
    with LocalNetwork(tmp_path_factory.mktemp("net"), models_dir) as net:
        net.start_coordinator()
        for _ in range(3):
            net.start_worker("--intra-op-threads", "1")
        net.wait_for_workers(3)
        yield net


@pytest.fixture
def fresh_network(tmp_path, models_dir):
    """A network a test may break (kill workers); started empty."""
    with LocalNetwork(tmp_path, models_dir) as net:
        yield net


@pytest.fixture
def x():
    return demo_inputs(1000)["x"]
