"""The worker's model repository: every *.onnx file in a folder, known by name and sha256."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from shardnet.errors import ModelNotFound, ShardnetError
from shardnet.protocol.tensors import ONNX_TO_DATATYPE
from shardnet.signature import ANY, ModelSignature, TensorSpec

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ModelLoadError(ShardnetError):
    """A model file could not be loaded."""


def session_options(intra_op_threads: int, graph_optimization: str) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    # Shards run concurrently on separate threads; one inter-op thread per run is enough.
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = _OPT_LEVELS[graph_optimization]
    return opts


def provider_list(providers: Sequence[str]) -> list:
    # TF32 matmuls make CUDA results drift from CPU ones (DESIGN.md); keep full fp32.
    return [
        ("CUDAExecutionProvider", {"use_tf32": "0"}) if p == "CUDAExecutionProvider" else p
        for p in providers
    ]


def _spec(arg: ort.NodeArg) -> TensorSpec:
    datatype = ONNX_TO_DATATYPE.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else ANY for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


@dataclass(frozen=True)
class LoadedModel:
    signature: ModelSignature
    session: ort.InferenceSession
    path: Path

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str],
        run_options: ort.RunOptions | None = None,
    ) -> list[np.ndarray]:
        return self.session.run(list(outputs), dict(inputs), run_options)


def load_model(path: Path, opts: ort.SessionOptions, providers: Sequence[str]) -> LoadedModel:
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        session = ort.InferenceSession(data, sess_options=opts, providers=provider_list(providers))
    except Exception as exc:  # onnxruntime raises several unrelated types for bad models
        raise ModelLoadError(f"cannot load {path}: {exc}") from exc
    signature = ModelSignature(
        name=path.stem,
        sha256=sha256,
        inputs=tuple(_spec(a) for a in session.get_inputs()),
        outputs=tuple(_spec(a) for a in session.get_outputs()),
    )
    return LoadedModel(signature, session, path)


class ModelRepository:
    """Models by name. Each is also reachable by its sha256 as `version`."""

    def __init__(self, models: Mapping[str, LoadedModel]) -> None:
        self._models = dict(models)

    @classmethod
    def load_dir(
        cls, folder: Path, opts: ort.SessionOptions, providers: Sequence[str]
    ) -> ModelRepository:
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelLoadError(f"models folder {folder} does not exist")
        models = {}
        for path in sorted(folder.glob("*.onnx")):
            model = load_model(path, opts, providers)
            models[model.signature.name] = model
            log.info("loaded %s (sha256 %s)", path.name, model.signature.sha256[:12])
        if not models:
            raise ModelLoadError(f"no *.onnx models in {folder}")
        return cls(models)

    def __iter__(self):
        return iter(self._models.values())

    def get(self, name: str, version: str = "") -> LoadedModel:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"no model named {name!r} on this worker")
        if version and version != model.signature.sha256:
            raise ModelNotFound(
                f"model {name!r} here has version (sha256) {model.signature.sha256}, not {version}"
            )
        return model
