"""The demo model: an MLP built with onnx.helper from a fixed seed, so every machine builds
the same bytes (and the same sha256) without downloading anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEMO_MODEL_NAME = "mlp"


def build_mlp(
    *,
    d_in: int = 64,
    hidden: int = 256,
    depth: int = 2,
    d_out: int = 10,
    seed: int = 0,
    name: str = DEMO_MODEL_NAME,
) -> onnx.ModelProto:
    """x[N, d_in] -> `depth` x (Gemm + Relu) of width `hidden` -> logits[N, d_out], probs."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev, width = "x", d_in
    for i, (fan_in, fan_out) in enumerate([(d_in, hidden)] + [(hidden, hidden)] * (depth - 1)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (0.01 * rng.standard_normal(fan_out)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"]),
            helper.make_node("Relu", [f"h{i}"], [f"a{i}"]),
        ]
        prev, width = f"a{i}", fan_out
    w = (rng.standard_normal((width, d_out)) / np.sqrt(width)).astype(np.float32)
    inits += [
        numpy_helper.from_array(w, "w_out"),
        numpy_helper.from_array(np.zeros(d_out, np.float32), "b_out"),
    ]
    nodes += [
        helper.make_node("Gemm", [prev, "w_out", "b_out"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d_in])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", d_out]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", d_out]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="shardnet"
    )
    model.ir_version = 9  # readable by onnxruntime releases older than the onnx package
    onnx.checker.check_model(model)
    return model


def write_demo_model(folder: Path, **kwargs) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = build_mlp(**kwargs)
    path = folder / f"{model.graph.name}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def demo_inputs(rows: int, d_in: int = 64, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((rows, d_in)).astype(np.float32)}
