"""eport-demo's subsystem steps, through the reference data centre (`eport-datacenter`), each as
a script would run the `eport` command line with --json:

- 报关申报 (QP FAQ): the operator card saves, its declare is refused before anything is sent,
  the declarant card declares; receipts, the printed PDF, the fee statement;
- 委托授权 (e-book manual §4): the operator card may not grant (非法人卡，不允许操作!), the
  legal-person card grants an agent enterprise the 加工贸易手册 subsystem;
- 保税核查 (bonded manual): the operator card declares a stock-taking document; the review's
  receipts.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from eport.clients.demo_support import (
    DEMO_CUSTOMS_CODE,
    DEMO_PIN,
    DemoError,
    DemoReader,
    bin_path,
    running_process,
    step,
    swap_card,
    wait_serving,
)
from eport.common.profile import credit_code_check_char
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

# The agent enterprise (a customs broker) the legal-person card grants; the data centre's
# registry gives its credit code and name.
DEMO_AGENT = {"customs_code": "4403980002",
              "credit_code": "91440300MA5EXW802" + credit_code_check_char("91440300MA5EXW802"),
              "name": "深圳演示报关有限公司"}


@dataclass(frozen=True)
class DemoCards:
    declarant: Path
    operator: Path
    legal_person: Path


Insert = Callable[[Path], None]  # puts this card image into the reader


class _Eport:
    """`eport GROUP WORDS --json` against the demo's eportd and data centre, naming the demo
    card in the reader (--card) so that no other card is ever used."""

    def __init__(self, socket: Path, centre_socket: Path) -> None:
        self.environment = {**os.environ, "EPORTD_SOCKET": str(socket), "EPORT_LANG": "en",
                            "EPORT_DATACENTER": f"unix:{centre_socket}"}
        self.card_id: str | None = None  # the demo card now in the reader

    def __call__(self, *words: str, pin: bool = True, card: bool = True) -> dict[str, Any]:
        """The command's JSON answer ({"result": …} or {"error": …}); with `pin`, the PIN is
        given on standard input as a script gives it; with `card`, the command names the demo
        card now in the reader."""
        args = [bin_path("eport"), *words, "--json"] + (["--pin-stdin"] if pin else [])
        if card:
            if self.card_id is None:
                raise DemoError(
                    Bilingual("没有插入演示卡", "no demo card is in the reader"))
            args += ["--card", self.card_id]
        done = subprocess.run(args, env=self.environment, check=False, capture_output=True,
                              text=True, input=DEMO_PIN + "\n" if pin else None)
        try:
            answer: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DemoError(
                Bilingual(f"`eport {' '.join(words)}` 执行失败",
                          f"`eport {' '.join(words)}` failed: {last}")) from None
        return answer


def _registry_file(workdir: Path) -> Path:
    path = workdir / "registry.json"
    path.write_text(json.dumps([DEMO_AGENT], ensure_ascii=False), encoding="utf-8")
    return path


def subsystem_steps(stub: pb_grpc.CardServiceStub, socket: Path, workdir: Path, ca: Path,
                    cards: DemoCards, reader: DemoReader) -> None:
    centre_socket = workdir / "run" / "datacenter.sock"
    database = workdir / "datacenter.sqlite3"
    subprocess.run([bin_path("eport-datacenter"), "registry", "import", "--db", str(database),
                    str(_registry_file(workdir))], check=True, stdout=subprocess.DEVNULL)
    centre = [bin_path("eport-datacenter"), "serve", "--db", str(database),
              "--listen", f"unix:{centre_socket}", "--trust-anchor",
              str(ca / "trust-anchors.pem"), "--review-delay", "0.5"]
    eport = _Eport(socket, centre_socket)

    def insert(image: Path) -> None:
        eport.card_id = swap_card(stub, reader, image)
    with running_process(centre, workdir / "datacenter.log"):
        wait_serving(centre_socket, what="eport-datacenter")
        _customs(eport, workdir, insert, cards)
        _authorization(eport, insert, cards)
        _bonded(eport, workdir, insert, cards)


def _customs(eport: _Eport, workdir: Path, insert: Insert, cards: DemoCards) -> None:
    step("eport customs: save (暂存) with the operator card, declare (申报) with the declarant "
         "card, through eport-datacenter")
    entry = workdir / "entry.json"
    eport("customs", "new", "--example", "-o", str(entry), pin=False, card=False)
    print(f"  a filled-in example declaration: {entry}")
    insert(cards.operator)
    saved = eport("customs", "save", str(entry))["result"]
    print(f"  operator card: saved as {saved['temporary_number']} ({saved['status']})")
    refused = eport("customs", "declare", saved["temporary_number"], pin=False)["error"]
    print(f"  operator card: declare refused before sending: {refused['message']['en']}")
    insert(cards.declarant)
    declared = eport("customs", "declare", saved["temporary_number"], "--wait", "10")["result"]
    print(f"  declarant card: declared, unified number {declared['unified_number']}; "
          f"review {declared['status']}: entry number {declared['entry_number']}, "
          f"pre-entry number {declared['pre_entry_number']}")
    for receipt in eport("customs", "receipts", "--number", declared["unified_number"])[
            "result"]["receipts"]:
        print(f"  receipt #{receipt['sequence']} {receipt['kind']} {receipt['message']['zh']}")
    pdf = workdir / "declaration.pdf"
    eport("customs", "print", declared["unified_number"], "-o", str(pdf))
    print(f"  printed (A4, barcode of the pre-entry number): {pdf}")
    stats = eport("customs", "stats")["result"]
    print(f"  stats for {stats['enterprise_code']}: {stats['charged_entries']} entry "
          f"charged, {stats['total_yuan']} yuan")


def _authorization(eport: _Eport, insert: Insert, cards: DemoCards) -> None:
    step("eport auth: only the legal-person card grants (委托授权, e-book manual §4)")
    until = (date.today() + timedelta(days=365)).isoformat()
    grant = ("auth", "grant", "--agent", DEMO_AGENT["customs_code"], "--subsystem", "handbook",
             "--until", until)
    insert(cards.operator)
    refused = eport(*grant, pin=False)["error"]
    print(f"  operator card: {refused['message']['zh']} ({refused['message']['en']})")
    insert(cards.legal_person)
    granted = eport(*grant)["result"]
    print(f"  legal-person card: {granted['grant_id']} lets {granted['agent']['name']} "
          f"({granted['agent']['customs_code']}) enter 加工贸易手册 data until "
          f"{granted['valid_until']}")


def _bonded(eport: _Eport, workdir: Path, insert: Insert, cards: DemoCards) -> None:
    step("eport bonded: the operator card declares a stock-taking document "
         "(保税核查, bonded manual)")
    document = workdir / "stocktaking.json"
    eport("bonded", "new", "--example", "--enterprise-code", DEMO_CUSTOMS_CODE, "-o",
          str(document), pin=False, card=False)
    insert(cards.operator)
    declared = eport("bonded", "declare", str(document), "--wait", "10")["result"]
    print(f"  declared {declared['internal_number']} of {declared['enterprise_name']}: "
          f"unified number {declared['unified_number']}, {declared['status']}")
    for receipt in eport("bonded", "receipts", "--number", declared["unified_number"])[
            "result"]["receipts"]:
        print(f"  receipt #{receipt['sequence']} {receipt['kind']} {receipt['message']['zh']}")
