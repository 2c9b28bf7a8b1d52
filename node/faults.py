"""FAULT INJECTION, for demonstrations and tests only: a worker that cheats on purpose, so a
user can watch the network catch it. Never enabled unless `--fault` is given; the worker
logs a warning at start.

Modes: `noise` adds Gaussian noise to float outputs, `zeros` returns zeros, `other-model`
answers with a cheaper, wrong model (the same graph with its weights scaled by 0.9), and
`replay` returns an earlier answer (tiled or cut to the rows asked for).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from shardnet.node.models import LoadedModel, provider_list

FAULT_MODES = ("none", "noise", "zeros", "other-model", "replay")


def _perturbed(model: LoadedModel, opts: ort.SessionOptions, providers) -> ort.InferenceSession:
    proto = onnx.load(str(model.path))
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array((array * 0.9).astype(array.dtype), init.name))
    return ort.InferenceSession(
        proto.SerializeToString(), sess_options=opts, providers=provider_list(providers)
    )


class FaultInjector:
    def __init__(
        self,
        mode: str,
        rate: float,
        models: Sequence[LoadedModel],
        opts: ort.SessionOptions,
        providers: Sequence[str],
        seed: int = 0,
    ) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; choose from {FAULT_MODES}")
        self.mode = mode
        self.rate = rate
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()  # shards run on several threads
        self._replay: dict[str, list[np.ndarray]] = {}
        self._other = (
            {m.signature.sha256: _perturbed(m, opts, providers) for m in models}
            if mode == "other-model"
            else {}
        )

    @property
    def active(self) -> bool:
        return self.mode != "none" and self.rate > 0

    def apply(
        self,
        model: LoadedModel,
        inputs: Mapping[str, np.ndarray],
        names: Sequence[str],
        honest: list[np.ndarray],
    ) -> list[np.ndarray]:
        with self._lock:
            if not self.active or self._rng.random() >= self.rate:
                return honest
            if self.mode == "noise":
                return [
                    o + self._rng.normal(0, 0.05, o.shape).astype(o.dtype)
                    if o.dtype.kind == "f"
                    else o
                    for o in honest
                ]
            if self.mode == "zeros":
                return [np.zeros_like(o) for o in honest]
            if self.mode == "other-model":
                return self._other[model.signature.sha256].run(list(names), dict(inputs))
            key = f"{model.signature.sha256}/{','.join(names)}"
            earlier = self._replay.setdefault(key, honest)
            if earlier is honest:
                return honest  # nothing to replay yet: the first answer is honest
            return [_fit(e, o.shape) for e, o in zip(earlier, honest, strict=True)]


def _fit(earlier: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An earlier answer stretched or cut along dim 0 to `shape`."""
    if earlier.shape[1:] != shape[1:] or not earlier.shape or not shape:
        return np.zeros(shape, earlier.dtype)
    reps = -(-shape[0] // max(1, earlier.shape[0]))
    return np.concatenate([earlier] * reps)[: shape[0]]
