"""The `shardnet` command as a user runs it: real subprocesses, readable errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from shardnet.demo import demo_inputs

pytestmark = pytest.mark.slow


def shardnet(*args, timeout=120, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "shardnet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_submit_writes_outputs(network, reference, tmp_path):
    x = demo_inputs(1500, seed=9)["x"]
    np.save(tmp_path / "x.npy", x)
    done = shardnet(
        "submit",
        "--coordinator",
        network.coordinator.address,
        "mlp",
        str(tmp_path / "x.npy"),
        "-o",
        str(tmp_path / "y.npz"),
        "--batch-rows",
        "500",
    )
    assert done.returncode == 0, done.stderr
    assert "1500 rows" in done.stdout and "3 request(s)" in done.stdout
    with np.load(tmp_path / "y.npz") as got:
        for name, expected in reference(x).items():
            assert got[name].tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "mlp", "missing.npy"], "input file missing.npy does not exist"),
        (["submit", "nope", "x.npy"], "NOT_FOUND: no live worker serves a model named 'nope'"),
        (["submit", "mlp", "garbage.npy"], "cannot read garbage.npy"),
        (["submit", "mlp", "wrong.npy"], "INVALID_ARGUMENT: input 'x' of model 'mlp' has shape"),
    ],
)
def test_submit_errors_are_readable(network, tmp_path, args, message):
    np.save(tmp_path / "x.npy", demo_inputs(3)["x"])
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5), np.float32))
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    done = shardnet(*args, "--coordinator", network.coordinator.address, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.out.npz").exists()


def test_unreachable_coordinator_is_readable(tmp_path):
    np.save(tmp_path / "x.npy", demo_inputs(3)["x"])
    done = shardnet(
        "submit", "--coordinator", "127.0.0.1:1", "mlp", "x.npy", "--timeout", "3", cwd=tmp_path
    )
    assert done.returncode == 1
    assert "shardnet: error: UNAVAILABLE" in done.stderr and "Traceback" not in done.stderr


def test_invalid_worker_flag_is_readable(tmp_path):
    done = shardnet("worker", "--models-dir", str(tmp_path), "--max-concurrency", "0")
    assert done.returncode == 1
    assert "--max-concurrency" in done.stderr and "Traceback" not in done.stderr


def test_worker_without_models_is_readable(tmp_path):
    done = shardnet("worker", "--models-dir", str(tmp_path))
    assert done.returncode == 1
    assert f"no *.onnx models in {tmp_path}" in done.stderr and "Traceback" not in done.stderr


def test_devnet_runs_a_job_and_stops_every_process():
    done = shardnet("devnet", "--workers", "2", "--rows", "600", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bit-identical to in-process onnxruntime" in done.stdout
    assert "rows per worker: worker-1" in done.stdout
    assert re.search(r"settlement tx 0x[0-9a-f]{64} \([\d,]+ gas\)", done.stdout)
    assert re.search(r"worker-1 +0x[0-9a-fA-F]{40} earned 0\.\d+ ETH", done.stdout)
    pids = [int(p) for p in re.findall(r"pid\s+(\d+)", done.stdout)]
    assert len(pids) == 4  # anvil, coordinator, 2 workers
    assert not any(pid_alive(p) for p in pids)


def test_devnet_ctrl_c_stops_every_process(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardnet",
            "devnet",
            "--workers",
            "2",
            "--rows",
            "100",
            "--keep-running",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if "network running" in line or time.monotonic() > deadline:
            break
    assert any("network running" in line for line in lines), "".join(lines)
    pids = [int(p) for p in re.findall(r"pid\s+(\d+)", "".join(lines))]
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert len(pids) == 4 and not any(pid_alive(p) for p in pids)


def _start_chain(tmp_path, port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardnet", "chain", "--dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops the chain" in line:
            break
    text = "".join(lines)
    assert "Ctrl-C stops the chain" in text, text
    return proc, int(re.search(r"anvil pid (\d+)", text).group(1))


def test_chain_command_deploys_and_keeps_its_state_across_restarts(tmp_path):
    from shardnet.chain import Deployment, free_port

    port = free_port()
    proc, anvil_pid = _start_chain(tmp_path, port)
    first = Deployment.load(tmp_path / "deployment.json")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "chain stopped" in out
    assert not pid_alive(anvil_pid)

    proc, anvil_pid = _start_chain(tmp_path, port)
    try:
        assert Deployment.load(tmp_path / "deployment.json") == first  # reused, not redeployed
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert not pid_alive(anvil_pid)


def test_devnet_with_a_cheater_catches_it():
    done = shardnet(
        "devnet",
        "--workers",
        "2",
        "--rows",
        "1200",
        "--cheat",
        "noise",
        "--spot-check-p",
        "1.0",
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAULT INJECTION: noise" in done.stdout
    assert re.search(r"VERDICT shard \d+: cheater lost", done.stdout)
    assert "cheater caught and excluded" in done.stdout
    assert "bit-identical to in-process onnxruntime" in done.stdout
    assert re.search(r"cheater +0x", done.stdout) is None  # the cheater earned nothing
