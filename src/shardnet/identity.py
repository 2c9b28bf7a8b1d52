"""A node's identity: an Ed25519 key (its libp2p peer identity, the `peerKey` it registers on
chain) and an Ethereum key (its chain address; it signs receipts and transactions).

Both live in one folder, encrypted with one passphrase: `ed25519.pem` (PKCS#8, encrypted)
and `ethereum.json` (a standard v3 keystore). Private keys are never printed or logged.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from shardnet.errors import ShardnetError

ED25519_FILE = "ed25519.pem"
ETHEREUM_FILE = "ethereum.json"
PASSPHRASE_ENV = "SHARDNET_PASSPHRASE"
# scrypt cost of the keystore; throwaway devnet keys may use a cheaper one.
DEFAULT_KDF_N = 2**18


class IdentityError(ShardnetError):
    """A key folder is missing, unreadable, or the passphrase is wrong."""


@dataclass(frozen=True)
class Identity:
    ed25519: Ed25519PrivateKey = field(repr=False)
    account: LocalAccount = field(repr=False)

    @property
    def peer_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self.ed25519.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def address(self) -> str:
        return self.account.address

    def __repr__(self) -> str:
        return f"Identity(address={self.address}, peer_key={self.peer_key.hex()})"

    @classmethod
    def create(cls, folder: Path, passphrase: str, *, kdf_n: int = DEFAULT_KDF_N) -> Identity:
        folder = Path(folder)
        if (folder / ED25519_FILE).exists() or (folder / ETHEREUM_FILE).exists():
            raise IdentityError(f"{folder} already holds keys; refusing to overwrite them")
        if not passphrase:
            raise IdentityError("an empty passphrase would leave the keys unencrypted")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        ed = Ed25519PrivateKey.generate()
        account = Account.create()
        pem = ed.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )
        keystore = Account.encrypt(account.key, passphrase, iterations=kdf_n)
        _write_private(folder / ED25519_FILE, pem)
        _write_private(folder / ETHEREUM_FILE, json.dumps(keystore).encode())
        return cls(ed, account)

    @classmethod
    def load(cls, folder: Path, passphrase: str) -> Identity:
        folder = Path(folder)
        try:
            pem = (folder / ED25519_FILE).read_bytes()
            keystore = json.loads((folder / ETHEREUM_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise IdentityError(
                f"cannot read keys in {folder} ({exc}); create them with `shardnet keys new`"
            ) from exc
        try:
            ed = serialization.load_pem_private_key(pem, passphrase.encode())
            account = Account.from_key(Account.decrypt(keystore, passphrase))
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"wrong passphrase for the keys in {folder}") from exc
        if not isinstance(ed, Ed25519PrivateKey):
            raise IdentityError(f"{folder / ED25519_FILE} is not an Ed25519 key")
        return cls(ed, account)

    def sign_text(self, text: str) -> bytes:
        """EIP-191 signature of `text` by the chain key."""
        return bytes(self.account.sign_message(encode_defunct(text=text)).signature)


def worker_claim(
    worker_id: str, endpoint: str, address: str, peer_key: bytes, tls_fingerprint: str
) -> str:
    """The text a worker signs with its chain key when it registers with a coordinator:
    it binds its address, peer key and TLS certificate together."""
    return (
        f"shardnet worker {worker_id} at {endpoint} is paid at {address} "
        f"with peer key {peer_key.hex()} and TLS certificate sha256 {tls_fingerprint}"
    )


def heartbeat_text(worker_id: str, timestamp: float) -> str:
    return f"shardnet heartbeat {worker_id} {timestamp!r}"


def verify_peer_signature(peer_key: bytes, text: str, signature: bytes) -> bool:
    """Whether `signature` is the Ed25519 signature of `text` by `peer_key`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(peer_key).verify(signature, text.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def recover_text_signer(text: str, signature: bytes) -> str:
    try:
        return Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # eth_account raises several types for malformed signatures
        raise IdentityError(f"bad signature: {exc}") from exc


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def open_identity(folder: Path, passphrase_file: Path | None, *, create: bool) -> Identity:
    """Load the keys in `folder`, creating them first when `create` and none exist yet
    (e.g. a fresh container's first start)."""
    passphrase = read_passphrase(passphrase_file)
    if create and not (Path(folder) / ETHEREUM_FILE).exists():
        return Identity.create(folder, passphrase)
    return Identity.load(folder, passphrase)


def read_passphrase(passphrase_file: Path | None) -> str:
    """From --passphrase-file, else $SHARDNET_PASSPHRASE, else a prompt on a terminal."""
    if passphrase_file is not None:
        try:
            return Path(passphrase_file).read_text().rstrip("\n")
        except OSError as exc:
            raise IdentityError(f"cannot read passphrase file: {exc}") from exc
    if PASSPHRASE_ENV in os.environ:
        return os.environ[PASSPHRASE_ENV]
    if sys.stdin.isatty():
        return getpass.getpass("key passphrase: ")
    raise IdentityError(f"no passphrase: use --passphrase-file or set {PASSPHRASE_ENV}")
