"""Who is asking: the checks every signed request passes before it may touch the store.

The order is fixed so each refusal names the first thing wrong: the certificate (parse, the
path to a trusted CA and what a CA would require of it, the card certificate's own profile,
its E-port identity), then the time-dependent state (the CAs' and the card's validity now,
revocation by the CA's CRL and by the data centre's deny-list), then the signature over the
payload bytes with the algorithm the key allows, then the envelope (canonical JSON, audience,
method, time). The nonce is checked by the store, inside the transaction of the request's
effects, so that a replay and the original cannot both succeed.

What never changes for a certificate (parse, path, profile, identity) is cached by its DER: an
SM2 chain check is a pure-Python verification, far dearer than the request itself. Validity
and revocation are looked at on every request.

A card certificate (docs/datacenter.md, "Trust checks"):
- is not a CA: basicConstraints CA:TRUE or keyUsage keyCertSign is CERT_IS_CA;
- allows signing: keyUsage, when present, has digitalSignature or nonRepudiation, and an
  extendedKeyUsage, when present, lists one of clientAuth, emailProtection, documentSigning
  (RFC 9336) or anyExtendedKeyUsage (RFC 5280 §4.2.1.12: the key may then be used for the
  listed purposes only, and signing requests as a person is none of serverAuth, codeSigning,
  timeStamping or OCSPSigning); else CERT_KEY_USAGE;
- uses SHA-1 (its certificate's signature, the CAs' above it, or the request's signature)
  only when it is an RSA-1024 card, the old generation that cannot do better; MD5 never
  (WEAK_ALGORITHM).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID

from eport.cardlib.certificates import (
    CardCertificate,
    CertificateError,
    KeyKind,
    load_certificate,
)
from eport.cardlib.signing_algorithms import SignAlgorithm, algorithm_named, message_digest, spec
from eport.common import sm2
from eport.common.customs.envelope import AUDIENCE, EnvelopeError, parse_payload
from eport.common.profile import EPORT_EXTENSION_OID, CardKind, EportProfile, ProfileError
from eport.common.text import Bilingual
from eport.datacenter import trust_store
from eport.datacenter.errors import DataCenterError, bad_request
from eport.datacenter.revocation import CrlIndex, Revocation
from eport.datacenter.trust_store import MAX_PATH_DEPTH, TrustConfig, TrustedCA
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

DEFAULT_MAX_CLOCK_SKEW = 300
_CACHE_SIZE = 4096
_CACHEABLE_BYTES = 16 * 1024  # E-port card certificates are 1 to 2 KB
_EXTENSION_OID = x509.ObjectIdentifier(EPORT_EXTENSION_OID)

# The extended key uses under which a card may sign requests (module docstring).
_SIGNING_PURPOSES = frozenset({
    ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36"),  # id-kp-documentSigning, RFC 9336
})
_PURPOSE_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
                  ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
                  ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
                  ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
                  ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
                  ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning"}


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


class DenyListReader(Protocol):
    """The data centre's own revocations (eport.datacenter.revocation.DenyList)."""

    def find(self, certificate_numbers: list[str], card_id: str) -> Revocation | None: ...


@dataclass(frozen=True)
class _CertEntry:
    certificate: CardCertificate | None
    identity: Identity | None
    refusal: DataCenterError | None
    # The paths to a trusted CA: [issuer, its issuer, ...]; more than one when a CA was
    # re-issued with the same key (a roll-over), so that the one valid now can serve.
    paths: tuple[tuple[TrustedCA, ...], ...] = ()


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


def _ca_name(ca: TrustedCA) -> str:
    """The CA as a person knows it: its common name, else the whole subject."""
    names = ca.certificate.parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ca.subject


