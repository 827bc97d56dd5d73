"""Doctor check EP-C10: a card in the real E-port certificate profile (docs/sources.md).

Such a card (a real E-port card, or `eport-sim provision --profile real`) has no E-port data
object, so eportd knows only what its certificate says: holder and enterprise. Card kind,
customs code and credit code are unknown, and eportd does not guess them. Saying so here stops a
user from reading an empty card kind as a fault of the card.
"""

from __future__ import annotations

from eport.clients.doctor.facts import Facts
from eport.clients.doctor.findings import Finding, Status, problem
from eport.common.text import Bilingual as B
from eport.protos.v1 import eportd_pb2 as pb

CODE = "EP-C10"


def real_profile_cards(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    for card in facts.cards:
        info = card.info
        if info is None or info.eport_data_source != pb.EPORT_CERTIFICATE_PROFILE:
            continue
        findings.append(problem(
            CODE, Status.WARN,
            B("卡片为真实电子口岸证书格式, 没有数据对象: 卡类型等信息未知",
              "The card carries the real E-port certificate profile and no data object: "
              "card kind and more are unknown"),
            B("持卡人和企业名称取自证书 (企业名称为 GBK 编码的扩展); 真实电子口岸卡不存放卡类型、"
              "海关编码和统一社会信用代码, 本程序不猜测这些信息",
              "holder and enterprise come from the certificate (the enterprise name is a "
              "GBK-encoded extension); a real E-port card does not store its card kind, customs "
              "code or credit code where this program can read them, and it does not guess"),
            B("签名和证书功能不受影响; 需要卡类型或海关编码时, 以电子口岸官方客户端或制卡中心的"
              "记录为准",
              "signing and certificate functions are not affected; where the card kind or "
              "customs code is needed, take it from the official E-port client or the card "
              "centre's records"),
            subject=f"{card.reader} / {card.card_id}",
            holder=info.holder_name or None, enterprise=info.enterprise_name or None,
            unknown_fields=["kind", "customs_code", "credit_code"]))
    return findings
