"""A card behind a remote E-port client, through its cus-sec_ methods (docs/backends.md,
"Remote E-port client", has the mapping)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from eport.cardlib.errors import (
    CardError,
    InvalidPinError,
    ReferenceBlockedError,
    SecurityStatusError,
)
from eport.cardlib.remote.channel import SIGN_TIMEOUT_S, RemoteChannel, RemoteReply
from eport.cardlib.remote.errors import CARD_INVALID, last_try_refused, raise_for, tries_in
from eport.cardlib.sign_mechanism import SignMechanism
from eport.cardlib.signing_algorithms import spec_of_mechanism
from eport.cardlib.token import (
    CertificateRole,
    Credential,
    CredentialStatus,
    no_transaction,
)
from eport.common.profile import CardForm, CardKind, EportProfile, ProfileError

_CST = timezone(timedelta(hours=8))
_KIND = {"1": CardKind.LEGAL_PERSON, "2": CardKind.OPERATOR, "3": CardKind.DECLARANT}
_ALGORITHM = {"RSA1024": "rsa1024", "RSA2048": "rsa2048", "SM2": "sm2", "P256": "p256"}
# What the remote client's NoHash method signs: a SHA-1 digest on RSA cards, e on SM2 cards.
_OFFERED = frozenset({SignMechanism.RSA_PKCS1_SHA1, SignMechanism.SM2, SignMechanism.ECDSA_P256})


def _not_offered(operation: str) -> CardError:
    return CardError(None, operation, "not offered by the remote client / 远程客户端不提供此功能")


@dataclass
class _PinState:
    """What the client's replies told us; the API has no call that reads tries."""

    verified: bool = False
    tries_left: int = -1
    blocked: bool = False