def _check_card_profile(certificate: CardCertificate) -> None:
    """A card certificate is an end entity whose key may sign (module docstring)."""
    parsed = certificate.parsed
    try:
        extensions = parsed.extensions
    except ValueError:
        raise bad_request("the certificate's extensions cannot be parsed") from None
    constraints = next((e.value for e in extensions
                        if isinstance(e.value, x509.BasicConstraints)), None)
    usage = next((e.value for e in extensions if isinstance(e.value, x509.KeyUsage)), None)
    purposes = next((e.value for e in extensions
                     if isinstance(e.value, x509.ExtendedKeyUsage)), None)
    if (constraints is not None and constraints.ca) or (usage is not None
                                                        and usage.key_cert_sign):
        raise DataCenterError(pb.CERT_IS_CA, "the card certificate is a CA certificate")
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise DataCenterError(
            pb.CERT_KEY_USAGE, "keyUsage has neither digitalSignature nor nonRepudiation",
            message=Bilingual("证书的密钥用法不允许签名 (既无 digitalSignature 也无 "
                              "nonRepudiation)",
                              "The certificate's key usage does not allow signing (neither "
                              "digitalSignature nor nonRepudiation)"))
    if purposes is not None and not any(purpose in _SIGNING_PURPOSES for purpose in purposes):
        listed = ", ".join(_PURPOSE_NAMES.get(p, p.dotted_string) for p in purposes)
        raise DataCenterError(
            pb.CERT_KEY_USAGE, f"extendedKeyUsage {listed}",
            message=Bilingual(f"证书的扩展密钥用法 ({listed}) 不包括签名用途",
                              f"The certificate's extended key usage ({listed}) does not include "
                              "signing by a person (clientAuth, emailProtection or "
                              "documentSigning)"))


def _weak(strength: str, certificate: CardCertificate) -> bool:
    return strength == "md" or (strength == "sha1" and certificate.key_kind
                                is not KeyKind.RSA_1024)


def _check_path(certificate: CardCertificate, path: tuple[TrustedCA, ...]) -> None:
    """What never changes about the path: CAs, path lengths, signature algorithms."""
    for ca in path:
        if ca.not_a_ca:
            raise DataCenterError(
                pb.ISSUER_NOT_CA, f"{ca.subject}: {ca.not_a_ca}",
                message=Bilingual(f"签发该证书的 {_ca_name(ca)} 不是CA证书",
                                  f"The certificate was issued by {_ca_name(ca)}, which is not a "
                                  f"CA certificate ({ca.not_a_ca})"))
    for below, ca in enumerate(path):
        # RFC 5280 §4.2.1.9: pathLenConstraint is the number of intermediate CA certificates
        # that may follow it; `below` of them stand between this CA and the card.
        limit = ca.path_length
        if limit is not None and below > limit:
            raise DataCenterError(
                pb.PATH_TOO_LONG, f"{ca.subject} allows {limit} intermediate CA(s), has {below}",
                message=Bilingual(f"{_ca_name(ca)} 只允许其下有 {limit} 级中间CA, 该证书路径有 "
                                  f"{below} 级",
                                  f"{_ca_name(ca)} allows {limit} intermediate CA(s) below it; "
                                  f"this certificate's path has {below}"))
    signed = [certificate, *(ca.certificate for ca in path[:-1])]
    for item in signed:
        if _weak(trust_store.signature_strength(item.parsed), certificate):
            raise DataCenterError(
                pb.WEAK_ALGORITHM, f"{item.subject} is signed with "
                f"{item.parsed.signature_algorithm_oid.dotted_string}",
                message=Bilingual("证书使用了不安全的签名算法 (SHA-1 只用于 RSA-1024 卡, MD5 "
                                  "一律不用)",
                                  "A certificate on the card's path is signed with a weak "
                                  "algorithm (SHA-1 is accepted for RSA-1024 cards only, MD5 "
                                  "never)"))


