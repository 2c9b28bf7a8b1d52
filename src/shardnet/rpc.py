"""gRPC plumbing shared by the worker and the coordinator: options, error translation,
server start-up and readiness announcement."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from shardnet.errors import RemoteError, ShardnetError

log = logging.getLogger(__name__)

# tritonclient sends messages up to INT32_MAX; accept the same.
MAX_MESSAGE_BYTES = 2**31 - 1
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

R = TypeVar("R")


def translate_errors(
    method: Callable[..., Awaitable[R]],
) -> Callable[..., Awaitable[R]]:
    """Decorator for grpc.aio servicer methods: a ShardnetError becomes its gRPC status with
    its message; anything unexpected becomes INTERNAL (logged with its traceback) instead of
    an opaque UNKNOWN. The server keeps serving either way."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except ShardnetError as exc:
            message = exc.details if isinstance(exc, RemoteError) else str(exc)
            # a status without a message tells the caller nothing: name at least the kind
            await context.abort(exc.code, message or type(exc).__doc__ or type(exc).__name__)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # broad on purpose: a bug must not look like a client error
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc!r}")
        raise AssertionError("unreachable")  # context.abort always raises

    return wrapper


def remote_error(exc: grpc.aio.AioRpcError) -> RemoteError:
    return RemoteError(exc.code(), exc.details() or "")


def create_server(max_request_bytes: int = MAX_MESSAGE_BYTES) -> grpc.aio.Server:
    """A server that accepts requests up to `max_request_bytes` (a bigger one gets
    RESOURCE_EXHAUSTED from gRPC before it is decoded) and sends any size."""
    return grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", max_request_bytes),
        ]
    )


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=GRPC_OPTIONS)


def bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Bind a port (0 = any free one), with TLS when `credentials` are given, and return
    the port actually bound."""
    address = f"{host}:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise ShardnetError(f"cannot listen on {host}:{port} (in use or not permitted)")
    return bound


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ShardnetError(f"{address!r} is not host:port")
    return host, int(port)


def announce_ready(ready_file: Path | None, **info: Any) -> None:
    """Write `info` as JSON to `ready_file` atomically, so a parent process waiting for the
    file sees either nothing or the whole record."""
    if ready_file is None:
        return
    ready_file = Path(ready_file)
    tmp = ready_file.with_name(ready_file.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(ready_file)
