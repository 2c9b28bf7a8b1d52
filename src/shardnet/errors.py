"""The package's exceptions. Each carries the gRPC status it maps to at a server boundary."""

from __future__ import annotations

import grpc


class ShardnetError(Exception):
    """Root of every error shardnet raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidRequest(ShardnetError):
    """The request is malformed: bad shape, dtype, byte length, names or parameters."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(ShardnetError):
    """No model (or no live worker serving it) under that name and version."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(ShardnetError):
    """The work cannot be done now: no worker can take it, or all attempts failed."""

    code = grpc.StatusCode.UNAVAILABLE


class Excluded(ShardnetError):
    """A worker was excluded from the network after failing verification."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Overloaded(ShardnetError):
    """Too much work queued; the caller should retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ShardnetError):
    """The job did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class RemoteError(ShardnetError):
    """A peer answered with a gRPC error; keeps its status code and message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"
