"""Shard receipts: what a worker signs for every shard it answers (EIP-712, so JobEscrow
can check it), and the canonical digests of a shard's inputs and outputs.

A digest covers, for each tensor in order, its name, datatype, shape and raw bytes, each
length-prefixed: two parties that hold the same tensors compute the same 32 bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data

from shardnet.chain.contracts import RECEIPT_TYPES, Receipt, sign_receipt
from shardnet.errors import InvalidRequest

RECEIPT_JOB_PARAM = "shardnet.receipt_job"  # request: 0x hex bytes32 the receipt names
SHARD_ID_PARAM = "shardnet.shard_id"  # request: uint64 shard id the receipt names
RECEIPT_PARAM = "shardnet.receipt"  # response: the signed receipt as JSON


def tensors_digest(tensors: Sequence[tuple[str, str, Sequence[int], bytes]]) -> bytes:
    h = hashlib.sha256()
    for name, datatype, shape, raw in tensors:
        for part in (name.encode(), datatype.encode()):
            h.update(struct.pack("<I", len(part)) + part)
        h.update(struct.pack(f"<I{len(shape)}q", len(shape), *shape))
        h.update(struct.pack("<Q", len(raw)))
        h.update(raw)
    return h.digest()


def job_key(escrow_id: str | None, job_id: str) -> bytes:
    """The bytes32 a receipt names: the escrow job (so JobEscrow can slash with it), or a
    hash of the coordinator's job id for an unpaid job."""
    if escrow_id:
        return bytes.fromhex(escrow_id.removeprefix("0x"))
    return hashlib.sha256(job_id.encode()).digest()


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain receipts are signed in: the deployment's chain and escrow."""

    chain_id: int
    escrow: str

    def as_dict(self) -> dict:
        return {
            "name": "shardnet",
            "version": "1",
            "chainId": self.chain_id,
            "verifyingContract": self.escrow,
        }


@dataclass(frozen=True)
class SignedReceipt:
    receipt: Receipt
    signature: bytes

    @classmethod
    def sign(cls, receipt: Receipt, private_key, domain: Domain) -> SignedReceipt:
        signature = sign_receipt(
            receipt, private_key, chain_id=domain.chain_id, escrow=domain.escrow
        )
        return cls(receipt, signature)

    def signer(self, domain: Domain) -> str:
        message = dict(
            zip((f["name"] for f in RECEIPT_TYPES["Receipt"]), self.receipt, strict=True)
        )
        signable = encode_typed_data(domain.as_dict(), RECEIPT_TYPES, message)
        try:
            return Account.recover_message(signable, signature=self.signature)
        except Exception as exc:  # eth_account raises several types for malformed signatures
            raise InvalidRequest(f"receipt signature is malformed: {exc}") from None

    def to_json(self) -> str:
        r = self.receipt
        return json.dumps(
            {
                "job_id": "0x" + r.job_id.hex(),
                "shard_id": r.shard_id,
                "model_sha256": "0x" + r.model_sha256.hex(),
                "input_digest": "0x" + r.input_digest.hex(),
                "output_digest": "0x" + r.output_digest.hex(),
                "worker": r.worker,
                "signature": "0x" + self.signature.hex(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SignedReceipt:
        try:
            d = json.loads(text)

            def b(key: str, size: int | None = 32) -> bytes:
                value = bytes.fromhex(d[key].removeprefix("0x"))
                if size is not None and len(value) != size:
                    raise ValueError(f"{key} has {len(value)} bytes")
                return value

            receipt = Receipt(
                b("job_id"),
                int(d["shard_id"]),
                b("model_sha256"),
                b("input_digest"),
                b("output_digest"),
                str(d["worker"]),
            )
            return cls(receipt, b("signature", 65))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequest(f"malformed receipt: {exc}") from None
