"""Revocation: the CAs' lists (CRL files in the trust directory) and the data centre's own.

**CRLs.** Each *.crl file (PEM or DER, several PEM blocks allowed) must be signed by a
configured CA whose subject is the CRL's issuer and whose keyUsage, when present, allows
cRLSign; SM2 CAs' lists are checked with SM2-with-SM3 as their certificates are. A list that
no configured CA signed stops the server at load time: it was put there to revoke cards, and
ignoring it would let them in. Of several lists of one CA the newest (thisUpdate) counts, as
each is complete. When a list's nextUpdate has passed, the cards of that CA are refused with
REVOCATION_UNKNOWN until a current list is in place: a stale list cannot tell whether a card
was lost since (RFC 5280 §6.3.3 calls the status undetermined), and accepting such cards would
make a lost card valid for as long as nobody refreshes the file. The files are read again when
they change (checked at most every few seconds), so a new list needs no restart; a changed
file that does not verify is logged and the lists read before stay in force.

**The deny-list** (`eport-datacenter revoke`, table `revocations`): a certificate by its
number (the serial in hex, as in the certificate's E-port profile) or every certificate of a
card by its card id (a lost card stays refused after a renewal). It is read on each request,
so a revocation made while the server runs holds for the next request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from eport.cardlib.certificates import KeyKind
from eport.common import sm2
from eport.common.failure import EportFailure
from eport.common.text import Bilingual
from eport.datacenter.storage import Connection, Store
from eport.datacenter.trust_store import TrustConfigError, TrustedCA, crl_files

logger = logging.getLogger(__name__)

_PEM_CRL = b"-----BEGIN X509 CRL-----"
_RELOAD_INTERVAL = 5.0  # seconds between looks at the CRL files' sizes and times
# `eport-datacenter revoke`: what a certificate number and a card id look like (the E-port
# profile's own formats; certificate numbers are compared without leading zeros).
_CERT_NUMBER = re.compile(r"[0-9a-fA-F]{1,40}")
_CARD_ID = re.compile(r"[0-9A-Za-z]{1,16}")
KINDS = ("certificate", "card")


class RevocationInputError(EportFailure, ValueError):
    """A certificate number or card id that cannot be one; the message says which."""

    code = "REVOCATION_INPUT"


@dataclass(frozen=True)
class CertificateList:
    """One CA's verified revocation list."""

    issuer: TrustedCA
    source: Path
    this_update: datetime
    next_update: datetime | None
    revoked_serials: frozenset[int]

    def is_current(self, moment: datetime) -> bool:
        return self.next_update is None or moment <= self.next_update


def _crl_blocks(data: bytes) -> list[bytes]:
    if _PEM_CRL in data:
        return [_PEM_CRL + part for part in data.split(_PEM_CRL)[1:]]
    return [data]


def _parse_crl(block: bytes) -> x509.CertificateRevocationList:
    if block.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_crl(block)
    return x509.load_der_x509_crl(block)


def _signed_by(crl: x509.CertificateRevocationList, ca: TrustedCA) -> bool:
    if crl.issuer != ca.certificate.parsed.subject or not ca.may_sign_crls():
        return False
    key = ca.certificate.public_key
    if ca.certificate.key_kind is KeyKind.SM2:
        assert isinstance(key, tuple)
        return _sm2_crl_signature_ok(crl, key)
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    try:
        return crl.is_signature_valid(key)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False


def _sm2_crl_signature_ok(crl: x509.CertificateRevocationList, point: tuple[int, int]) -> bool:
    """SM2-with-SM3 over the TBSCertList, Z from the CA's key and the default user id (as for
    SM2 certificates, GM/T 0015); `cryptography` parses such lists but cannot check them."""
    try:
        parsed = asn1_crl.CertificateList.load(crl.public_bytes(serialization.Encoding.DER),
                                               strict=True)
        outer = parsed["signature_algorithm"]["algorithm"].dotted
        inner = parsed["tbs_cert_list"]["signature"]["algorithm"].dotted
        if outer != sm2.SM2_WITH_SM3_OID or inner != sm2.SM2_WITH_SM3_OID:
            return False
        r, s = sm2.decode_der_signature(parsed["signature"].native)
        digest = sm2.message_digest(point, parsed["tbs_cert_list"].dump())
        return sm2.verify_digest(point, digest, r, s)
    except (ValueError, TypeError, KeyError, sm2.SM2Error):
        return False


