"""Who is asking: the checks every signed request passes before it may touch the store.

The order is fixed so each refusal names the first thing wrong: the certificate (parse, chain
to a trust anchor, E-port identity, validity now), then the signature over the payload bytes
with the algorithm the key allows, then the envelope (canonical JSON, audience, method, time).
The nonce is checked by the store, inside the transaction of the request's effects, so that a
replay and the original cannot both succeed.

What never changes for a certificate (parse, chain, identity) is cached by its DER: an SM2
chain check is a pure-Python verification, far dearer than the request itself.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from eport.common import sm2
from eport.common.customs.envelope import AUDIENCE, EnvelopeError, parse_payload
from eport.common.profile import EPORT_EXTENSION_OID, CardKind, EportProfile, ProfileError
from eport.daemon.service.certificates import (
    CardCertificate,
    ChainState,
    KeyKind,
    chain_of,
    load_certificate,
)
from eport.daemon.service.errors import EportError
from eport.datacenter.errors import DataCenterError, bad_request
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

DEFAULT_MAX_CLOCK_SKEW = 300
_CACHE_SIZE = 4096
_CACHEABLE_BYTES = 16 * 1024  # E-port card certificates are 1 to 2 KB
_EXTENSION_OID = x509.ObjectIdentifier(EPORT_EXTENSION_OID)

# Which signature algorithms each key may use: an RSA card's signature is never checked as
# ECDSA or SM2 (and vice versa), whatever the request claims.
_ALLOWED: dict[KeyKind, frozenset[int]] = {
    KeyKind.RSA_1024: frozenset({pb.SHA1_WITH_RSA, pb.SHA256_WITH_RSA}),
    KeyKind.RSA_2048: frozenset({pb.SHA1_WITH_RSA, pb.SHA256_WITH_RSA}),
    KeyKind.EC_P256: frozenset({pb.ECDSA_P256_SHA256}),
    KeyKind.SM2: frozenset({pb.SM2_WITH_SM3}),
}


@dataclass(frozen=True)
class Identity:
    """The caller, from the certificate's E-port extension only."""

    card_id: str
    customs_code: str
    credit_code: str
    enterprise_name: str
    kind: CardKind
    cert_number: str


@dataclass(frozen=True)
class VerifiedRequest:
    identity: Identity
    method: str
    body: dict[str, Any]
    nonce: str
    signed_at: datetime


@dataclass(frozen=True)
class _CertEntry:
    certificate: CardCertificate | None
    identity: Identity | None
    refusal: DataCenterError | None


def _identity_of(certificate: CardCertificate) -> Identity:
    try:
        extension = certificate.parsed.extensions.get_extension_for_oid(_EXTENSION_OID)
    except (x509.ExtensionNotFound, ValueError):
        raise DataCenterError(pb.NOT_EPORT_CARD, "no E-port extension") from None
    raw = extension.value
    try:
        assert isinstance(raw, x509.UnrecognizedExtension)
        text = core.UTF8String.load(raw.value).native
        profile = EportProfile.from_json_dict(json.loads(text))
        profile.validate()  # the customs code keys the enterprise's documents and fees
    except (AssertionError, ValueError, TypeError, ProfileError):
        raise DataCenterError(pb.NOT_EPORT_CARD, "malformed E-port extension") from None
    return Identity(profile.card_id, profile.customs_code, profile.credit_code,
                    profile.enterprise_name, profile.kind, profile.cert_number)


class RequestVerifier:
    """Checks SignedRequests against the configured trust anchors; safe for many threads."""

    def __init__(self, anchors: list[CardCertificate], *,
                 max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW) -> None:
        self.anchors = anchors
        self.max_clock_skew = timedelta(seconds=max_clock_skew)
        self._cache: OrderedDict[bytes, _CertEntry] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, der: bytes) -> _CertEntry:
        with self._lock:
            entry = self._cache.get(der)
            if entry is not None:
                self._cache.move_to_end(der)
                return entry
        entry = self._examine(der)
        if entry.certificate is None or len(der) > _CACHEABLE_BYTES:
            return entry  # junk is not worth remembering (and must not fill the memory)
        with self._lock:
            self._cache[der] = entry
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return entry

    def _examine(self, der: bytes) -> _CertEntry:
        try:
            certificate = load_certificate(der)
        except EportError:
            return _CertEntry(None, None, bad_request("the certificate is not a usable X.509 "
                                                      "certificate"))
        state, detail = chain_of(certificate, self.anchors)
        if state is not ChainState.TRUSTED:
            return _CertEntry(certificate, None, DataCenterError(pb.CERT_UNTRUSTED, detail))
        try:
            identity = _identity_of(certificate)
        except DataCenterError as refusal:
            return _CertEntry(certificate, None, refusal)
        return _CertEntry(certificate, identity, None)

    def verify(self, request: pb.SignedRequest, rpc: str, *, now: datetime | None = None
               ) -> VerifiedRequest:
        """The verified request, or DataCenterError naming the first check that failed."""
        moment = now or datetime.now(UTC)
        if not request.certificate:
            raise bad_request("no certificate")
        entry = self._entry(bytes(request.certificate))
        if entry.refusal is not None:
            raise entry.refusal
        certificate, identity = entry.certificate, entry.identity
        assert certificate is not None and identity is not None
        if moment < certificate.not_before:
            raise DataCenterError(pb.CERT_NOT_YET_VALID, f"card {identity.card_id}")
        if moment > certificate.not_after:
            raise DataCenterError(pb.CERT_EXPIRED, f"card {identity.card_id}")
        payload = bytes(request.payload)
        _check_signature(certificate, request.algorithm, payload, bytes(request.signature))
        try:
            envelope = parse_payload(payload)
        except EnvelopeError as error:
            raise bad_request(str(error)) from None
        if envelope.audience != AUDIENCE:
            raise bad_request(f'aud must be "{AUDIENCE}"')
        if envelope.method != rpc:
            raise bad_request(f"the payload is signed for another method, not {rpc}")
        if abs(moment - envelope.signed_at) > self.max_clock_skew:
            raise DataCenterError(
                pb.STALE_REQUEST, f"signed_at off by {(moment - envelope.signed_at)}")
        return VerifiedRequest(identity, envelope.method, envelope.body, envelope.nonce,
                               envelope.signed_at)


def _check_signature(certificate: CardCertificate, algorithm: int, payload: bytes,
                     signature: bytes) -> None:
    if algorithm not in _ALLOWED[certificate.key_kind]:
        raise DataCenterError(
            pb.SIGNATURE_INVALID, "algorithm does not match the key",
            message_zh="签名算法与证书密钥不符", message_en="The signature algorithm does not "
            "match the certificate's key")
    key = certificate.public_key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            digest: hashes.HashAlgorithm = (hashes.SHA1() if algorithm == pb.SHA1_WITH_RSA
                                            else hashes.SHA256())
            key.verify(signature, payload, padding.PKCS1v15(), digest)
            return
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            return
        r, s = sm2.decode_der_signature(signature)
        if sm2.verify_digest(key, sm2.message_digest(key, payload), r, s):
            return
    except (InvalidSignature, sm2.SM2Error, ValueError):
        pass
    raise DataCenterError(pb.SIGNATURE_INVALID, "signature does not verify")
