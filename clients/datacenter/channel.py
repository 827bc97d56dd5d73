"""The channel to the data centre: plaintext on a Unix socket or loopback, TLS otherwise.

A data centre off loopback serves TLS only (datacenter/tls.py), so a client never sends a
declaration in plaintext to another machine. The TLS material comes from the environment, one
place for every client command (customs, bonded, auth):

    EPORT_DATACENTER_CA     the CA certificate(s) (PEM) the server's certificate must chain to;
                            unset: the system's trusted roots. Set, it turns TLS on for a
                            loopback address too.
    EPORT_DATACENTER_CERT   this client's certificate (PEM), when the data centre asks for one
    EPORT_DATACENTER_KEY    its private key (unencrypted PEM)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from eport.common.customs.endpoint import channel_target, unix_socket_path
from eport.common.failure import EportFailure

CA_ENV = "EPORT_DATACENTER_CA"
CERT_ENV = "EPORT_DATACENTER_CERT"
KEY_ENV = "EPORT_DATACENTER_KEY"


class ChannelConfigError(EportFailure):
    """The TLS settings cannot be used; the message (Chinese and English) has a remedy."""

    code = "CHANNEL_CONFIG"


@dataclass(frozen=True)
class ClientTls:
    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ClientTls:
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value) if value else None

        return cls(path(CA_ENV), path(CERT_ENV), path(KEY_ENV))


def _loopback(target: str) -> bool:
    host = target.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ChannelConfigError(f"${name} {path}: 无法读取 / cannot be read: "
                                 f"{error.strerror or error}. Remedy: correct ${name}."
                                 ) from None


def credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    if (tls.certificate is None) != (tls.key is None):
        raise ChannelConfigError(f"${CERT_ENV} 和 ${KEY_ENV} 须同时设置 / set both ${CERT_ENV} "
                                 f"and ${KEY_ENV}, or neither.")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, CA_ENV) if tls.ca else None,
        private_key=_read(tls.key, KEY_ENV) if tls.key else None,
        certificate_chain=_read(tls.certificate, CERT_ENV) if tls.certificate else None)


def open_channel(address: str, tls: ClientTls | None = None) -> grpc.Channel:
    """A channel to `address` (ValueError when it is no address; ChannelConfigError)."""
    target = channel_target(address)
    chosen = ClientTls.from_environment() if tls is None else tls
    if unix_socket_path(address) is not None or (_loopback(target) and chosen.ca is None):
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials(chosen))
