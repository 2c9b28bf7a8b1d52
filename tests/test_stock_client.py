"""tritonclient[grpc], unmodified, talks to the coordinator and to a worker directly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shardnet.demo import demo_inputs

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("stock_client.py")


@pytest.mark.parametrize("target", ["coordinator", "worker"])
def test_tritonclient_gets_the_in_process_outputs(network, reference, tmp_path, target):
    proc = network.coordinator if target == "coordinator" else network.workers[1]
    x = demo_inputs(777, seed=4)["x"]
    np.save(tmp_path / "x.npy", x)
    tls = []
    if proc.tls_certificate:  # workers serve TLS with a self-signed certificate
        (tmp_path / "ca.pem").write_bytes(proc.tls_certificate)
        tls = [str(tmp_path / "ca.pem")]
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            proc.address,
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npz"),
            *tls,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok mlp")
    with np.load(tmp_path / "y.npz") as got:
        for name, expected in reference(x).items():
            assert got[name].tobytes() == expected.tobytes()
