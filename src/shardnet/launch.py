"""Starting shardnet processes on loopback and stopping them for sure: used by
`shardnet devnet`, the tests and the benchmarks, so all three run the same topology."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from shardnet.chain import DEV_KEYS, Chain, Deployment
from shardnet.client import Client, sync_channel
from shardnet.errors import ShardnetError
from shardnet.identity import Identity


class LaunchError(ShardnetError):
    """A child process did not come up."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path
    info: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.info["address"]

    @property
    def tls_certificate(self) -> bytes | None:
        """The PEM certificate a worker serves (None for plaintext and coordinators)."""
        pem = self.info.get("tls_certificate")
        return pem.encode() if pem else None

    def channel(self) -> grpc.Channel:
        """A blocking channel to this process, trusting its certificate if it has one."""
        return sync_channel(self.address, self.tls_certificate)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.popen.send_signal(sig)
            if sig == signal.SIGKILL:
                self.popen.wait()

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `grace_s`."""
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def spawn(
    name: str,
    args: Sequence[str],
    workdir: Path,
    *,
    ready_timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> Process:
    """Start `python -m shardnet ARGS --ready-file F` and wait until it writes F (or dies,
    or the deadline passes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"{name}.ready.json"
    ready.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "shardnet", *args, "--ready-file", str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop children
        )
    proc = Process(name, popen, log_path)
    deadline = time.monotonic() + ready_timeout_s
    while not ready.exists():
        if not proc.alive():
            raise LaunchError(f"{name} exited with {popen.returncode}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            proc.stop()
            raise LaunchError(f"{name} not ready after {ready_timeout_s:.0f}s:\n{proc.log_tail()}")
        time.sleep(0.02)
    proc.info = json.loads(ready.read_text())
    return proc


@dataclass
class LocalNetwork:
    """A coordinator and workers as child processes on 127.0.0.1."""

    workdir: Path
    models_dir: Path
    # How workers join: "discovery" (gossip a signed ad to the coordinator's libp2p node,
    # the default) or "register" (call the coordinator's Register RPC).
    join: str = "discovery"
    coordinator: Process | None = None
    workers: list[Process] = field(default_factory=list)
    _counter: int = 0

    def start_coordinator(self, *extra: str) -> Process:
        self.coordinator = spawn(
            "coordinator",
            ["coordinator", "--port", "0", "--http-listen", "127.0.0.1:0", *extra],
            self.workdir,
        )
        return self.coordinator

    def start_worker(self, *extra: str, name: str | None = None) -> Process:
        assert self.coordinator is not None, "start the coordinator first"
        self._counter += 1
        name = name or f"worker-{self._counter}"
        if self.join == "discovery":
            join = [a for addr in self.coordinator.info["p2p_addrs"] for a in ("--bootstrap", addr)]
        else:
            join = ["--coordinator", self.coordinator.address]
        args = [
            "worker",
            "--models-dir",
            str(self.models_dir),
            "--port",
            "0",
            *join,
            "--worker-id",
            name,
            *extra,
        ]
        proc = spawn(name, args, self.workdir)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until the coordinator lists exactly `count` live workers."""
        assert self.coordinator is not None
        deadline = time.monotonic() + timeout_s
        with Client(self.coordinator.address) as client:
            while True:
                live = [w for w in client.workers() if w.live]
                if len(live) == count:
                    return
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"coordinator lists {len(live)} live workers, expected {count}"
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        for proc in [*self.workers, *([self.coordinator] if self.coordinator else [])]:
            proc.stop()

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


DEV_PASSPHRASE = "shardnet-devnet"  # throwaway keys of a local network only


@dataclass
class DevAccounts:
    """Throwaway keys for a local network's nodes, funded from Anvil's first account."""

    workdir: Path
    deployment_file: Path

    @property
    def passphrase_file(self) -> Path:
        path = self.workdir / "passphrase"
        if not path.exists():
            path.write_text(DEV_PASSPHRASE)
            path.chmod(0o600)
        return path

    def create(self, name: str, fund_wei: int = 100 * 10**18) -> tuple[Path, Identity]:
        key_dir = self.workdir / "keys" / name
        if key_dir.exists():
            identity = Identity.load(key_dir, DEV_PASSPHRASE)
        else:
            identity = Identity.create(key_dir, DEV_PASSPHRASE, kdf_n=2**14)
        if fund_wei:
            asyncio.run(self._fund(identity.address, fund_wei))
        return key_dir, identity

    async def _fund(self, address: str, wei: int) -> None:
        async with await Chain.connect(Deployment.load(self.deployment_file), DEV_KEYS[0]) as chain:
            await chain.transfer(address, wei)

    def node_args(self, key_dir: Path) -> list[str]:
        """The flags that put a coordinator or worker on this chain with these keys."""
        return [
            "--chain",
            str(self.deployment_file),
            "--key-dir",
            str(key_dir),
            "--passphrase-file",
            str(self.passphrase_file),
        ]