class RequestVerifier:
    """Checks SignedRequests against the configured CAs; safe for many threads."""

    def __init__(self, trust: TrustConfig | list[CardCertificate], *,
                 max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
                 crls: CrlIndex | None = None, deny_list: DenyListReader | None = None
                 ) -> None:
        self.trust = trust if isinstance(trust, TrustConfig) \
            else trust_store.trust_from_certificates(trust)
        self.max_clock_skew = timedelta(seconds=max_clock_skew)
        self._crls = crls or CrlIndex.empty()
        self._deny_list = deny_list
        self._cache: OrderedDict[bytes, _CertEntry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def anchors(self) -> list[CardCertificate]:
        return self.trust.anchors()

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

    def _paths(self, certificate: CardCertificate) -> list[tuple[TrustedCA, ...]]:
        paths: list[tuple[TrustedCA, ...]] = []
        for issuer in self.trust.cas:
            if not trust_store.issued_by(certificate, issuer.certificate):
                continue
            path = [issuer]
            while (parent := path[-1].parent) is not None and parent not in path \
                    and len(path) < MAX_PATH_DEPTH:
                path.append(parent)
            paths.append(tuple(path))
        return paths

    def _examine(self, der: bytes) -> _CertEntry:
        try:
            certificate = load_certificate(der)
        except CertificateError:
            return _CertEntry(None, None, bad_request("the certificate is not a usable X.509 "
                                                      "certificate"))
        paths = self._paths(certificate)
        if not paths:
            return _CertEntry(certificate, None, DataCenterError(
                pb.CERT_UNTRUSTED, f"issuer {certificate.issuer!r} is not a configured trust "
                "anchor, or its signature does not match"))
        usable: list[tuple[TrustedCA, ...]] = []
        refusals: list[DataCenterError] = []
        for path in paths:
            try:
                _check_path(certificate, path)
                usable.append(path)
            except DataCenterError as refusal:
                refusals.append(refusal)
        try:
            if not usable:
                raise refusals[0]
            _check_card_profile(certificate)
            identity = _identity_of(certificate)
        except DataCenterError as refusal:
            return _CertEntry(certificate, None, refusal)
        return _CertEntry(certificate, identity, None, tuple(usable))

    def _check_state(self, entry: _CertEntry, moment: datetime) -> None:
        """What changes with time: validity of the CAs and the card, revocation."""
        certificate, identity = entry.certificate, entry.identity
        assert certificate is not None and identity is not None
        first_refusal: DataCenterError | None = None
        for path in entry.paths:
            try:
                self._check_path_state(certificate, path, moment)
                break
            except DataCenterError as refusal:
                first_refusal = first_refusal or refusal
        else:
            assert first_refusal is not None
            raise first_refusal
        if moment < certificate.not_before:
            raise DataCenterError(pb.CERT_NOT_YET_VALID, f"card {identity.card_id}")
        if moment > certificate.not_after:
            raise DataCenterError(pb.CERT_EXPIRED, f"card {identity.card_id}")
        if self._deny_list is not None:
            found = self._deny_list.find([certificate.serial_hex, identity.cert_number],
                                         identity.card_id)
            if found is not None:
                raise _denied(found, identity)

    def _check_path_state(self, certificate: CardCertificate, path: tuple[TrustedCA, ...],
                          moment: datetime) -> None:
        for ca in reversed(path):
            if not ca.valid_at(moment):
                expired = moment > ca.certificate.not_after
                day = (ca.certificate.not_after if expired
                       else ca.certificate.not_before).date().isoformat()
                raise DataCenterError(
                    pb.ISSUER_NOT_VALID, f"{ca.subject} {'expired' if expired else 'starts'} "
                    f"{day}",
                    message=Bilingual(f"签发该卡的CA证书 {_ca_name(ca)} " + (
                                      f"已于 {day} 过期" if expired else f"{day} 才生效"),
                                      f"The certificate of the CA that issued the card "
                                      f"({_ca_name(ca)}) " + (f"expired on {day}" if expired
                                      else f"is not valid before {day}")))
        # From the top down: a revoked CA revokes everything below it.
        subjects = [certificate, *(ca.certificate for ca in path[:-1])]
        for ca, subject in zip(reversed(path), reversed(subjects), strict=True):
            revocations = self._crls.list_of(ca)
            if revocations is None:
                continue
            if not revocations.is_current(moment):
                assert revocations.next_update is not None
                raise DataCenterError(
                    pb.REVOCATION_UNKNOWN, f"CRL of {ca.subject} due "
                    f"{revocations.next_update.isoformat()}",
                    message=Bilingual(f"数据中心持有的 {_ca_name(ca)} 证书吊销列表已过期, "
                                      "无法确认该卡未被吊销",
                                      f"The data centre's revocation list of {_ca_name(ca)} is "
                                      "out of date, so it cannot tell whether the card was "
                                      "revoked"))
            if subject.parsed.serial_number in revocations.revoked_serials:
                whose = "该卡证书" if subject is certificate else f"CA证书 {subject.subject}"
                raise DataCenterError(
                    pb.CERT_REVOKED, f"serial {subject.serial_hex} on the CRL of "
                    f"{ca.subject}",
                    message=Bilingual(f"{whose}已被 {_ca_name(ca)} 吊销",
                                      ("The card's certificate" if subject is certificate
                                      else f"The CA certificate {subject.subject}")
                                      + f" has been revoked by {_ca_name(ca)}"))

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
        self._check_state(entry, moment)
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


def _denied(found: Revocation, identity: Identity) -> DataCenterError:
    if found.kind == "card":
        zh, en = (f"数据中心已停用IC卡 {identity.card_id}",
                  f"The data centre has revoked card {identity.card_id}")
    else:
        zh, en = (f"数据中心已停用证书 {found.value}",
                  f"The data centre has revoked certificate {found.value}")
    return DataCenterError(pb.CERT_REVOKED, f"deny-list: {found.kind} {found.value}",
                           message=Bilingual(zh, en))


def _claimed_algorithm(value: int) -> SignAlgorithm | None:
    """The request's algorithm in the card library's table; None for one it does not name."""
    try:
        return algorithm_named(pb.SignatureAlgorithm.Name(pb.SignatureAlgorithm.ValueType(value)))
    except ValueError:
        return None


def _check_signature(certificate: CardCertificate, algorithm: int, payload: bytes,
                     signature: bytes) -> None:
    # Which algorithms a key may use is the table's: an RSA card's signature is never checked
    # as ECDSA or SM2 (and vice versa), whatever the request claims. SHA-1 fits an RSA key but
    # is accepted from RSA-1024 cards only (below).
    claimed = _claimed_algorithm(algorithm)
    if claimed is None or certificate.key_kind not in spec(claimed).key_kinds:
        raise DataCenterError(
            pb.SIGNATURE_INVALID, "algorithm does not match the key",
            message=Bilingual("签名算法与证书密钥不符",
                              "The signature algorithm does not match the certificate's key"))
    if algorithm == pb.SHA1_WITH_RSA and certificate.key_kind is not KeyKind.RSA_1024:
        raise DataCenterError(
            pb.WEAK_ALGORITHM, "SHA-1 signature from a card that is not RSA-1024",
            message=Bilingual("SHA-1 签名只接受 RSA-1024 卡; 本卡请用 SHA-256 签名",
                              "SHA-1 signatures are accepted from RSA-1024 cards only; sign with "
                              "SHA-256 (SHA256withRSA)"),
            remedy=Bilingual("请升级客户端, 使其对该卡使用 SHA256withRSA 签名",
                             "Upgrade the client so that it signs with SHA256withRSA on this card"))
    key = certificate.public_key
    try:
        digest = message_digest(claimed, payload, key)
        if isinstance(key, rsa.RSAPublicKey):
            # PKCS#1 v1.5 by re-encoding: the signature must open to the
            # table's DigestInfo followed by the digest.
            opened = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
            if opened == spec(claimed).digest_info + digest:
                return
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            return
        else:
            r, s = sm2.decode_der_signature(signature)
            if sm2.verify_digest(key, digest, r, s):
                return
    except (InvalidSignature, sm2.SM2Error, ValueError):
        pass
    raise DataCenterError(pb.SIGNATURE_INVALID, "signature does not verify")
