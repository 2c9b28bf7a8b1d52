"""Errors raised by the chain layer; web3/aiohttp exceptions are translated into these."""

from __future__ import annotations

from typing import Any

import grpc

from shardnet.errors import ShardnetError


class ChainError(ShardnetError):
    """A chain operation failed: bad deployment file, wrong chain, missing tool, RPC error."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ChainUnavailable(ChainError):
    """The chain's RPC endpoint cannot be reached or did not answer in time."""

    code = grpc.StatusCode.UNAVAILABLE


class TxReverted(ChainError):
    """A contract call or transaction reverted.

    `error_name` is the contract's custom error (e.g. "JobNotOpen") decoded from the revert
    data with the ABI, and `args` its arguments by name; both are None/empty when the revert
    carried no decodable custom error (then `data` holds whatever came back).
    """

    def __init__(
        self,
        message: str,
        *,
        error_name: str | None = None,
        args: dict[str, Any] | None = None,
        data: str | None = None,
        tx_hash: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_name = error_name
        self.error_args = dict(args or {})
        self.data = data
        self.tx_hash = tx_hash

    def __str__(self) -> str:
        if self.error_name is None:
            return super().__str__()
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.error_args.items())
        return f"{super().__str__()}: {self.error_name}({args})"


def _fmt(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
