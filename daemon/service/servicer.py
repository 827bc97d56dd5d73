"""The gRPC face of the card service: messages in and out, errors as rich statuses.

Each EportError becomes a gRPC status code plus one eport.v1.ErrorDetail (reason, tries left,
status word, Chinese and English message and remedy) in the standard google.rpc.Status
trailer, so any gRPC client can read it with grpc_status.rpc_status.from_call().
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

import grpc
from cryptography import x509
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from eport import __version__
from eport.cardlib.certificates import CardCertificate, KeyKind
from eport.cardlib.eport_certificate_profile import parse_eport_certificate_profile
from eport.cardlib.errors import CardError
from eport.common.envelope_crypto import CiphertextForm
from eport.common.profile import CardForm, CardKind
from eport.daemon.server.peer_proxy import peer_of
from eport.daemon.service.app import CardSelector, CardServiceApp, PinState
from eport.daemon.service.backends import BackendHealth
from eport.daemon.service.card_state import CardSnapshot
from eport.daemon.service.card_worker import CallerGone, card_error
from eport.daemon.service.certificates import CertCheck, load_certificate
from eport.daemon.service.errors import EportError, Reason
from eport.daemon.service.events import Event
from eport.daemon.service.messages import message_for
from eport.daemon.service.signing import (
    SignAlgorithm,
    SignInput,
    choose_algorithm,
    digest_of,
    verify_signature,
)
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)
R = TypeVar("R")

_STATUS_CODE = {
    Reason.SERVICE_NOT_RUNNING: grpc.StatusCode.UNAVAILABLE,
    Reason.NO_READER: grpc.StatusCode.NOT_FOUND,
    Reason.NO_CARD: grpc.StatusCode.NOT_FOUND,
    Reason.CARD_REMOVED: grpc.StatusCode.ABORTED,
    Reason.UNSUPPORTED_CARD: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.SHARING_VIOLATION: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.PIN_FORMAT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.PIN_INCORRECT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.PIN_LAST_ATTEMPT_GUARD: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.PIN_BLOCKED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.PUK_INCORRECT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.PUK_BLOCKED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.NOT_AUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.SESSION_EXPIRED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.CERT_EXPIRED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CERT_NOT_YET_VALID: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CERT_UNTRUSTED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CARD_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.CARD_ERROR: grpc.StatusCode.INTERNAL,
    Reason.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNATTENDED_DISABLED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.AMBIGUOUS_CARD: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.DAEMON_SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
}
_KIND = {CardKind.LEGAL_PERSON: pb.LEGAL_PERSON, CardKind.OPERATOR: pb.OPERATOR,
         CardKind.DECLARANT: pb.DECLARANT}
_FORM = {CardForm.IC: pb.IC_CARD, CardForm.IKEY: pb.IKEY}
# By name: the card library's enums carry the protocol's names (cardlib.signing_algorithms).
_KEY = {kind: pb.KeyAlgorithm.Value(kind.name) for kind in KeyKind}
_SIGN_TO_PB = {algorithm: pb.SignAlgorithm.Value(algorithm.value) for algorithm in SignAlgorithm}
_SIGN_FROM_PB = {value: key for key, value in _SIGN_TO_PB.items()}
_FORM_TO_PB = {CiphertextForm.RSA_PKCS1_V15: pb.RSA_PKCS1_V15,
               CiphertextForm.SM2_ASN1: pb.SM2_ASN1, CiphertextForm.SM2_C1C3C2: pb.SM2_C1C3C2}
_EVENT_KIND = {"READER_ADDED": pb.READER_ADDED, "READER_REMOVED": pb.READER_REMOVED,
               "CARD_INSERTED": pb.CARD_INSERTED, "CARD_REMOVED": pb.CARD_REMOVED_EVENT,
               "SERVICE_UP": pb.SERVICE_UP, "SERVICE_DOWN": pb.SERVICE_DOWN,
               "SESSION_OPENED": pb.SESSION_OPENED, "SESSION_CLOSED": pb.SESSION_CLOSED,
               "SNAPSHOT_COMPLETE": pb.SNAPSHOT_COMPLETE, "CARD_READY": pb.CARD_READY}
_CERT_STATE = {"VALID": pb.VALID, "EXPIRING": pb.EXPIRING, "EXPIRED": pb.EXPIRED,
               "NOT_YET_VALID": pb.NOT_YET_VALID}
_CHAIN = {"TRUSTED": pb.TRUSTED, "UNTRUSTED": pb.UNTRUSTED, "NO_ANCHORS": pb.NO_ANCHORS}


def error_status(error: EportError) -> status_pb2.Status:
    message, remedy = message_for(error)
    detail = pb.ErrorDetail(
        reason=pb.ErrorReason.Value(error.reason.value),
        message_zh=message.zh, message_en=message.en,
        remedy_zh=remedy.zh, remedy_en=remedy.en,
        reader=error.reader, card_id=error.card_id)
    if error.tries_left is not None:
        detail.tries_left = error.tries_left
    if error.status_word is not None:
        detail.status_word = error.status_word
    packed = any_pb2.Any()
    packed.Pack(detail)
    code = _STATUS_CODE[error.reason]
    return status_pb2.Status(code=code.value[0],
                             message=f"{message.en} / {message.zh}",
                             details=[packed])


def _abort(context: grpc.ServicerContext, error: EportError) -> None:
    logger.info("call failed: %s", error.reason.value,
                extra={"reason": error.reason.value, "reader": error.reader})
    context.abort_with_status(rpc_status.to_status(error_status(error)))


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _selector(message: pb.CardSelector) -> CardSelector:
    return CardSelector(reader=message.reader, card_id=message.card_id)


def card_info(card: CardSnapshot) -> pb.CardInfo:
    info = pb.CardInfo(
        card_id=card.card_id, certificate_number=card.certificate_number,
        key_algorithm=_KEY[card.key_kind],
        sign_algorithms=[_SIGN_TO_PB[a] for a in card.sign_algorithms],
        reader=card.reader, atr=card.atr, insertion=card.insertion,
        not_before=_timestamp(card.certificate.not_before),
        not_after=_timestamp(card.certificate.not_after))
    profile = card.profile
    if profile is not None:
        info.holder_name = profile.holder_name
        info.enterprise_name = profile.enterprise_name
        info.customs_code = profile.customs_code
        info.credit_code = profile.credit_code
        info.kind = _KIND[profile.kind]
        info.label = profile.form.label
        info.eport_data_source = pb.EPORT_DATA_OBJECT
    else:
        _fill_from_certificate_profile(info, card.certificate.parsed)
    if card.form is not None:
        info.form = _FORM[card.form]
    return info


def _fill_from_certificate_profile(info: pb.CardInfo, certificate: x509.Certificate) -> None:
    """A real E-port card has no data object (E-port certificate profile): take holder and
    enterprise from its certificate; kind, customs and credit code stay empty, which the source
    marks as unknown."""
    profile = parse_eport_certificate_profile(certificate)
    if profile is None:
        return
    info.eport_data_source = pb.EPORT_CERTIFICATE_PROFILE
    info.holder_name = profile.holder_name or ""
    enterprise = profile.enterprise_name
    if enterprise is not None and enterprise.text is not None:
        info.enterprise_name = enterprise.text


def pin_status(state: PinState) -> pb.PinStatus:
    return pb.PinStatus(
        pin_tries_left=state.pin.tries_left, pin_blocked=state.pin.blocked,
        puk_tries_left=state.puk.tries_left, puk_blocked=state.puk.blocked,
        session_active=state.session is not None,
        session_expires_at=_timestamp(state.session_expires_at),
        card_id=state.card_id, unattended_enabled=state.unattended)


def certificate_check(certificate: CardCertificate, check: CertCheck) -> pb.CertificateCheck:
    return pb.CertificateCheck(
        state=_CERT_STATE[check.state.value], days_left=check.days_left,
        not_before=_timestamp(certificate.not_before),
        not_after=_timestamp(certificate.not_after),
        chain=_CHAIN[check.chain.value], chain_detail=check.chain_detail,
        message_zh=check.message.zh, message_en=check.message.en,
        subject=certificate.subject, issuer=certificate.issuer,
        serial_hex=certificate.serial_hex, key_algorithm=_KEY[certificate.key_kind])


def _event(event: Event) -> pb.Event:
    message = pb.Event(sequence=event.sequence, kind=_EVENT_KIND[event.kind.value],
                       reader=event.reader, atr=event.atr, time=_timestamp(event.time),
                       detail=event.detail)
    if isinstance(event.card, CardSnapshot):
        message.card.CopyFrom(card_info(event.card))
    return message


def _sign_algorithm(value: int) -> SignAlgorithm | None:
    if value == pb.SIGN_ALGORITHM_UNSPECIFIED:
        return None
    algorithm = _SIGN_FROM_PB.get(pb.SignAlgorithm.ValueType(value))
    if algorithm is not None:
        return algorithm
    raise EportError(Reason.INVALID_ARGUMENT, f"unknown signature algorithm {value}")


def _backend_status(health: BackendHealth) -> pb.BackendStatus:
    return pb.BackendStatus(
        name=health.name, detail=health.detail, readers=health.readers, cards=health.cards,
        state=pb.SERVICE_RUNNING if health.up else pb.SERVICE_NOT_RUNNING_STATE,
        condition=pb.BackendCondition.Value(health.condition), target=health.target,
        sm2_mechanism_configured=health.sm2_mechanism_configured)


class CardServicer(pb_grpc.CardServiceServicer):
    def __init__(self, app: CardServiceApp) -> None:
        self.app = app

    def _call(self, context: grpc.ServicerContext, work: Callable[[], R]) -> R:
        peer = peer_of(context)
        try:
            with self.app.caller(peer.uid if peer is not None else None):
                return work()
        except EportError as exc:
            _abort(context, exc)
        except CardError as exc:
            _abort(context, card_error(exc, ""))
        except CallerGone:
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled before it ran")
        raise AssertionError("abort() raises")

    def GetDaemonInfo(self, request: pb.GetDaemonInfoRequest, context: grpc.ServicerContext
                      ) -> pb.DaemonInfo:
        import os

        settings = self.app.settings
        return pb.DaemonInfo(
            version=__version__, socket_path=str(settings.socket_path),
            pcsc_state=pb.SERVICE_RUNNING if self.app.service_running
            else pb.SERVICE_NOT_RUNNING_STATE,
            started_at=_timestamp(self.app.started_at),
            trust_anchor_subjects=[a.subject for a in self.app.anchors],
            unattended_allowed=settings.allow_unattended,
            session_idle_timeout_seconds=int(settings.session_idle_timeout_s),
            expiry_warning_days=settings.expiry_warning_days, pid=os.getpid(),
            pcsc_error=self.app.service_error, pcsc_error_code=self.app.service_error_code,
            backends=[_backend_status(h) for h in self.app.backend_health()])

    def ListReaders(self, request: pb.ListReadersRequest, context: grpc.ServicerContext
                    ) -> pb.ListReadersResponse:
        response = pb.ListReadersResponse(
            pcsc_state=pb.SERVICE_RUNNING if self.app.service_running
            else pb.SERVICE_NOT_RUNNING_STATE)
        for view in self.app.readers():
            reader = response.readers.add(
                name=view.name, card_present=view.present, atr=view.atr,
                exclusive_elsewhere=view.exclusive_elsewhere,
                insertion=max(view.insertion, 0), error=view.error,
                card_removed_at=_timestamp(view.removed_at),
                removed_card_id=view.removed_card_id, backend=view.backend)
            if view.card is not None:
                reader.card_id = view.card.card_id
                if view.card.form is not None:
                    reader.form = _FORM[view.card.form]
        return response

    def ListUsbDevices(self, request: pb.ListUsbDevicesRequest, context: grpc.ServicerContext
                       ) -> pb.ListUsbDevicesResponse:
        from eport.daemon.usb.enumeration import UsbDeviceKind, scan_usb

        scan = scan_usb()
        response = pb.ListUsbDevicesResponse(usb_available=scan.available,
                                             unavailable_reason=scan.unavailable_reason)
        for device in scan.devices:
            response.devices.add(
                vendor_id=device.vendor_id, product_id=device.product_id, bus=device.bus,
                address=device.address, manufacturer=device.manufacturer,
                product=device.product, accessible=device.accessible,
                kind=pb.USB_CCID_READER if device.kind is UsbDeviceKind.CCID_READER
                else pb.USB_EPORT_KEY)
        return response

    def WatchEvents(self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
                    ) -> Iterator[pb.Event]:
        subscription = self.app.subscribe()
        # Wake the generator when the client goes away: no polling for is_active().
        context.add_callback(subscription.close)
        try:
            while True:
                event = subscription.queue.get()
                if event is None:
                    if subscription.overflowed:
                        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      "the event stream was not read fast enough")
                    return
                yield _event(event)
        finally:
            subscription.close()

    def GetCardInfo(self, request: pb.CardSelector, context: grpc.ServicerContext
                    ) -> pb.CardInfo:
        return self._call(context, lambda: card_info(
            self.app.card(_selector(request), context.is_active)[1]))

    def GetPinStatus(self, request: pb.CardSelector, context: grpc.ServicerContext
                     ) -> pb.PinStatus:
        return self._call(context, lambda: pin_status(
            self.app.pin_status(_selector(request), context.is_active)))

    def VerifyPin(self, request: pb.VerifyPinRequest, context: grpc.ServicerContext
                  ) -> pb.VerifyPinResponse:
        return self._call(context, lambda: pb.VerifyPinResponse(status=pin_status(
            self.app.verify_pin(_selector(request.card), request.pin,
                                allow_last_attempt=request.allow_last_attempt,
                                caller_active=context.is_active))))

    def ChangePin(self, request: pb.ChangePinRequest, context: grpc.ServicerContext
                  ) -> pb.PinStatus:
        return self._call(context, lambda: pin_status(self.app.change_pin(
            _selector(request.card), request.old_pin, request.new_pin,
            allow_last_attempt=request.allow_last_attempt, caller_active=context.is_active)))

    def UnblockPin(self, request: pb.UnblockPinRequest, context: grpc.ServicerContext
                   ) -> pb.PinStatus:
        return self._call(context, lambda: pin_status(self.app.unblock_pin(
            _selector(request.card), request.puk, request.new_pin,
            allow_last_attempt=request.allow_last_attempt, caller_active=context.is_active)))

    def Logout(self, request: pb.CardSelector, context: grpc.ServicerContext
               ) -> pb.LogoutResponse:
        return self._call(context, lambda: pb.LogoutResponse(
            session_was_active=self.app.logout(_selector(request), context.is_active)))

    def EnableUnattended(self, request: pb.EnableUnattendedRequest,
                         context: grpc.ServicerContext) -> pb.UnattendedStatus:
        return self._call(context, lambda: pb.UnattendedStatus(
            card_id=self.app.enable_unattended(_selector(request.card), request.pin,
                                               context.is_active), enabled=True))

    def DisableUnattended(self, request: pb.CardSelector, context: grpc.ServicerContext
                          ) -> pb.UnattendedStatus:
        return self._call(context, lambda: pb.UnattendedStatus(
            card_id=self.app.disable_unattended(_selector(request)), enabled=False))

    def GetCertificate(self, request: pb.CardSelector, context: grpc.ServicerContext
                       ) -> pb.Certificate:
        def work() -> pb.Certificate:
            _, card = self.app.card(_selector(request), context.is_active)
            certificate = card.certificate
            return pb.Certificate(
                der=certificate.der, pem=certificate.pem,
                certificate_number=card.certificate_number, card_id=card.card_id,
                check=certificate_check(certificate, self.app.check(certificate)))

        return self._call(context, work)

    def CheckCertificate(self, request: pb.CheckCertificateRequest,
                         context: grpc.ServicerContext) -> pb.CertificateCheck:
        def work() -> pb.CertificateCheck:
            certificate = load_certificate(request.certificate)
            return certificate_check(certificate, self.app.check(certificate))

        return self._call(context, work)

    def Sign(self, request: pb.SignRequest, context: grpc.ServicerContext) -> pb.SignResponse:
        def work() -> pb.SignResponse:
            which = request.WhichOneof("input")
            if which is None:
                raise EportError(Reason.INVALID_ARGUMENT, "give data or digest to sign")
            sign_input = (SignInput(digest=request.digest) if which == "digest"
                          else SignInput(data=request.data))
            signature, card = self.app.sign(
                _selector(request.card), sign_input, _sign_algorithm(request.algorithm),
                pin=request.pin, allow_last_attempt=request.allow_last_attempt,
                refuse_stored_pin=request.refuse_stored_pin, caller_active=context.is_active)
            return pb.SignResponse(
                signature=signature.der_or_pkcs1,
                signature_base64=base64.b64encode(signature.der_or_pkcs1).decode("ascii"),
                signature_raw_rs=signature.raw_rs,
                certificate_number=card.certificate_number,
                algorithm=_SIGN_TO_PB[signature.algorithm], card_id=card.card_id)

        return self._call(context, work)

    def GetEnvelopeCertificate(self, request: pb.CardSelector, context: grpc.ServicerContext
                               ) -> pb.Certificate:
        def work() -> pb.Certificate:
            certificate, card = self.app.envelope_certificate(_selector(request),
                                                              context.is_active)
            return pb.Certificate(
                der=certificate.der, pem=certificate.pem,
                certificate_number=certificate.serial_hex, card_id=card.card_id,
                check=certificate_check(certificate, self.app.check(certificate)))

        return self._call(context, work)

    def Decrypt(self, request: pb.DecryptRequest, context: grpc.ServicerContext
                ) -> pb.DecryptResponse:
        def work() -> pb.DecryptResponse:
            decryption, card = self.app.decrypt(
                _selector(request.card), request.ciphertext, pin=request.pin,
                allow_last_attempt=request.allow_last_attempt,
                refuse_stored_pin=request.refuse_stored_pin, caller_active=context.is_active)
            return pb.DecryptResponse(
                plaintext=decryption.plaintext,
                certificate_number=decryption.certificate_number, card_id=card.card_id,
                form=_FORM_TO_PB[decryption.form])

        return self._call(context, work)

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext
               ) -> pb.VerifyResponse:
        def work() -> pb.VerifyResponse:
            if request.WhichOneof("key") == "certificate":
                certificate = load_certificate(request.certificate)
                number = certificate.serial_hex
            else:
                _, card = self.app.card(_selector(request.card), context.is_active)
                certificate, number = card.certificate, card.certificate_number
            which = request.WhichOneof("input")
            if which is None:
                raise EportError(Reason.INVALID_ARGUMENT, "give the data or digest signed")
            algorithm = _sign_algorithm(request.algorithm)
            chosen = choose_algorithm(certificate.key_kind, algorithm)
            sign_input = (SignInput(digest=request.digest) if which == "digest"
                          else SignInput(data=request.data))
            digest = digest_of(chosen, certificate, sign_input)
            valid = verify_signature(chosen, certificate, digest, request.signature)
            return pb.VerifyResponse(valid=valid, certificate_number=number)

        return self._call(context, work)


def add_to_server(app: CardServiceApp, server: grpc.Server) -> None:
    pb_grpc.add_CardServiceServicer_to_server(CardServicer(app), server)

