"""Which card may do what (seed 003 四 and 十一(二)).

Operator cards (操作员卡) have the entry right: 暂存 (Save) and 上载 (Upload). Declarant cards
(报关员IC卡) have it too, and alone may 申报 (Declare). Legal-person cards (法人卡) may look
(GetDocument, Query, receipts, statements) but not enter or declare. Switching cards means
logging out and in again with the other card, which is what the remedies say.
"""

from __future__ import annotations

import logging

from eport.common.profile import CardKind
from eport.datacenter.errors import DataCenterError
from eport.datacenter.trust import Identity
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

ENTRY_KINDS = frozenset({CardKind.OPERATOR, CardKind.DECLARANT})
DECLARE_KINDS = frozenset({CardKind.DECLARANT})

_NAMES_EN = {CardKind.LEGAL_PERSON: "A legal-person card", CardKind.OPERATOR: "An operator card",
             CardKind.DECLARANT: "A declarant card"}


def require_entry_right(identity: Identity, action_zh: str, action_en: str) -> None:
    """Save and Upload: operator or declarant card."""
    if identity.kind in ENTRY_KINDS:
        return
    raise DataCenterError(
        pb.WRONG_CARD_KIND, f"{identity.kind.value} card {identity.card_id} may not {action_en}",
        message_zh=f"{identity.kind.label_zh}不能{action_zh}",
        message_en=f"{_NAMES_EN[identity.kind]} cannot {action_en}",
        remedy_zh=f"请退出, 插入操作员卡或报关员IC卡后重新登录再{action_zh}",
        remedy_en=f"Log out, insert an operator card or a declarant IC card, log in again and "
                  f"{action_en}",
        required_card_kind=CardKind.OPERATOR.value)


def require_declare_right(identity: Identity) -> None:
    """Declare: the declarant card only."""
    if identity.kind in DECLARE_KINDS:
        return
    raise DataCenterError(
        pb.WRONG_CARD_KIND, f"{identity.kind.value} card {identity.card_id} may not declare",
        message_zh=f"{identity.kind.label_zh}不能申报",
        message_en=f"{_NAMES_EN[identity.kind]} cannot declare",
        remedy_zh="请退出, 插入报关员IC卡后重新登录再申报",
        remedy_en="Log out, insert the declarant IC card, log in again and declare",
        required_card_kind=CardKind.DECLARANT.value)
