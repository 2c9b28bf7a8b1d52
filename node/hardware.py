"""What this machine offers: CPU, memory, onnxruntime execution providers, GPUs."""

from __future__ import annotations

import os
import shutil
import subprocess

import onnxruntime as ort

from shardnet.protocol import shardnet_v1_pb2 as v1

# Providers shardnet knows how to use, best first.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def choose_providers(requested: list[str]) -> list[str]:
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(
                f"execution provider(s) {missing} not available; this onnxruntime has {available}"
            )
        return requested
    return [p for p in PREFERRED_PROVIDERS if p in available]


def gpus() -> list[v1.Gpu]:
    """GPUs as nvidia-smi reports them (empty when there is none or no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    result = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            result.append(v1.Gpu(name=name.strip(), memory_bytes=int(float(mib)) * 2**20))
        except ValueError:
            continue
    return result


def probe(providers: list[str], intra_op_threads: int) -> v1.Hardware:
    return v1.Hardware(
        cpu_model=cpu_model(),
        cpu_count=cpu_count(),
        intra_op_threads=intra_op_threads,
        memory_bytes=memory_bytes(),
        execution_providers=providers,
        gpus=gpus() if "CUDAExecutionProvider" in providers else [],
    )
