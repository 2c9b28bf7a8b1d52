"""TLS between coordinator and workers, pinned to the worker's own certificate.

Each worker makes a fresh self-signed certificate when it starts (ECDSA P-256: the gRPC
TLS stack here negotiates no Ed25519 signatures) and binds it to its identity by signing
the certificate's SHA-256 fingerprint with its keys (in its registration claim or its
signed advertisement). The coordinator trusts exactly that certificate as the only root
for that worker's channel, so nobody else can answer in the worker's name.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shardnet.rpc import GRPC_OPTIONS


@dataclass(frozen=True)
class TlsIdentity:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])


def make_tls_identity(host: str, *, peer_id: str = "", valid_days: int = 30) -> TlsIdentity:
    """A self-signed certificate for `host` (an IP address or a DNS name), naming the
    node's libp2p peer id in its common name."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shardnet worker"),
            x509.NameAttribute(NameOID.COMMON_NAME, peer_id or "anonymous"),
        ]
    )
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TlsIdentity(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def fingerprint(cert_pem: bytes) -> str:
    """Hex SHA-256 of the certificate's DER encoding."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_peer_id(cert_pem: bytes) -> str:
    """The peer id a shardnet certificate names ("" if none)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def pinned_channel(target: str, cert_pem: bytes) -> grpc.aio.Channel:
    """A channel that completes the TLS handshake only with the holder of `cert_pem`."""
    credentials = grpc.ssl_channel_credentials(root_certificates=cert_pem)
    return grpc.aio.secure_channel(target, credentials, options=GRPC_OPTIONS)
