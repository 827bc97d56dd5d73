"""Which card may do what, per subsystem, as the manuals say.

Customs declarations (QP FAQ §四 and 十一(二)): operator cards (操作员卡) have the entry right,
暂存 (Save), 上载 (Upload) and 删除 (Delete: the entry screen's Ctrl+D, 十三(一)); declarant cards
(报关员IC卡) have it too, and alone may 申报 (Declare). Legal-person cards (法人卡) may look
(GetDocument, Query, receipts, statements) but not enter or declare: the QP FAQ gives them no
part in the QP declaration screens.

The e-book subsystems (e-book manual §2.3 用户类别): the enterprise's legal-person card (企业法人卡)
has 录入、暂存、修改、删除、申报、查询/打印, and 第3篇 1.1 has the enterprise's (or its agent's)
operators enter and declare with their IC card or IKEY. Bonded verification (bonded manual) is read
the same way: its manual names no card kind at all (第三篇 1.1: the enterprise's IC card or the
operator's IKEY logs in; 1.4: whoever is logged in enters and every submission is signed), and
its documents are the processing-trade enterprises' own, checked against their e-books. So
every E-port card of the enterprise, legal-person card included, may 录入/暂存, 修改, 删除, 申报
and 库存重新申报 there. A declarant card is an operator card with the customs declaring right
added, so it may do what an operator card may.

Switching cards means logging out and in again with the other card, which is what the
remedies say.
"""

from __future__ import annotations

import logging

from eport.common.profile import CardKind
from eport.common.text import Bilingual
from eport.datacenter.errors import DataCenterError
from eport.datacenter.trust import Identity
from eport.protos.v1 import datacenter_pb2 as pb

logger = logging.getLogger(__name__)

ENTRY_KINDS = frozenset({CardKind.OPERATOR, CardKind.DECLARANT})
DECLARE_KINDS = frozenset({CardKind.DECLARANT})
# e-book manual §2.3 (企业法人: 录入、暂存、修改、删除、申报、查询/打印) and 第3篇 1.1
# (操作员: 录入, 申报); bonded verification by the same reading (the bonded manual names no
# card kind).
EBOOK_KINDS = frozenset({CardKind.LEGAL_PERSON, CardKind.OPERATOR, CardKind.DECLARANT})
BONDED_KINDS = EBOOK_KINDS
EBOOK_SECTION = "e-book manual §2.3"

_NAMES_EN = {CardKind.LEGAL_PERSON: "A legal-person card", CardKind.OPERATOR: "An operator card",
             CardKind.DECLARANT: "A declarant card"}


def require_entry_right(identity: Identity, action_zh: str, action_en: str) -> None:
    """Customs Save, Upload and Delete: operator or declarant card."""
    if identity.kind in ENTRY_KINDS:
        return
    raise DataCenterError(
        pb.WRONG_CARD_KIND, f"{identity.kind.value} card {identity.card_id} may not {action_en}",
        message=Bilingual(f"{identity.kind.label_zh}不能{action_zh}",
                          f"{_NAMES_EN[identity.kind]} cannot {action_en}"),
        remedy=Bilingual(f"请退出, 插入操作员卡或报关员IC卡后重新登录再{action_zh}",
                         "Log out, insert an operator card or a declarant IC card, log in again "
                         f"and {action_en}"),
        required_card_kind=CardKind.OPERATOR.value)


def require_declare_right(identity: Identity) -> None:
    """Customs Declare: the declarant card only."""
    if identity.kind in DECLARE_KINDS:
        return
    raise DataCenterError(
        pb.WRONG_CARD_KIND, f"{identity.kind.value} card {identity.card_id} may not declare",
        message=Bilingual(f"{identity.kind.label_zh}不能申报",
                          f"{_NAMES_EN[identity.kind]} cannot declare"),
        remedy=Bilingual("请退出, 插入报关员IC卡后重新登录再申报",
                         "Log out, insert the declarant IC card, log in again and declare"),
        required_card_kind=CardKind.DECLARANT.value)


def require_bonded_right(identity: Identity, action_zh: str, action_en: str) -> None:
    """Bonded verification's 暂存, 修改, 删除, 申报, 库存重新申报: any card of the enterprise
    (e-book manual §2.3 read for the bonded manual, above). Kept as a check so that a card kind
    added to the profile later is refused until the manuals are read for it."""
    if identity.kind in BONDED_KINDS:
        return
    raise DataCenterError(
        pb.WRONG_CARD_KIND, f"{identity.kind.value} card {identity.card_id} may not {action_en}",
        message=Bilingual(f"{identity.kind.label_zh}不能{action_zh}",
                          f"{_NAMES_EN.get(identity.kind, 'This card')} cannot {action_en}"),
        remedy=Bilingual(f"请退出, 插入本企业法人卡或操作员卡后重新登录再{action_zh}",
                         "Log out, insert your enterprise's legal-person or operator card, log "
                         f"in again and {action_en}"),
        required_card_kind=CardKind.OPERATOR.value)
