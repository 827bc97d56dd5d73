"""`eport-demo`: the whole stack on a simulated card, as a user would run it.

It provisions TEST cards with `eport-sim`, inserts one into pcscd's vpcd reader with
`eport-sim run`, starts `eportd` on a private socket and then, as a thin client that only calls
the daemon, shows what eportd does: events, card data, the PIN guard, signing, and an
independent check of the signature with OpenSSL; then `eport card info` and `eport doctor` on
the same card, `eport-gateway`, and the subsystems through `eport-datacenter`
(demo_subsystems.py). Everything it starts, it stops.

It touches only the cards it made: it refuses to start while any other card is in a reader
(a person's own card must never get the demo's wrong PINs), unless told to leave that reader
alone with --ignore-reader (its eportd then does not see that reader at all); it waits for its
own card ids and names them in every call. Every failure is one line in Chinese and English
and an exit code (DemoExit, docs/exit-codes.md): 1 a step failed, 2 a bad option, 3 another
card is present, 130 interrupted. A bad option goes through the shared funnel
(eport.common.funnel): both languages, or JSON with --json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from enum import IntEnum
from pathlib import Path
from typing import Any

import grpc

from eport.clients.demo_gateway import gateway_steps
from eport.clients.demo_subsystems import DemoCards, subsystem_steps
from eport.clients.demo_support import (
    DEMO_CREDIT_CODE,
    DEMO_CUSTOMS_CODE,
    DEMO_PIN,
    DemoError,
    DemoReader,
    bin_path,
    card_id_of,
    running_process,
    step,
    wait_for_card,
    wait_serving,
)
from eport.clients.kit.errors import error_detail_of
from eport.common.funnel import FunnelArgumentParser, run_console
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

SM2_DISTID = "distid:1234567812345678"


class DemoExit(IntEnum):
    OK = 0
    UNEXPECTED = 1
    FAILED = 1         # a step failed: the line says which, the logs say more
    USAGE = 2
    FOREIGN_CARD = 3   # a card the demo did not make is in a reader: nothing was sent to it
    INTERRUPTED = 130
# The packaged vpcd slots (the driver's reader entry in /etc/reader.conf.d/vpcd).
_VPCD_READER = re.compile(r"Virtual PCD 00 (\d\d)")
_READERS_WAIT_S = 10


def _reason(error: grpc.RpcError) -> str:
    detail = error_detail_of(error)
    if detail is None:
        return str(error)
    return (f"{pb.ErrorReason.Name(detail.reason)}: {detail.message_zh} / {detail.message_en}"
            f" — {detail.remedy_en}")


def _ensure_pcscd(stub: pb_grpc.CardServiceStub) -> None:
    """Start pcscd when eportd says it is not running, then wait for eportd to see it."""
    if stub.GetDaemonInfo(pb.GetDaemonInfoRequest()).pcsc_state == pb.SERVICE_RUNNING:
        return
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if not Path(pcscd).exists():
        raise DemoError(
            Bilingual("pcscd 未安装", "pcscd is not installed. Remedy: scripts/setup.sh"))
    print("eportd reports pcscd not running (SERVICE_NOT_RUNNING): starting pcscd ...")
    subprocess.run([pcscd], check=False)  # it daemonizes itself
    deadline = time.monotonic() + 15
    while stub.GetDaemonInfo(pb.GetDaemonInfoRequest()).pcsc_state != pb.SERVICE_RUNNING:
        if time.monotonic() > deadline:
            raise DemoError(
                Bilingual("pcscd 未能启动",
                          "pcscd did not start. Remedy: run as root, or `sudo systemctl start "
                          "pcscd.socket`"))
        time.sleep(0.05)
    print("  eportd reconnected to pcscd by itself")


def _choose_reader(stub: pb_grpc.CardServiceStub, control: Path) -> DemoReader:
    """The first empty vpcd reader, after making sure no card but ours is in any reader
    eportd sees (the ignored ones it does not see at all)."""
    deadline = time.monotonic() + _READERS_WAIT_S
    readers = stub.ListReaders(pb.ListReadersRequest()).readers
    while not any(_VPCD_READER.fullmatch(r.name) for r in readers):
        if time.monotonic() > deadline:
            raise DemoError(
                Bilingual("找不到空闲的 vpcd 虚拟读卡器",
                          "no free vpcd reader (Virtual PCD 00 NN) is listed. Remedy: install "
                          "vsmartcard-vpcd (scripts/setup.sh) and restart pcscd"))
        time.sleep(0.05)
        readers = stub.ListReaders(pb.ListReadersRequest()).readers
    occupied = [r for r in readers if r.card_present]
    if occupied:
        shown = ", ".join(f"{r.name!r}" + (f" (card {r.card_id})" if r.card_id else "")
                          for r in occupied)
        flags = " ".join(f"--ignore-reader {shlex.quote(r.name)}" for r in occupied)
        raise DemoError(
            Bilingual(f"读卡器中有不是演示创建的卡: {shown}; 演示不会碰它",
                      f"another card is in {shown}: the demo uses only the cards it makes, and "
                      "will not start while another is present. Remedy: take it out, or run "
                      f"eport-demo {flags}"),
            DemoExit.FOREIGN_CARD)
    free = sorted((int(match.group(1)), r.name) for r in readers
                  if (match := _VPCD_READER.fullmatch(r.name)))
    slot, name = free[0]
    return DemoReader(slot=slot, name=name, control=control)


def run_demo(workdir: Path, ignored_readers: tuple[str, ...] = ()) -> int:
    ca = workdir / "ca"
    card, operator, legal_person = (workdir / f"{kind}.card"
                                    for kind in ("declarant", "operator", "legal-person"))
    runtime = workdir / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    socket = runtime / "eportd.sock"
    step("a TEST CA and SM2 IC cards of one enterprise: declarant, operator, legal person "
         "(eport-sim)")
    sim = bin_path("eport-sim")
    subprocess.run([sim, "ca", "init", "--ca", str(ca), "--force"], check=True,
                   stdout=subprocess.DEVNULL)
    for image, kind, holder in ((card, "declarant", "李报关"), (operator, "operator", "王操作"),
                                (legal_person, "legal-person", "赵法人")):
        subprocess.run([sim, "provision", str(image), "--ca", str(ca), "--kind", kind,
                        "--holder", holder, "--customs-code", DEMO_CUSTOMS_CODE,
                        "--credit-code", DEMO_CREDIT_CODE, "--force"], check=True,
                       stdout=subprocess.DEVNULL)
    eportd = [bin_path("eportd"), "--socket", str(socket), "--trust-anchor",
              str(ca / "trust-anchors.pem"), "--log-format", "text", "--no-systemd-activation",
              *(word for name in ignored_readers for word in ("--ignore-reader", name))]
    with running_process(eportd, workdir / "eportd.log") as daemon:
        wait_serving(socket)
        stub = pb_grpc.CardServiceStub(grpc.insecure_channel(f"unix:{socket}"))
        info = stub.GetDaemonInfo(pb.GetDaemonInfoRequest())
        print(f"eportd {info.version} (pid {daemon.pid}) on {socket}")
        _ensure_pcscd(stub)
        reader = _choose_reader(stub, runtime / "sim.sock")
        events = stub.WatchEvents(pb.WatchEventsRequest())
        seen: list[str] = []

        def follow() -> None:
            with contextlib.suppress(grpc.RpcError):
                for event in events:
                    line = f"  event {event.sequence}: {pb.EventKind.Name(event.kind)} " \
                           f"{event.reader}"
                    seen.append(line)
                    print(line, flush=True)

        threading.Thread(target=follow, daemon=True).start()
        step(f"the card goes into the reader {reader.name} (eport-sim run)")
        with running_process([sim, "run", str(card), "--slot", str(reader.slot),
                              "--control", str(reader.control)], workdir / "sim.log"):
            card_id = card_id_of(card)
            wait_for_card(stub, reader.name, card_id)
            selector = pb.CardSelector(reader=reader.name, card_id=card_id)
            result = _card_steps(stub, workdir, events, selector)
            _cli_steps(socket, card_id)
            gateway_steps(socket, workdir, reader.name)
            subsystem_steps(stub, socket, workdir, ca,
                            DemoCards(declarant=card, operator=operator,
                                      legal_person=legal_person), reader)
            return result


def _cli_steps(socket: Path, card_id: str) -> None:
    """The same card through the `eport` command line, as a user or support desk sees it."""
    environment = {**os.environ, "EPORTD_SOCKET": str(socket)}
    for words in (["card", "info", "--card", card_id], ["doctor"]):
        step(f"eport {' '.join(words)}")
        # doctor exits 20 for warnings (e.g. udev rules not installed): still a good run.
        subprocess.run([bin_path("eport"), *words], env=environment, check=False)


def _card_steps(stub: pb_grpc.CardServiceStub, workdir: Path, events: Any,
                selector: pb.CardSelector) -> int:
    step("card information (read once per insertion, then cached)")
    card = stub.GetCardInfo(selector)
    print(f"  card {card.card_id} {pb.CardKind.Name(card.kind)} {pb.CardForm.Name(card.form)}"
          f" {pb.KeyAlgorithm.Name(card.key_algorithm)}\n  holder {card.holder_name}, "
          f"{card.enterprise_name}, customs code {card.customs_code}, credit code "
          f"{card.credit_code}\n  certificate number {card.certificate_number}")
    certificate = stub.GetCertificate(selector)
    print(f"  certificate {pb.CertificateState.Name(certificate.check.state)}, "
          f"{certificate.check.days_left} days left, chain "
          f"{pb.ChainState.Name(certificate.check.chain)}")
    step("the PIN guard: a typo costs nothing, two wrong PINs, then the guard holds")
    for pin in ("1234", "11111111", "22222222", DEMO_PIN):
        try:
            stub.VerifyPin(pb.VerifyPinRequest(card=selector, pin=pin))
            print("  PIN accepted")
        except grpc.RpcError as error:
            print(f"  refused: {_reason(error)}")
    print(f"  tries left: {stub.GetPinStatus(selector).pin_tries_left}")
    step("the right PIN, allowing the last attempt explicitly")
    status = stub.VerifyPin(pb.VerifyPinRequest(card=selector, pin=DEMO_PIN,
                                                allow_last_attempt=True)).status
    print(f"  session open until {status.session_expires_at.ToDatetime():%H:%M:%S} UTC")
    step("sign a declaration (SM2 with SM3) and check it with OpenSSL")
    declaration = "报关单 demo: 进口 1 项 / declaration demo".encode()
    answer = stub.Sign(pb.SignRequest(card=selector, data=declaration))
    print(f"  signature {answer.signature_base64[:32]}... certificate {answer.certificate_number}")
    (workdir / "data.bin").write_bytes(declaration)
    (workdir / "sig.der").write_bytes(answer.signature)
    (workdir / "card.pem").write_text(certificate.pem)
    pubkey = subprocess.run(["openssl", "x509", "-in", str(workdir / "card.pem"), "-pubkey",
                             "-noout"], capture_output=True, text=True, check=True).stdout
    (workdir / "pub.pem").write_text(pubkey)
    check = subprocess.run(["openssl", "dgst", "-sm3", "-verify", str(workdir / "pub.pem"),
                            "-sigopt", SM2_DISTID, "-signature", str(workdir / "sig.der"),
                            str(workdir / "data.bin")], capture_output=True, text=True)
    print(f"  openssl: {check.stdout.strip() or check.stderr.strip()}")
    stub.Logout(selector)
    events.cancel()
    return 0 if check.returncode == 0 else 1


def _run(workdir: Path | None, ignored: tuple[str, ...]) -> int:
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
        return run_demo(workdir.resolve(), ignored)
    with tempfile.TemporaryDirectory(prefix="eport-demo-") as directory:
        os.chmod(directory, 0o700)
        return run_demo(Path(directory), ignored)


def _fail(message: str, exit_code: int) -> int:
    print(f"eport-demo: {message}", file=sys.stderr, flush=True)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    return run_console("eport-demo", _demo, argv, exit_codes=DemoExit, languages="both")


def _demo(argv: list[str]) -> int:
    parser = FunnelArgumentParser(
        prog="eport-demo", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    parser.add_argument("--ignore-reader", metavar="NAME", action="append", default=[],
                        help="leave this reader and its card alone (eportd will not see it); "
                             "repeatable")
    args = parser.parse_args(argv)
    keep = "" if args.workdir else " (run with --workdir DIR to keep the logs)"
    try:
        return _run(args.workdir, tuple(args.ignore_reader))
    except DemoError as error:
        return _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        return _fail("已中断 / interrupted", DemoExit.INTERRUPTED)
    except grpc.RpcError as error:
        return _fail(f"eportd 调用失败 / a call to eportd failed: {_reason(error)}{keep}",
                     DemoExit.FAILED)
    except subprocess.CalledProcessError as error:
        command = " ".join(Path(str(word)).name if n == 0 else str(word)
                           for n, word in enumerate(error.cmd))
        return _fail(f"命令失败 / a command failed (exit {error.returncode}): {command}{keep}",
                     DemoExit.FAILED)
    except OSError as error:
        return _fail(f"系统错误 / a system error: {error}{keep}", DemoExit.FAILED)
    except Exception as error:  # the demo must end with a message, never a traceback
        return _fail(f"演示失败 / the demo failed: {type(error).__name__}: {error}{keep}",
                     DemoExit.FAILED)


if __name__ == "__main__":
    sys.exit(main())