class RemoteToken:
    # The official client signs RSA only as SHA1withRSA (its page library's SpcSignData);
    # the daemon picks from these (CardSnapshot.sign_algorithms).
    sign_mechanisms = _OFFERED

    def __init__(self, channel: RemoteChannel, card_id: str) -> None:
        self._channel = channel
        self._card_id = card_id
        self._pin = _PinState()

    @property
    def atr(self) -> bytes:
        return b""

    def _call(self, method: str, args: dict[str, str] | None = None, *,
              timeout: float | None = None) -> RemoteReply:
        reply = (self._channel.call(method, args) if timeout is None
                 else self._channel.call(method, args, timeout=timeout))
        raise_for(reply, method)
        return reply

    def read_card_id(self) -> str:
        return self._card_id

    def read_certificate(self, role: CertificateRole = CertificateRole.SIGNING) -> bytes | None:
        method = "SpcGetSignCert" if role == CertificateRole.SIGNING else "SpcGetEnvCert"
        reply = self._channel.call(method)
        if not reply.ok and reply.code in CARD_INVALID and role == CertificateRole.ENVELOPE:
            return None  # the client's answer for "no encryption certificate" (and no card)
        raise_for(reply, method)
        return _decode(reply.data, method)

    def read_profile(self) -> EportProfile | None:
        """From SpcGetCardAttachInfo when it is eport-gateway's JSON profile; the official
        client answers there with the RA's own record, whose format is not public: None."""
        reply = self._channel.call("SpcGetCardAttachInfo")
        if not reply.ok or not reply.data or not isinstance(reply.data[0], str):
            return None
        try:
            fields = json.loads(reply.data[0])
            profile = EportProfile(
                card_id=fields["szCardID"], holder_name=fields["szUserName"],
                enterprise_name=fields["szEntName"], customs_code=fields["szEntID"],
                credit_code=fields["szCreditCode"], cert_number=fields["szCertNo"],
                kind=_KIND[fields["szCardType"]],
                form=CardForm.IKEY if fields["szCardForm"] == "IKEY" else CardForm.IC,
                not_before=_time(fields["szStartTime"]), not_after=_time(fields["szEndTime"]),
                algorithm=_ALGORITHM[fields["szAlgorithm"]])
            profile.validate()
        except (ValueError, KeyError, TypeError, ProfileError):
            return None
        return profile

    def credential_status(self, credential: Credential = Credential.PIN) -> CredentialStatus:
        if credential == Credential.PUK:
            return CredentialStatus(verified=False, tries_left=-1, blocked=False)
        state = self._pin
        return CredentialStatus(verified=state.verified, tries_left=state.tries_left,
                                blocked=state.blocked)

    def verify_pin(self, pin: bytearray) -> None:
        reply = self._channel.call("SpcVerifyPIN", {"passwd": pin.decode("ascii", "replace")})
        if reply.ok:
            # The card's counter is back at its maximum, which the API does not tell.
            self._pin = _PinState(verified=True, tries_left=-1)
            return
        self._pin.verified = False
        if last_try_refused(reply):
            self._pin.tries_left = 1
        try:
            raise_for(reply, "SpcVerifyPIN")
        except InvalidPinError as wrong:
            self._pin.tries_left = wrong.tries_left if wrong.tries_left >= 0 \
                else tries_in(reply)
            self._pin.blocked = self._pin.tries_left == 0
            raise
        except ReferenceBlockedError:
            self._pin = _PinState(tries_left=0, blocked=True)
            raise

    def change_pin(self, old: bytearray, new: bytearray) -> None:
        reply = self._channel.call("SpcChangePIN", {"oldPin": old.decode("ascii", "replace"),
                                                    "newPin": new.decode("ascii", "replace")})
        if not reply.ok and reply.code == "0A000024" and not last_try_refused(reply):
            self._pin.tries_left = tries_in(reply)
        raise_for(reply, "SpcChangePIN")
        self._pin.tries_left = -1

    def unblock_pin(self, puk: bytearray, new_pin: bytearray) -> None:
        raise _not_offered("unblock PIN")

    def logout(self) -> None:
        self._call("SpcClearEnv")
        self._pin.verified = False

    def sign_digest(self, mechanism: SignMechanism, digest: bytes) -> bytes:
        """SpcSignDataNoHash with the digest in hex: the official client takes SHA-1 on RSA
        cards and e = SM3(Z ‖ M) on SM2 cards; RSA with SHA-256 is not offered."""
        if mechanism not in _OFFERED:
            raise _not_offered(f"sign {mechanism}")
        expected = spec_of_mechanism(mechanism).digest_length
        if len(digest) != expected:
            raise CardError(None, f"sign {mechanism}",
                            f"digest of {len(digest)} bytes, expected {expected}")
        try:
            reply = self._call("SpcSignDataNoHash", {"inData": digest.hex()},
                               timeout=SIGN_TIMEOUT_S)
        except SecurityStatusError:
            self._pin.verified = False  # the client's PIN session ended (idle, card out)
            raise
        signature = _decode(reply.data, "SpcSignDataNoHash")
        if mechanism in (SignMechanism.SM2, SignMechanism.ECDSA_P256) and len(signature) == 64:
            # The client returns r ‖ s; the interface promises DER.
            return encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                        int.from_bytes(signature[32:], "big"))
        return signature

    def private_step(self, role: CertificateRole, data: bytes, *, sm2: bool) -> bytes:
        raise NotImplementedError("the remote client decrypts whole ciphertexts")

    def decrypt(self, ciphertext: bytes) -> bytes | None:
        reply = self._call("SpcRSADecrypt",
                           {"inData": base64.b64encode(ciphertext).decode("ascii")},
                           timeout=SIGN_TIMEOUT_S)
        return _decode(reply.data, "SpcRSADecrypt")


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=_CST)


def _decode(data: list[object], method: str) -> bytes:
    if not data or not isinstance(data[0], str):
        raise CardError(None, method, "the remote client answered no data")
    try:
        return base64.b64decode("".join(data[0].split()), validate=True)
    except (binascii.Error, ValueError):
        raise CardError(None, method, "the remote client answered data that is not base64"
                        ) from None


class RemoteConnection:
    def __init__(self, token: RemoteToken) -> None:
        self.token = token

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        # The remote client serialises its card itself; our channel holds one call at a time.
        return no_transaction()

    def close(self) -> None:
        pass
