"""Daemon answers as plain JSON-ready dicts: the stable schema of `--json` (docs/cli.md).

Names are spelled out here rather than taken from protobuf's JSON mapping, so that a field
renamed in the contract cannot silently change what scripts read. Enums are their names,
times ISO 8601 in UTC, bytes upper-case hex.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

SCHEMA_VERSION = 1

CARD_KIND_NAMES: dict[int, Bilingual] = {
    pb.LEGAL_PERSON: Bilingual("法人卡", "legal-person card"),
    pb.OPERATOR: Bilingual("操作员卡", "operator card"),
    pb.DECLARANT: Bilingual("报关员卡", "declarant card"),
}
CARD_FORM_NAMES: dict[int, Bilingual] = {
    pb.IC_CARD: Bilingual("IC卡", "IC card"), pb.IKEY: Bilingual("IKEY", "IKEY")}
UNKNOWN = Bilingual("未知", "unknown")


def timestamp(value: Timestamp, present: bool = True) -> str | None:
    if not present or (value.seconds == 0 and value.nanos == 0):
        return None
    return value.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def when(value: Timestamp) -> datetime | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToDatetime(tzinfo=UTC)


def reader_view(reader: pb.Reader) -> dict[str, Any]:
    return {
        "name": reader.name,
        "backend": reader.backend or None,
        "card_present": reader.card_present,
        "atr": reader.atr.hex().upper() or None,
        "card_id": reader.card_id or None,
        "form": pb.CardForm.Name(reader.form) if reader.form else None,
        "exclusive_elsewhere": reader.exclusive_elsewhere,
        "insertions": reader.insertion,
        "error": reader.error or None,
    }


def card_view(card: pb.CardInfo) -> dict[str, Any]:
    return {
        "card_id": card.card_id,
        "kind": pb.CardKind.Name(card.kind),
        "form": pb.CardForm.Name(card.form),
        "holder_name": card.holder_name,
        "enterprise_name": card.enterprise_name,
        "customs_code": card.customs_code,
        "credit_code": card.credit_code,
        "certificate_number": card.certificate_number,
        "key_algorithm": pb.KeyAlgorithm.Name(card.key_algorithm),
        "sign_algorithms": [pb.SignAlgorithm.Name(a) for a in card.sign_algorithms],
        "reader": card.reader,
        "atr": card.atr.hex().upper(),
        "label": card.label,
        "not_before": timestamp(card.not_before),
        "not_after": timestamp(card.not_after),
        **_eport_data_source_view(card),
    }


# What a card in the E-port certificate profile (no E-port data object) cannot tell.
PROFILE_UNKNOWN_FIELDS = ("kind", "customs_code", "credit_code")


def _eport_data_source_view(card: pb.CardInfo) -> dict[str, Any]:
    """Where the E-port fields came from; from the certificate profile, the fields it lacks are
    null and listed as unknown (an empty string would read as "none")."""
    view: dict[str, Any] = {"eport_data_source": pb.EportDataSource.Name(card.eport_data_source)}
    if card.eport_data_source == pb.EPORT_CERTIFICATE_PROFILE:
        view.update(dict.fromkeys(PROFILE_UNKNOWN_FIELDS))
        view["unknown_fields"] = list(PROFILE_UNKNOWN_FIELDS)
    return view


def pin_view(status: pb.PinStatus) -> dict[str, Any]:
    return {
        "card_id": status.card_id,
        "pin_tries_left": status.pin_tries_left if status.pin_tries_left >= 0 else None,
        "pin_blocked": status.pin_blocked,
        "puk_tries_left": status.puk_tries_left if status.puk_tries_left >= 0 else None,
        "puk_blocked": status.puk_blocked,
        "session_active": status.session_active,
        "session_expires_at": timestamp(status.session_expires_at, status.session_active),
        "unattended_enabled": status.unattended_enabled,
    }


def check_view(check: pb.CertificateCheck) -> dict[str, Any]:
    return {
        "state": pb.CertificateState.Name(check.state),
        "days_left": check.days_left,
        "not_before": timestamp(check.not_before),
        "not_after": timestamp(check.not_after),
        "chain": pb.ChainState.Name(check.chain),
        "chain_detail": check.chain_detail,
        "message": {"zh": check.message_zh, "en": check.message_en},
        "subject": check.subject,
        "issuer": check.issuer,
        "serial": check.serial_hex,
        "key_algorithm": pb.KeyAlgorithm.Name(check.key_algorithm),
    }


def certificate_view(certificate: pb.Certificate) -> dict[str, Any]:
    return {"card_id": certificate.card_id,
            "certificate_number": certificate.certificate_number,
            "check": check_view(certificate.check)}


def event_view(event: pb.Event) -> dict[str, Any]:
    return {
        "sequence": event.sequence,
        "kind": pb.EventKind.Name(event.kind),
        "reader": event.reader or None,
        "atr": event.atr.hex().upper() or None,
        "card": card_view(event.card) if event.HasField("card") else None,
        "time": timestamp(event.time),
        "detail": event.detail or None,
    }


def card_kind_name(kind: int) -> Bilingual:
    return CARD_KIND_NAMES.get(kind, UNKNOWN)


def card_form_name(form: int) -> Bilingual:
    return CARD_FORM_NAMES.get(form, UNKNOWN)
