"""Data-centre requests signed on the card, through eportd (the client never sees a key).

The first request of a command reads the card (kind, certificate) once and asks for the PIN
only when the card has no session; the PIN goes to eportd with the request it unlocks and is
not kept. From then on the card is named by its id, so a card swapped in meanwhile is refused
by eportd instead of signing in the other card's name (QP FAQ §十一(二): switching cards
means logging in again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eport.clients.kit.context import CliState
from eport.clients.kit.daemon_client import selector
from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.pin_entry import PIN, SecretReader
from eport.clients.kit.pin_guard import blocked, with_guard
from eport.clients.kit.sign_algorithms import card_algorithm
from eport.common.customs.envelope import build_payload
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc
from eport.protos.v1 import eportd_pb2 as pb

# Sessions that ended between two requests of a long batch: the PIN is asked again (a person)
# or the batch stops with the error (a script), never retried with a remembered PIN.
_SESSION_ENDED = ("NOT_AUTHENTICATED", "SESSION_EXPIRED")


@dataclass
class CardSigner:
    cli: CliState
    secrets: SecretReader
    reader: str | None = None
    card_id: str | None = None
    _card: pb.CardInfo | None = None
    _certificate: bytes = b""
    _pin_sent: bool = field(default=False)

    @property
    def card(self) -> pb.CardInfo:
        if self._card is None:
            self._card = self.cli.client.card_info(selector(self.reader, self.card_id))
        return self._card

    @property
    def chosen(self) -> pb.CardSelector:
        return pb.CardSelector(card_id=self.card.card_id)

    @property
    def certificate(self) -> bytes:
        if not self._certificate:
            self._certificate = self.cli.client.certificate(self.chosen).der
        return self._certificate

    def require_declarant(self) -> None:
        """QP FAQ §四 and 十一(二): only the declarant (报关员) IC card may declare. Said here,
        before anything is sent, instead of a request the data centre will refuse."""
        if self.card.kind == pb.DECLARANT:
            return
        held = {pb.OPERATOR: Bilingual("操作员卡", "an operator card"),
                pb.LEGAL_PERSON: Bilingual("法人卡", "a legal-person card")}.get(
                    self.card.kind, Bilingual("未知类型的卡", "a card of unknown kind"))
        raise CliError(
            "WRONG_CARD_KIND",
            Bilingual(f"当前插入的是{held.zh}, 不能申报; 只有报关员IC卡可以申报",
                      f"The card inserted is {held.en}, which may not declare: only the "
                      "declarant (报关员) IC card may"),
            Bilingual("请先退出登录 (eport pin logout), 拔出此卡, 插入报关员IC卡并重新登录 "
                      "(eport pin verify) 后再申报; 暂存的报关单不会丢失",
                      "log out (eport pin logout), take this card out, insert the declarant "
                      "IC card and log in again (eport pin verify), then declare; the saved "
                      "document is kept"),
            ExitCode.WRONG_CARD, {"card_kind": pb.CardKind.Name(self.card.kind),
                                  "required_card_kind": "declarant"})

    def require_legal_person(self) -> None:
        """E-book manual §4 1.1 and 1.2: only the legal-person card (法人卡) grants; said here, in
        the words of the E-port client, before anything is sent."""
        if self.card.kind == pb.LEGAL_PERSON:
            return
        raise CliError(
            "WRONG_CARD_KIND",
            Bilingual("非法人卡，不允许操作!", "Not a legal-person card: this is not allowed"),
            Bilingual("授权须用本企业的法人卡: 请退出登录 (eport pin logout), 插入法人卡并重新登录",
                      "grants need the enterprise's legal-person card (法人卡): log out "
                      "(eport pin logout), insert the legal-person card and log in again"),
            ExitCode.WRONG_CARD, {"card_kind": pb.CardKind.Name(self.card.kind),
                                  "required_card_kind": "legal-person"})

    def sign(self, method: str, body: dict[str, Any]) -> dc.SignedRequest:
        payload = build_payload(method, body)
        algorithm = card_algorithm(self.card)
        try:
            answer = self._sign(payload, algorithm)
        except CliError as error:
            if error.code not in _SESSION_ENDED or not self.secrets.interactive:
                raise
            self._pin_sent = False  # the session ended (idle): a person is asked again
            answer = self._sign(payload, algorithm)
        return dc.SignedRequest(payload=payload, signature=answer.signature,
                                certificate=self.certificate,
                                algorithm=dc.SignatureAlgorithm.ValueType(answer.algorithm))

    def _sign(self, payload: bytes, algorithm: pb.SignAlgorithm.ValueType) -> pb.SignResponse:
        client = self.cli.client
        pin, tries = "", -1
        if not self._pin_sent:
            status = client.pin_status(self.chosen)
            if self.secrets.from_stdin or not (status.session_active or
                                               status.unattended_enabled):
                if status.pin_blocked:
                    raise blocked(PIN, puk=False)
                pin, tries = self.secrets.read(PIN), status.pin_tries_left

        def send(allow: bool) -> pb.SignResponse:
            return client.call(client.stub.Sign, pb.SignRequest(
                card=self.chosen, data=payload, algorithm=algorithm, pin=pin,
                allow_last_attempt=allow))

        answer = with_guard(self.secrets, tries, PIN, send)
        self._pin_sent = True
        return answer