def _unsigned_crl(path: Path, issuer: str) -> TrustConfigError:
    return TrustConfigError(
        Bilingual(f"吊销列表 {path} (签发者 {issuer!r}) 的签名无法用信任目录中的CA证书验证 "
                  "(或该CA的 keyUsage 不含 cRLSign)",
                  f"the CRL {path} (issuer {issuer!r}) is not signed by any CA of the trust "
                  "directory (or that CA's keyUsage lacks cRLSign)"),
        Bilingual("把签发它的 CA 证书放在旁边, 或换成该 CA 签发的真实吊销列表。",
                  "put the issuing CA's certificate beside it, or replace the file with the "
                  "CA's genuine CRL."))


def read_crl_file(path: Path, cas: list[TrustedCA]) -> list[CertificateList]:
    """The verified lists in one file; TrustConfigError (naming the file) when one cannot be
    read or no configured CA signed it."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TrustConfigError(Bilingual(f"吊销列表文件 {path} 无法读取: {error.strerror}",
                                         f"cannot read the CRL file {path}: {error.strerror}"),
                               Bilingual("检查该文件的权限。", "check its permissions.")) from None
    lists: list[CertificateList] = []
    for block in _crl_blocks(data):
        try:
            crl = _parse_crl(block)
            this_update = crl.last_update_utc
            next_update = crl.next_update_utc
            serials = frozenset(entry.serial_number for entry in crl)
        except ValueError:
            raise TrustConfigError(
                Bilingual(f"{path}: 吊销列表文件格式不正确 (应为 PEM 或 DER)",
                          f"{path} is not a CRL (PEM or DER)"),
                Bilingual("换成该 CA 当前的吊销列表, 或删除该文件。",
                          "replace it with the CA's current CRL, or remove it.")) from None
        issuer = next((ca for ca in cas if _signed_by(crl, ca)), None)
        if issuer is None:
            raise _unsigned_crl(path, crl.issuer.rfc4514_string())
        lists.append(CertificateList(issuer, path, this_update, next_update, serials))
    return lists


def read_crls(paths: Iterable[Path], cas: list[TrustedCA], *, now: datetime
              ) -> dict[int, CertificateList]:
    """The newest list of each CA (keyed by id() of its TrustedCA)."""
    newest: dict[int, CertificateList] = {}
    for path in paths:
        for found in read_crl_file(path, cas):
            key = id(found.issuer)
            if key not in newest or found.this_update > newest[key].this_update:
                newest[key] = found
    for found in newest.values():
        if not found.is_current(now):
            assert found.next_update is not None
            logger.warning(
                "吊销列表已过期 / the CRL %s of %s was due for renewal on %s; cards of that CA "
                "are refused (REVOCATION_UNKNOWN) until a current CRL is in place. Remedy: "
                "fetch the CA's current CRL into the trust directory.", found.source,
                found.issuer.subject, found.next_update.isoformat())
    return newest


def _fingerprint(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    stats: list[tuple[str, int, int]] = []
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            continue
        stats.append((str(path), status.st_mtime_ns, status.st_size))
    return tuple(sorted(stats))


class CrlIndex:
    """The CAs' current lists, re-read when the files change; safe for many threads."""

    def __init__(self, trust_paths: Iterable[Path], cas: list[TrustedCA], *,
                 now: datetime | None = None) -> None:
        self._trust_paths = list(trust_paths)
        self._cas = cas
        files = crl_files(self._trust_paths)
        self._fingerprint = _fingerprint(files)
        self._lists = read_crls(files, cas, now=now or datetime.now(UTC))
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    @classmethod
    def empty(cls) -> CrlIndex:
        return cls([], [])

    def list_of(self, ca: TrustedCA) -> CertificateList | None:
        self._refresh()
        return self._lists.get(id(ca))

    def _refresh(self) -> None:
        if not self._trust_paths or time.monotonic() - self._checked < _RELOAD_INTERVAL:
            return
        with self._lock:
            if time.monotonic() - self._checked < _RELOAD_INTERVAL:
                return
            self._checked = time.monotonic()
            files = crl_files(self._trust_paths)
            fingerprint = _fingerprint(files)
            if fingerprint == self._fingerprint:
                return
            try:
                self._lists = read_crls(files, self._cas, now=datetime.now(UTC))
            except TrustConfigError as error:
                logger.error("%s (the revocation lists read before stay in force)", error)
                return  # the file may be half-written: look again next time
            self._fingerprint = fingerprint
            logger.info("revocation lists reloaded: %d CA(s)", len(self._lists))

    def reload_now(self) -> None:
        """Look at the files on the next request (tests; an administrator's signal)."""
        self._checked = 0.0


