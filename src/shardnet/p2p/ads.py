"""Signed capability advertisements that workers gossip, and the table a subscriber keeps.

Pure code: no libp2p import, so the rules for trusting an ad are testable without a network.

Wire format: one UTF-8 JSON object holding every `Advertisement` field (bytes as hex,
`models` as a list of `[name, sha256]` pairs) plus `signature`, the hex Ed25519 signature by
`peer_key` over `SIGNING_DOMAIN + canonical JSON of the other fields` (sorted keys, no
whitespace, ASCII). The signature covers the canonical re-encoding of what was parsed, so two
encodings of one ad cannot carry different meanings.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import ssl
from dataclasses import dataclass, field, fields
from typing import Any, NewType

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from shardnet.errors import ShardnetError

PeerId = NewType("PeerId", str)

MAX_AD_BYTES = 64 * 1024
# Clocks on volunteer machines drift; an ad stamped a little ahead of ours is still honest.
MAX_FUTURE_SKEW_S = 5.0
SIGNING_DOMAIN = b"shardnet/ad/v1\n"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHAIN_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# libp2p PublicKey protobuf {Type: Ed25519 (1), Data: <32 bytes>}, wrapped in an identity
# multihash (code 0x00, length 36): keys this small are embedded in the peer id, not hashed.
_ED25519_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


class Reason(enum.StrEnum):
    """Why an ad was rejected."""

    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    PEER_ID_MISMATCH = "peer_id_mismatch"
    CERT_MISMATCH = "cert_mismatch"
    BAD_SIGNATURE = "bad_signature"
    FROM_FUTURE = "from_future"
    EXPIRED = "expired"
    REPLAY = "replay"


class AdRejected(ShardnetError):
    """An advertisement failed parsing, verification, freshness or replay checks."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Advertisement:
    """What a worker claims about itself.

    `cert_pem` and `cert_sha256` are both empty for a worker that serves plaintext gRPC (dev
    only). `hardware` is left out of hashing: it is a plain dict.
    """

    peer_key: bytes
    peer_id: PeerId
    endpoint: str
    cert_sha256: str
    cert_pem: str
    chain_address: str
    models: tuple[tuple[str, str], ...]
    hardware: dict[str, Any] = field(hash=False)
    price_per_row_wei: int
    timestamp: float
    seq: int
    ttl_s: float

    def expires_at(self) -> float:
        return self.timestamp + self.ttl_s


_FIELD_NAMES = frozenset(f.name for f in fields(Advertisement))


