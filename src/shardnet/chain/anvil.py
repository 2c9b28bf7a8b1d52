"""Start and stop a local Anvil (Foundry's dev chain) for devnets and tests.

Always the native binary: the npm `anvil` command is a node wrapper, and SIGTERM to the
wrapper leaves the real anvil running.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from eth_account import Account

from shardnet.chain.errors import ChainError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def _derive_dev_keys(count: int = 10) -> tuple[str, ...]:
    Account.enable_unaudited_hdwallet_features()
    return tuple(
        "0x" + Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
        for i in range(count)
    )


#: Private keys (0x-hex) of anvil's ten funded default accounts (10,000 ETH each).
#: Public knowledge: never use them on a real network.
DEV_KEYS: tuple[str, ...] = _derive_dev_keys()


def _platform_dir(tool: str) -> str:
    os_name = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(
        sys.platform, sys.platform
    )
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return f"{tool}-{os_name}-{arch}"


def find_binary(tool: str) -> Path:
    """Locates a Foundry tool (`anvil`, `forge`, `cast`).

    Order: env `SHARDNET_<TOOL>`, the repo's npm-installed native binary
    (`contracts/node_modules/@foundry-rs/<tool>-<os>-<arch>/bin/<tool>`), then `PATH`.
    """
    env = os.environ.get(f"SHARDNET_{tool.upper()}")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ChainError(f"SHARDNET_{tool.upper()}={env} is not a file")
        return path
    exe = f"{tool}.exe" if sys.platform == "win32" else tool
    npm_dir = REPO_ROOT / "contracts" / "node_modules" / "@foundry-rs"
    for candidate in (npm_dir / _platform_dir(tool) / "bin" / exe, npm_dir / tool / exe):
        if candidate.is_file():
            return candidate
    found = shutil.which(tool)
    if found:
        return Path(found)
    raise ChainError(
        f"{tool} not found: run `npm ci --prefix contracts` in the repo (installs Foundry "
        f"1.7.1 from npm), put {tool} on PATH, or set SHARDNET_{tool.upper()}"
    )


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the caller accepts the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chain_id(rpc_url: str, timeout_s: float) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    req = urllib.request.Request(
        rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return int(json.loads(resp.read())["result"], 16)


class Anvil:
    """A running anvil process. Use `Anvil.start(...)`; stop with `stop()` or `with`.

    With `state_path`, anvil loads the chain from that file at start (if it exists) and
    dumps it there on a graceful `stop()` (SIGTERM), and every `state_interval_s` seconds
    while running, so even a `kill()` loses at most that interval.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        port: int,
        chain_id: int,
        state_path: Path | None,
        log_path: Path | None,
    ) -> None:
        self._proc = proc
        self.port = port
        self.chain_id = chain_id
        self.state_path = state_path
        self.log_path = log_path
        self.rpc_url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    def start(
        cls,
        *,
        port: int = 0,
        state_path: Path | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = 30,
        chain_id: int = 31337,
        state_interval_s: int | None = 1,
        extra_args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ) -> Anvil:
        """Starts anvil on `host` (loopback by default; 0.0.0.0 in a container) and returns
        once it answers `eth_chainId` on loopback."""
        binary = find_binary("anvil")
        port = port or free_port()
        args = [
            str(binary),
            "--host",
            host,
            "--port",
            str(port),
            "--chain-id",
            str(chain_id),
            *extra_args,
        ]
        if state_path is not None:
            state_path = Path(state_path)
            state_path.parent.mkdir(parents=True, exist_ok=True)
            args += ["--state", str(state_path)]
            if state_interval_s:
                args += ["--state-interval", str(state_interval_s)]
        if log_path is None:
            args.append("--silent")
            stdout = subprocess.DEVNULL
        else:
            log_path = Path(log_path)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            stdout = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT if log_path is not None else subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            if log_path is not None:
                stdout.close()  # the child holds its own descriptor
        node = cls(proc, port, chain_id, state_path, log_path)
        try:
            node._wait_ready(ready_timeout_s)
        except BaseException:
            node.kill()
            raise
        return node

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise ChainError(
                    f"anvil exited with code {self._proc.returncode} before it was ready: "
                    f"{self._output_tail()}"
                )
            try:
                got = _chain_id(self.rpc_url, timeout_s=1.0)
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                # Not listening yet (connection refused) or not answering JSON yet.
                pass
            else:
                if got != self.chain_id:
                    raise ChainError(
                        f"port {self.port} answers chain id {got}, not {self.chain_id}: "
                        "another node is listening there"
                    )
                return
            if time.monotonic() > deadline:
                raise ChainError(
                    f"anvil not ready on {self.rpc_url} after {timeout_s}s: {self._output_tail()}"
                )
            time.sleep(0.05)

    def _output_tail(self, n: int = 2000) -> str:
        if self.log_path is not None and self.log_path.exists():
            return self.log_path.read_bytes()[-n:].decode(errors="replace").strip()
        if self._proc.stderr is not None and self._proc.poll() is not None:
            return self._proc.stderr.read()[-n:].decode(errors="replace").strip()
        return "(no log; pass log_path to keep anvil's output)"

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, grace_s: float = 10) -> int:
        """Stops anvil gracefully (SIGTERM; with a state path it dumps the state first);
        SIGKILL if it has not exited after `grace_s`. Returns the exit code. Idempotent."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL: no state dump beyond the last `--state-interval` write."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self._proc.stderr is not None:
            self._proc.stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.alive() else f"exited {self._proc.returncode}"
        return f"Anvil(pid={self.pid}, rpc_url={self.rpc_url!r}, {state})"
