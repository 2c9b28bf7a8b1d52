"""Model signatures (input/output names, datatypes, shapes) and request validation against them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from shardnet.errors import InvalidRequest
from shardnet.protocol import inference_pb2 as pb
from shardnet.protocol.tensors import DATATYPES, MAX_DIMS, MAX_ELEMENTS, datatype_of

ANY = -1  # a dimension of any size (symbolic or unknown in the ONNX graph)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # ANY for a variable dimension


@dataclass(frozen=True)
class ModelSignature:
    name: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batched(self) -> bool:
        """True when every input and output has a variable leading (batch) dimension, so a
        request can be split along dim 0 and the outputs concatenated back."""
        return all(t.shape and t.shape[0] == ANY for t in (*self.inputs, *self.outputs))

    def to_metadata(self) -> pb.ModelMetadataResponse:
        def specs(tensors):
            return [
                pb.ModelMetadataResponse.TensorMetadata(
                    name=t.name, datatype=t.datatype, shape=list(t.shape)
                )
                for t in tensors
            ]

        return pb.ModelMetadataResponse(
            name=self.name,
            versions=[self.sha256],
            platform="onnxruntime_onnx",
            inputs=specs(self.inputs),
            outputs=specs(self.outputs),
        )

    @classmethod
    def from_metadata(cls, metadata: pb.ModelMetadataResponse, sha256: str) -> ModelSignature:
        def specs(tensors):
            return tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in tensors)

        return cls(metadata.name, sha256, specs(metadata.inputs), specs(metadata.outputs))


def parse_metadata(metadata: pb.ModelMetadataResponse, sha256: str) -> ModelSignature:
    """The signature a peer announces, checked: every tensor named once, a known datatype,
    at most MAX_DIMS dimensions each of ANY or 0..MAX_ELEMENTS, and at least one output.
    Raises InvalidRequest naming the first problem."""
    what = f"model {metadata.name!r}"
    if not metadata.outputs:
        raise InvalidRequest(f"{what} has no outputs")
    for kind, tensors in (("input", metadata.inputs), ("output", metadata.outputs)):
        seen: set[str] = set()
        for t in tensors:
            if not t.name:
                raise InvalidRequest(f"{what} has an {kind} with an empty name")
            if t.name in seen:
                raise InvalidRequest(f"{what} has two {kind}s named {t.name!r}")
            seen.add(t.name)
            if t.datatype not in DATATYPES:
                raise InvalidRequest(f"{what}: {kind} {t.name!r} has datatype {t.datatype!r}")
            if len(t.shape) > MAX_DIMS or any(not ANY <= d <= MAX_ELEMENTS for d in t.shape):
                shape = list(t.shape) if len(t.shape) <= MAX_DIMS else f"of {len(t.shape)} dims"
                raise InvalidRequest(f"{what}: {kind} {t.name!r} has shape {shape}")
    return ModelSignature.from_metadata(metadata, sha256)


def _names(tensors: Sequence[TensorSpec]) -> str:
    return ", ".join(repr(t.name) for t in tensors)


def validate_inputs(sig: ModelSignature, arrays: Mapping[str, np.ndarray]) -> int | None:
    """Check a request's inputs against the signature; return the batch size (rows along
    dim 0) for a batched model, None otherwise. Raises InvalidRequest with a message that
    names the offending input."""
    expected = {t.name: t for t in sig.inputs}
    for name in arrays:
        if name not in expected:
            raise InvalidRequest(
                f"model {sig.name!r} has no input {name!r}; its inputs are {_names(sig.inputs)}"
            )
    missing = [n for n in expected if n not in arrays]
    if missing:
        raise InvalidRequest(
            f"model {sig.name!r} is missing input(s) {', '.join(map(repr, missing))}"
        )
    rows: int | None = None
    for spec in sig.inputs:
        array = arrays[spec.name]
        datatype = datatype_of(array)
        if datatype != spec.datatype:
            raise InvalidRequest(
                f"input {spec.name!r} of model {sig.name!r} is {spec.datatype}, got {datatype}"
            )
        if len(array.shape) != len(spec.shape) or any(
            want not in (ANY, got) for want, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise InvalidRequest(
                f"input {spec.name!r} of model {sig.name!r} has shape "
                f"{list(spec.shape)} (-1 = any), got {list(array.shape)}"
            )
        if sig.batched:
            if rows is None:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise InvalidRequest(
                    f"inputs disagree on the batch size (dim 0): {rows} vs {array.shape[0]} "
                    f"for {spec.name!r}"
                )
    if rows == 0:
        raise InvalidRequest(f"empty batch: the inputs of model {sig.name!r} have 0 rows")
    return rows


def select_outputs(sig: ModelSignature, requested: Sequence[str]) -> list[str]:
    """Names of the outputs to return: the requested ones in request order, or all."""
    if not requested:
        return [t.name for t in sig.outputs]
    known = {t.name for t in sig.outputs}
    for name in requested:
        if name not in known:
            raise InvalidRequest(
                f"model {sig.name!r} has no output {name!r}; its outputs are {_names(sig.outputs)}"
            )
    if len(set(requested)) != len(requested):
        raise InvalidRequest("an output is requested twice")
    return list(requested)