def peer_id_from_key(peer_key: bytes) -> PeerId:
    """The libp2p peer id (base58btc, `12D3KooW...`) of a raw 32-byte Ed25519 public key."""
    if len(peer_key) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(peer_key)}")
    return PeerId(_b58encode(_ED25519_PEER_ID_PREFIX + peer_key))


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def cert_fingerprint(cert_pem: str) -> str:
    """Hex sha256 of the DER form of a PEM certificate (what a TLS client pins)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def encode(ad: Advertisement, private_key: Ed25519PrivateKey) -> bytes:
    """Canonical signed bytes of `ad`, signed by `private_key` (whose public half is
    `ad.peer_key`, else ValueError)."""
    if public_key_bytes(private_key) != ad.peer_key:
        raise ValueError("the signing key does not match ad.peer_key")
    body = _to_json_fields(ad)
    signature = private_key.sign(SIGNING_DOMAIN + _canonical(body))
    return _canonical({**body, "signature": signature.hex()})


def decode(data: bytes) -> Advertisement:
    """Parse `data` strictly (no signature check). Raises `AdRejected` on any deviation."""
    return _parse(data)[0]


def verify(data: bytes) -> Advertisement:
    """Parse `data` and check it is self-consistent and signed by its own `peer_key`.

    Does not check freshness or replay; that needs a clock and history (`AdBook`).
    """
    ad, signature = _parse(data)
    if peer_id_from_key(ad.peer_key) != ad.peer_id:
        raise AdRejected(Reason.PEER_ID_MISMATCH, f"{ad.peer_id} is not the id of its peer_key")
    if ad.cert_pem and cert_fingerprint(ad.cert_pem) != ad.cert_sha256:
        raise AdRejected(Reason.CERT_MISMATCH, "cert_sha256 is not the sha256 of cert_pem")
    try:
        Ed25519PublicKey.from_public_bytes(ad.peer_key).verify(
            signature, SIGNING_DOMAIN + _canonical(_to_json_fields(ad))
        )
    except InvalidSignature:
        raise AdRejected(
            Reason.BAD_SIGNATURE, f"signature does not verify for {ad.peer_id}"
        ) from None
    return ad


class AdBook:
    """A subscriber's table of the latest trusted ad per peer.

    It remembers the highest accepted `seq` of every peer even after its ad expires, so an
    old ad cannot be replayed into the book later.
    """

    def __init__(self) -> None:
        self._ads: dict[bytes, Advertisement] = {}
        self._high_seq: dict[bytes, int] = {}

    def accept(self, data: bytes, now: float) -> Advertisement | None:
        """Verify `data` and make it the peer's current ad.

        Returns the new ad, or None when `data` is an identical re-delivery of the peer's
        latest accepted ad (gossip delivers copies; the book is unchanged). Raises
        `AdRejected` for a malformed, forged, stale, future-dated or replayed ad.
        """
        ad = verify(data)
        if ad.timestamp - now > MAX_FUTURE_SKEW_S:
            raise AdRejected(
                Reason.FROM_FUTURE, f"timestamp is {ad.timestamp - now:.1f} s ahead of now"
            )
        if now - ad.timestamp > ad.ttl_s:
            raise AdRejected(Reason.EXPIRED, f"expired {now - ad.expires_at():.1f} s ago")
        last = self._high_seq.get(ad.peer_key)
        if last is not None and ad.seq <= last:
            if ad.seq == last and self._ads.get(ad.peer_key) == ad:
                return None
            raise AdRejected(Reason.REPLAY, f"seq {ad.seq} is not above {last} for {ad.peer_id}")
        self._ads[ad.peer_key] = ad
        self._high_seq[ad.peer_key] = ad.seq
        return ad

    def expire(self, now: float) -> list[Advertisement]:
        """Drop and return the ads whose `timestamp + ttl_s < now`."""
        gone = [ad for ad in self._ads.values() if ad.expires_at() < now]
        for ad in gone:
            del self._ads[ad.peer_key]
        return gone

    def current(self) -> list[Advertisement]:
        """The live ads, ordered by peer id."""
        return sorted(self._ads.values(), key=lambda ad: ad.peer_id)

    def __len__(self) -> int:
        return len(self._ads)


# ---- wire helpers ----------------------------------------------------------------------


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def _to_json_fields(ad: Advertisement) -> dict[str, Any]:
    return {
        "peer_key": ad.peer_key.hex(),
        "peer_id": ad.peer_id,
        "endpoint": ad.endpoint,
        "cert_sha256": ad.cert_sha256,
        "cert_pem": ad.cert_pem,
        "chain_address": ad.chain_address,
        "models": [list(m) for m in ad.models],
        "hardware": ad.hardware,
        "price_per_row_wei": ad.price_per_row_wei,
        "timestamp": ad.timestamp,
        "seq": ad.seq,
        "ttl_s": ad.ttl_s,
    }


def _parse(data: bytes) -> tuple[Advertisement, bytes]:
    if len(data) > MAX_AD_BYTES:
        raise AdRejected(Reason.OVERSIZE, f"{len(data)} bytes > {MAX_AD_BYTES}")
    try:
        obj = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AdRejected(Reason.MALFORMED, f"not a JSON document: {exc}") from exc
    if not isinstance(obj, dict):
        raise AdRejected(Reason.MALFORMED, "not a JSON object")
    expected = _FIELD_NAMES | {"signature"}
    if obj.keys() != expected:
        missing = sorted(expected - obj.keys())
        unknown = sorted(obj.keys() - expected)
        raise AdRejected(Reason.MALFORMED, f"missing fields {missing}, unknown fields {unknown}")
    try:
        ad = Advertisement(
            peer_key=_hex(obj, "peer_key", 32),
            peer_id=PeerId(_str(obj, "peer_id")),
            endpoint=_endpoint(obj),
            cert_sha256=_cert_sha256(obj),
            cert_pem=_cert_pem(obj),
            chain_address=_chain_address(obj),
            models=_models(obj),
            hardware=_type(obj, "hardware", dict),
            price_per_row_wei=_int(obj, "price_per_row_wei"),
            timestamp=_finite(obj, "timestamp"),
            seq=_int(obj, "seq"),
            ttl_s=_finite(obj, "ttl_s", positive=True),
        )
        signature = _hex(obj, "signature", 64)
    except _FieldError as exc:
        raise AdRejected(Reason.MALFORMED, str(exc)) from None
    return ad, signature


class _FieldError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate keys")
    return obj


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _type(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj[name]
    # bool is a subclass of int; JSON true is never a number here.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _FieldError(f"{name} must be a {kind.__name__}")
    return value


def _str(obj: dict[str, Any], name: str) -> str:
    return _type(obj, name, str)


def _int(obj: dict[str, Any], name: str) -> int:
    value = _type(obj, name, int)
    if value < 0:
        raise _FieldError(f"{name} must be >= 0")
    return value


def _finite(obj: dict[str, Any], name: str, *, positive: bool = False) -> float:
    value = float(_type(obj, name, (int, float)))  # type: ignore[arg-type]
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise _FieldError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}")
    return value


def _hex(obj: dict[str, Any], name: str, length: int) -> bytes:
    text = _str(obj, name)
    if len(text) != 2 * length or not re.fullmatch(r"[0-9a-f]*", text):
        raise _FieldError(f"{name} must be {length} bytes as lowercase hex")
    return bytes.fromhex(text)


def _cert_sha256(obj: dict[str, Any]) -> str:
    text = _str(obj, "cert_sha256")
    if bool(text) != bool(obj["cert_pem"]):
        raise _FieldError("cert_sha256 and cert_pem must be both set or both empty")
    if text and not _HEX64.fullmatch(text):
        raise _FieldError("cert_sha256 must be a lowercase hex sha256")
    return text


def _cert_pem(obj: dict[str, Any]) -> str:
    text = _str(obj, "cert_pem")
    if text:
        try:
            ssl.PEM_cert_to_DER_cert(text)
        except ValueError as exc:
            raise _FieldError(f"cert_pem is not a PEM certificate: {exc}") from None
    return text


def _endpoint(obj: dict[str, Any]) -> str:
    text = _str(obj, "endpoint")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _FieldError("endpoint must be host:port")
    return text


def _chain_address(obj: dict[str, Any]) -> str:
    text = _str(obj, "chain_address")
    if text and not _CHAIN_ADDRESS.fullmatch(text):
        raise _FieldError("chain_address must be empty or a 0x-prefixed 20-byte hex address")
    return text


def _models(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    models = _type(obj, "models", list)
    out = []
    for entry in models:
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
            or not entry[0]
            or not isinstance(entry[1], str)
            or not _HEX64.fullmatch(entry[1])
        ):
            raise _FieldError("models must be [name, lowercase hex sha256] pairs")
        out.append((entry[0], entry[1]))
    return tuple(out)


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    digits = []
    while n:
        n, rem = divmod(n, 58)
        digits.append(_B58_ALPHABET[rem])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(digits))
