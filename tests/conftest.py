"""Fixtures that start real shardnet processes on loopback and wait for readiness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from shardnet.chain import Chain
from shardnet.client import Payer
from shardnet.demo import demo_inputs, write_demo_model
from shardnet.identity import Identity
from shardnet.launch import DevAccounts, LocalNetwork
from shardnet.wallet import start_dev_chain


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


class PaidNetwork:
    """Anvil with the contracts, a paying coordinator and staked workers, as processes."""

    def __init__(self, workdir: Path, models_dir: Path) -> None:
        self.workdir = workdir
        self.anvil, self.deployment = start_dev_chain(workdir / "chain")
        self.accounts = DevAccounts(workdir, workdir / "chain" / "deployment.json")
        self.net = LocalNetwork(workdir, models_dir)
        self.workers: dict[str, Identity] = {}
        self.coordinator_identity: Identity | None = None

    def start_coordinator(self, *extra: str):
        key_dir, self.coordinator_identity = self.accounts.create("coordinator")
        return self.net.start_coordinator(
            *self.accounts.node_args(key_dir),
            "--ledger",
            str(self.workdir / "ledger.sqlite"),
            "--settle-retry-s",
            "0.5",
            *extra,
        )

    def start_worker(self, name: str, *extra: str, stake: bool = True):
        key_dir, identity = self.accounts.create(name)
        self.workers[name] = identity
        stake_args = ["--stake-wei", str(self.deployment.min_stake_wei)] if stake else []
        return self.net.start_worker(
            "--intra-op-threads",
            "1",
            *self.accounts.node_args(key_dir),
            *stake_args,
            *extra,
            name=name,
        )

    def payer(self, name: str = "client") -> Payer:
        _, identity = self.accounts.create(name)
        return Payer(self.deployment, identity.account.key)

    def chain(self, key) -> Chain:
        """`async with await net.chain(key)`: a Chain acting with `key`."""
        return Chain.connect(self.deployment, key)

    def stop(self) -> None:
        self.net.stop()
        self.anvil.stop()


@pytest.fixture
def paid_network(tmp_path, models_dir):
    net = PaidNetwork(tmp_path, models_dir)
    try:
        yield net
    finally:
        net.stop()
