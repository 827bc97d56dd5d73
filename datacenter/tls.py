"""The data centre's TLS: what a listener off loopback must have, read and checked before serving.

Requests are signed by the cards, but a signature does not hide a declaration's contents from
the network, nor stop a replay inside the clock-skew window by someone who reads it. So a TCP
address that is not loopback is served over TLS only (--tls-cert/--tls-key); --tls-client-ca
makes the server ask every client for a certificate signed by that CA and refuse the
handshake without one. Loopback stays plaintext unless TLS is configured.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from eport.common.failure import EportFailure


class TlsConfigError(EportFailure):
    """The TLS files cannot be used; the message (Chinese and English) has a remedy."""

    code = "TLS_CONFIG"


@dataclass(frozen=True)
class ServerTls:
    certificate: Path
    key: Path
    client_ca: Path | None = None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def refusal_without_tls(address: str) -> str:
    return (f"--listen {address!r} 不是本机回环地址, 不加密不能监听 / is not a loopback "
            "address, and the data centre does not serve other machines unencrypted. Remedy: "
            "give the server certificate and key with --tls-cert FILE --tls-key FILE (and "
            "--tls-client-ca FILE to require client certificates), or listen on 127.0.0.1.")


def _read(path: Path, what: str, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"{option} {path}: 无法读取{what} / cannot read the {what}: "
                             f"{error.strerror or error}. Remedy: check the path and its "
                             "permissions.") from None


def _certificates(data: bytes, path: Path, option: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsConfigError(f"{option} {path}: 不是 PEM 证书 / holds no PEM certificate. "
                             "Remedy: give the PEM file (-----BEGIN CERTIFICATE-----).")
    return certificates


def _private_key(data: bytes, path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The text of the key file is never repeated: it is a secret.
        raise TlsConfigError(f"--tls-key {path}: 不是未加密的 PEM 私钥 / is not an "
                             "unencrypted PEM private key. Remedy: give the key of --tls-cert "
                             "in PEM without a passphrase (openssl pkey -in KEY -out FILE)."
                             ) from None


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """gRPC server credentials from the files, after checking that they belong together, so a
    mistake is said at start rather than as a failed handshake on every client."""
    certificate_pem = _read(tls.certificate, "证书 certificate", "--tls-cert")
    key_pem = _read(tls.key, "私钥 private key", "--tls-key")
    leaf = _certificates(certificate_pem, tls.certificate, "--tls-cert")[0]
    key = _private_key(key_pem, tls.key)
    public = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != public:
        raise TlsConfigError(f"--tls-key {tls.key} 与证书 {tls.certificate} 不配对 / is not the "
                             "key of the --tls-cert certificate. Remedy: give the key the "
                             "certificate was issued for.")
    client_ca_pem: bytes | None = None
    if tls.client_ca is not None:
        client_ca_pem = _read(tls.client_ca, "客户端 CA 证书 client CA certificate",
                              "--tls-client-ca")
        _certificates(client_ca_pem, tls.client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials([(key_pem, certificate_pem)],
                                       root_certificates=client_ca_pem,
                                       require_client_auth=client_ca_pem is not None)


def check_listen_security(host: str, address: str, tls: ServerTls | None) -> None:
    """Refuse a non-loopback host without TLS (ServerConfigError's text comes from here)."""
    if tls is None and not is_loopback_host(host):
        raise TlsConfigError(refusal_without_tls(address))


def unix_socket_with_tls(address: str) -> str:
    return (f"--listen {address}: TLS 只用于 TCP 地址 / TLS options apply to a TCP address, "
            "and a Unix socket is guarded by its file mode. Remedy: drop --tls-cert/--tls-key, "
            "or listen on HOST:PORT.")

