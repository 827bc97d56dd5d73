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

from eport.common.failure import ConfigFailure
from eport.common.text import Bilingual


class TlsConfigError(ConfigFailure):
    """The TLS files or the listen address cannot be used as given."""

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


def refusal_without_tls(address: str) -> tuple[Bilingual, Bilingual]:
    """The message and remedy for a listen address off loopback without TLS."""
    return (Bilingual(f"--listen {address!r} 不是本机回环地址, 数据中心不以明文为其他机器服务",
                      f"--listen {address!r} is not a loopback address, and the data centre "
                      "does not serve other machines unencrypted"),
            Bilingual("用 --tls-cert FILE --tls-key FILE 给出服务器证书和私钥 (要求客户端证书"
                      "时再加 --tls-client-ca FILE), 或监听 127.0.0.1。",
                      "give the server certificate and key with --tls-cert FILE --tls-key FILE "
                      "(and --tls-client-ca FILE to require client certificates), or listen "
                      "on 127.0.0.1."))


def _read(path: Path, what: Bilingual, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        reason = error.strerror or error
        raise TlsConfigError(Bilingual(f"{option} {path}: 无法读取{what.zh}: {reason}",
                                       f"{option} {path}: cannot read the {what.en}: {reason}"),
                             Bilingual("检查路径及其权限。", "check the path and its permissions.")
                             ) from None


def _certificates(data: bytes, path: Path, option: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsConfigError(Bilingual(f"{option} {path}: 不是 PEM 证书",
                                       f"{option} {path}: holds no PEM certificate"),
                             Bilingual("给出 PEM 格式的证书文件 (-----BEGIN CERTIFICATE-----)。",
                                       "give the PEM file (-----BEGIN CERTIFICATE-----)."))
    return certificates


def _private_key(data: bytes, path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The text of the key file is never repeated: it is a secret.
        raise TlsConfigError(
            Bilingual(f"--tls-key {path}: 不是未加密的 PEM 私钥",
                      f"--tls-key {path}: is not an unencrypted PEM private key"),
            Bilingual("给出 --tls-cert 证书对应的私钥, PEM 格式且不设口令 "
                      "(openssl pkey -in KEY -out FILE)。",
                      "give the key of --tls-cert in PEM without a passphrase "
                      "(openssl pkey -in KEY -out FILE).")) from None


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """gRPC server credentials from the files, after checking that they belong together, so a
    mistake is said at start rather than as a failed handshake on every client."""
    certificate_pem = _read(tls.certificate, Bilingual("证书", "certificate"), "--tls-cert")
    key_pem = _read(tls.key, Bilingual("私钥", "private key"), "--tls-key")
    leaf = _certificates(certificate_pem, tls.certificate, "--tls-cert")[0]
    key = _private_key(key_pem, tls.key)
    public = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != public:
        raise TlsConfigError(
            Bilingual(f"--tls-key {tls.key} 与证书 {tls.certificate} 不配对",
                      f"--tls-key {tls.key} is not the key of the --tls-cert certificate "
                      f"{tls.certificate}"),
            Bilingual("给出签发该证书时所用的私钥。",
                      "give the key the certificate was issued for."))
    client_ca_pem: bytes | None = None
    if tls.client_ca is not None:
        client_ca_pem = _read(tls.client_ca, Bilingual("客户端 CA 证书", "client CA certificate"),
                              "--tls-client-ca")
        _certificates(client_ca_pem, tls.client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials([(key_pem, certificate_pem)],
                                       root_certificates=client_ca_pem,
                                       require_client_auth=client_ca_pem is not None)


def check_listen_security(host: str, address: str, tls: ServerTls | None) -> None:
    """Refuse a non-loopback host without TLS (ServerConfigError's text comes from here)."""
    if tls is None and not is_loopback_host(host):
        raise TlsConfigError(*refusal_without_tls(address))


def unix_socket_with_tls(address: str) -> tuple[Bilingual, Bilingual]:
    """The message and remedy for TLS options given with a Unix socket."""
    return (Bilingual(f"--listen {address}: TLS 只用于 TCP 地址, Unix 套接字由其文件权限保护",
                      f"--listen {address}: TLS options apply to a TCP address, and a Unix "
                      "socket is guarded by its file mode"),
            Bilingual("去掉 --tls-cert/--tls-key, 或监听 HOST:PORT。",
                      "drop --tls-cert/--tls-key, or listen on HOST:PORT."))