# ---- the deny-list -------------------------------------------------------------------------

@dataclass(frozen=True)
class Revocation:
    kind: str  # "certificate" or "card"
    value: str
    reason: str
    revoked_at: int  # microseconds UTC


def normalise(kind: str, value: str) -> str:
    """The stored form of a certificate number (lower-case hex, no leading zeros) or card id;
    RevocationInputError when it cannot be one."""
    text = value.strip()
    if kind == "certificate":
        if not _CERT_NUMBER.fullmatch(text):
            raise RevocationInputError(
                f"证书号应为1到40位十六进制数 / a certificate number is 1 to 40 hex digits, "
                f"not {value!r}")
        return format(int(text, 16), "x")
    if kind == "card":
        if not _CARD_ID.fullmatch(text):
            raise RevocationInputError(
                f"卡号应为1到16位字母或数字 / a card id is 1 to 16 letters or digits, not "
                f"{value!r}")
        return text
    raise ValueError(f"unknown revocation kind {kind!r}")


def revoke(connection: Connection, kind: str, value: str, reason: str,
           now_micros: int) -> tuple[Revocation, bool]:
    """Add to the deny-list; (the entry, whether it is new). Revoking again keeps the first
    entry (its time and reason)."""
    stored = normalise(kind, value)
    created = connection.execute(
        "INSERT INTO revocations (kind, value, reason, revoked_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (kind, value) DO NOTHING RETURNING kind",
        (kind, stored, reason, now_micros)).fetchone() is not None
    entry = _lookup_one(connection, kind, stored)
    assert entry is not None
    return entry, created


def unrevoke(connection: Connection, kind: str, value: str) -> bool:
    """Remove from the deny-list; False when it was not on it."""
    stored = normalise(kind, value)
    cursor = connection.execute("DELETE FROM revocations WHERE kind = ? AND value = ?",
                                (kind, stored))
    return cursor.rowcount == 1


def all_revocations(connection: Connection) -> list[Revocation]:
    rows = connection.execute(
        "SELECT kind, value, reason, revoked_at FROM revocations ORDER BY revoked_at, kind, "
        "value").fetchall()
    return [Revocation(*tuple(row)) for row in rows]


def _lookup_one(connection: Connection, kind: str, value: str) -> Revocation | None:
    row = connection.execute(
        "SELECT kind, value, reason, revoked_at FROM revocations WHERE kind = ? AND value = ?",
        (kind, value)).fetchone()
    return Revocation(*tuple(row)) if row is not None else None


def find_revocation(connection: Connection, *, certificate_numbers: Iterable[str],
                    card_id: str) -> Revocation | None:
    """The deny-list entry that refuses this card, if any (a card id entry first)."""
    found = _lookup_one(connection, "card", card_id)
    if found is not None:
        return found
    for number in certificate_numbers:
        try:
            found = _lookup_one(connection, "certificate", normalise("certificate", number))
        except RevocationInputError:
            continue
        if found is not None:
            return found
    return None


class DenyList:
    """The deny-list as the request verifier reads it: one indexed lookup per request, on the
    store's connection, so `eport-datacenter revoke` run beside the server holds for the
    next request."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def find(self, certificate_numbers: list[str], card_id: str) -> Revocation | None:
        with self._store.read() as connection:
            return find_revocation(connection, certificate_numbers=certificate_numbers,
                                   card_id=card_id)
