"""`eport-demo`: the whole stack on a simulated card, as a user would run it.

It provisions a TEST card with `eport-sim`, inserts it into pcscd's vpcd reader with
`eport-sim run`, starts `eportd` on a private socket and then, as a thin client that only calls
the daemon, shows what eportd does: events, card data, the PIN guard, signing, and an
independent check of the signature with OpenSSL, and finally `eport card info` and
`eport doctor` on the same card. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from eport.clients.cli.errors import error_detail_of
from eport.common.profile import credit_code_check_char
from eport.protos.v1 import eportd_pb2 as pb
from eport.protos.v1 import eportd_pb2_grpc as pb_grpc

DEMO_PIN = "88888888"
SM2_DISTID = "distid:1234567812345678"
# One enterprise, two cards: its operator card saves, its declarant card declares.
DEMO_CUSTOMS_CODE = "4403960001"
DEMO_CREDIT_CODE = "91440300MA5DXW801" + credit_code_check_char("91440300MA5DXW801")


def _bin(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _reason(error: grpc.RpcError) -> str:
    detail = error_detail_of(error)
    if detail is None:
        return str(error)
    return (f"{pb.ErrorReason.Name(detail.reason)}: {detail.message_zh} / {detail.message_en}"
            f" — {detail.remedy_en}")


@contextlib.contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_serving(socket: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket.exists():
            with grpc.insecure_channel(f"unix:{socket}") as channel, \
                    contextlib.suppress(grpc.RpcError):
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        time.sleep(0.05)
    raise SystemExit("eportd did not start; see its log above")


def _ensure_pcscd(stub: pb_grpc.CardServiceStub) -> None:
    """Start pcscd when eportd says it is not running, then wait for eportd to see it."""
    if stub.GetDaemonInfo(pb.GetDaemonInfoRequest()).pcsc_state == pb.SERVICE_RUNNING:
        return
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if not Path(pcscd).exists():
        raise SystemExit("pcscd 未安装 / pcscd is not installed. Remedy: scripts/setup.sh")
    print("eportd reports pcscd not running (SERVICE_NOT_RUNNING): starting pcscd ...")
    subprocess.run([pcscd], check=False)  # it daemonizes itself
    deadline = time.monotonic() + 15
    while stub.GetDaemonInfo(pb.GetDaemonInfoRequest()).pcsc_state != pb.SERVICE_RUNNING:
        if time.monotonic() > deadline:
            raise SystemExit("pcscd did not start. Remedy: run as root, or "
                             "`sudo systemctl start pcscd.socket`")
        time.sleep(0.05)
    print("  eportd reconnected to pcscd by itself")


def run_demo(workdir: Path) -> int:
    ca, card, operator = workdir / "ca", workdir / "declarant.card", workdir / "operator.card"
    runtime = workdir / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    socket = runtime / "eportd.sock"
    _step("a TEST CA and an SM2 declarant IC card (eport-sim)")
    sim = _bin("eport-sim")
    subprocess.run([sim, "ca", "init", "--ca", str(ca), "--force"], check=True,
                   stdout=subprocess.DEVNULL)
    for image, kind, holder in ((card, "declarant", "李报关"), (operator, "operator", "王操作")):
        subprocess.run([sim, "provision", str(image), "--ca", str(ca), "--kind", kind,
                        "--holder", holder, "--customs-code", DEMO_CUSTOMS_CODE,
                        "--credit-code", DEMO_CREDIT_CODE, "--force"], check=True,
                       stdout=subprocess.DEVNULL)
    eportd = [_bin("eportd"), "--socket", str(socket), "--trust-anchor",
              str(ca / "trust-anchors.pem"), "--log-format", "text", "--no-systemd-activation"]
    with _process(eportd, workdir / "eportd.log") as daemon:
        _wait_serving(socket)
        stub = pb_grpc.CardServiceStub(grpc.insecure_channel(f"unix:{socket}"))
        info = stub.GetDaemonInfo(pb.GetDaemonInfoRequest())
        print(f"eportd {info.version} (pid {daemon.pid}) on {socket}")
        _ensure_pcscd(stub)
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
        _step("the card goes into the reader (eport-sim run)")
        with _process([sim, "run", str(card), "--control", str(runtime / "sim.sock")],
                      workdir / "sim.log"):
            deadline = time.monotonic() + 15
            while not any("CARD_READY" in line for line in seen):
                if time.monotonic() > deadline:
                    raise SystemExit("the card never appeared; is vsmartcard-vpcd installed?")
                time.sleep(0.05)
            result = _card_steps(stub, workdir, events)
            _cli_steps(socket)
            _gateway_steps(socket, workdir)
            _customs_steps(stub, socket, workdir, ca, (card, operator))
            return result


def _cli_steps(socket: Path) -> None:
    """The same card through the `eport` command line, as a user or support desk sees it."""
    environment = {**os.environ, "EPORTD_SOCKET": str(socket)}
    for words in (["card", "info"], ["doctor"]):
        _step(f"eport {' '.join(words)}")
        # doctor exits 20 for warnings (e.g. udev rules not installed): still a good run.
        subprocess.run([_bin("eport"), *words], env=environment, check=False)


def _gateway_steps(socket: Path, workdir: Path) -> None:
    """The E-port client's websocket API, as Single Window pages and ERP programs call it."""
    _step("eport-gateway: the E-port client's websocket API (ws://127.0.0.1:61232) on Linux")
    gateway = [_bin("eport-gateway"), "serve", "--port", "0", "--socket", str(socket)]
    log = workdir / "gateway.log"
    with _process(gateway, log):
        deadline = time.monotonic() + 15
        while "listening on" not in log.read_text(encoding="utf-8", errors="replace"):
            if time.monotonic() > deadline:
                raise SystemExit(f"eport-gateway did not start:\n{log.read_text()}")
            time.sleep(0.05)
        url = re.search(r"listening on (ws://\S+)", log.read_text(encoding="utf-8"))
        assert url is not None
        with connect(url.group(1), origin=Origin("https://www.singlewindow.cn")) as page:
            print(f"  greeting {page.recv(decode=True)!s}")
            for number, (method, args) in enumerate([
                    ("cus-sec_SpcGetCardID", {}), ("cus-sec_SpcGetCertNo", {}),
                    ("cus-sec_SpcSignDataAsPEM", {"inData": "<ceb:CEB311Message/>"}),
                    ("cus-sec_SpcVerifyPIN", {"passwd": DEMO_PIN}),
                    ("cus-sec_SpcSignDataAsPEM", {"inData": "<ceb:CEB311Message/>"}),
                    ("cus-sec_SpcClearEnv", {})], 1):
                page.send(json.dumps({"_method": method, "_id": number, "args": args}))
                answer = json.loads(page.recv())
                shown = [item[:40] + "..." if len(item) > 40 else item
                         for item in answer["_args"]["Data"]]
                print(f"  {method} -> Result {answer['_args']['Result']}, Data {shown}"
                      + (f", Error {answer['_args']['Error']}" if answer["_args"]["Error"] else ""))
        try:
            with connect(url.group(1), origin=Origin("https://attacker.example")):
                print("  UNEXPECTED: a foreign origin was let in")
        except InvalidStatus as refused:
            print(f"  a page from https://attacker.example is refused: HTTP "
                  f"{refused.response.status_code}")


def _swap_card(stub: pb_grpc.CardServiceStub, control: Path, image: Path) -> None:
    """Another card into the reader, as a person switches cards (seed 003 十一(二))."""
    for words in (["remove"], ["insert", str(image)]):
        subprocess.run([_bin("eport-sim"), "ctl", "--control", str(control), words[0],
                        "--slot", "0", *words[1:]], check=True, stdout=subprocess.DEVNULL)
    wanted = json.loads(image.read_text(encoding="utf-8"))["profile"]["card_id"]
    deadline = time.monotonic() + 15
    while not any(r.card_id == wanted for r in stub.ListReaders(pb.ListReadersRequest()).readers):
        if time.monotonic() > deadline:
            raise SystemExit("the other card never appeared in the reader")
        time.sleep(0.05)


def _customs_steps(stub: pb_grpc.CardServiceStub, socket: Path, workdir: Path, ca: Path,
                   cards: tuple[Path, Path]) -> None:
    """报关申报 through the reference data centre: the operator card saves, the declarant card
    declares, the receipt brings the entry number, and the declaration is printed."""
    declarant, operator = cards
    _step("eport customs: save (暂存) with the operator card, declare (申报) with the declarant "
          "card, through eport-datacenter")
    centre_socket = workdir / "run" / "datacenter.sock"
    centre = [_bin("eport-datacenter"), "serve", "--db", str(workdir / "datacenter.sqlite3"),
              "--listen", f"unix:{centre_socket}", "--trust-anchor",
              str(ca / "trust-anchors.pem"), "--review-delay", "0.5"]
    environment = {**os.environ, "EPORTD_SOCKET": str(socket), "EPORT_LANG": "en",
                   "EPORT_DATACENTER": f"unix:{centre_socket}"}

    def customs(*words: str, pin: bool = True) -> dict[str, Any]:
        """One `eport customs` command as a script runs it; its JSON result (or error)."""
        args = [_bin("eport"), "customs", *words, "--json"] + (["--pin-stdin"] if pin else [])
        done = subprocess.run(args, env=environment, input=DEMO_PIN + "\n" if pin else None,
                              capture_output=True, text=True, check=False)
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    entry = workdir / "entry.json"
    with _process(centre, workdir / "datacenter.log"):
        _wait_serving(centre_socket)
        customs("new", "--example", "-o", str(entry), pin=False)
        print(f"  a filled-in example declaration: {entry}")
        _swap_card(stub, workdir / "run" / "sim.sock", operator)
        saved = customs("save", str(entry))["result"]
        print(f"  operator card: saved as {saved['temporary_number']} ({saved['status']})")
        refused = customs("declare", saved["temporary_number"], pin=False)["error"]
        print(f"  operator card: declare refused before sending: {refused['message']['en']}")
        _swap_card(stub, workdir / "run" / "sim.sock", declarant)
        declared = customs("declare", saved["temporary_number"], "--wait", "10")["result"]
        print(f"  declarant card: declared, unified number {declared['unified_number']}; "
              f"review {declared['status']}: entry number {declared['entry_number']}, "
              f"pre-entry number {declared['pre_entry_number']}")
        for receipt in customs("receipts", "--number", declared["unified_number"])[
                "result"]["receipts"]:
            print(f"  receipt #{receipt['sequence']} {receipt['kind']} "
                  f"{receipt['message']['zh']}")
        pdf = workdir / "declaration.pdf"
        customs("print", declared["unified_number"], "-o", str(pdf))
        print(f"  printed (A4, barcode of the pre-entry number): {pdf}")
        stats = customs("stats")["result"]
        print(f"  stats for {stats['enterprise_code']}: {stats['charged_entries']} entry "
              f"charged, {stats['total_yuan']} yuan")


def _card_steps(stub: pb_grpc.CardServiceStub, workdir: Path, events: Any) -> int:
    _step("card information (read once per insertion, then cached)")
    card = stub.GetCardInfo(pb.CardSelector())
    print(f"  card {card.card_id} {pb.CardKind.Name(card.kind)} {pb.CardForm.Name(card.form)}"
          f" {pb.KeyAlgorithm.Name(card.key_algorithm)}\n  holder {card.holder_name}, "
          f"{card.enterprise_name}, customs code {card.customs_code}, credit code "
          f"{card.credit_code}\n  certificate number {card.certificate_number}")
    certificate = stub.GetCertificate(pb.CardSelector())
    print(f"  certificate {pb.CertificateState.Name(certificate.check.state)}, "
          f"{certificate.check.days_left} days left, chain "
          f"{pb.ChainState.Name(certificate.check.chain)}")
    _step("the PIN guard: a typo costs nothing, two wrong PINs, then the guard holds")
    for pin in ("1234", "11111111", "22222222", DEMO_PIN):
        try:
            stub.VerifyPin(pb.VerifyPinRequest(pin=pin))
            print("  PIN accepted")
        except grpc.RpcError as error:
            print(f"  refused: {_reason(error)}")
    print(f"  tries left: {stub.GetPinStatus(pb.CardSelector()).pin_tries_left}")
    _step("the right PIN, allowing the last attempt explicitly")
    status = stub.VerifyPin(pb.VerifyPinRequest(pin=DEMO_PIN, allow_last_attempt=True)).status
    print(f"  session open until {status.session_expires_at.ToDatetime():%H:%M:%S} UTC")
    _step("sign a declaration (SM2 with SM3) and check it with OpenSSL")
    declaration = "报关单 demo: 进口 1 项 / declaration demo".encode()
    answer = stub.Sign(pb.SignRequest(data=declaration))
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
    stub.Logout(pb.CardSelector())
    events.cancel()
    return 0 if check.returncode == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eport-demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run_demo(args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="eport-demo-") as directory:
        os.chmod(directory, 0o700)
        return run_demo(Path(directory))


if __name__ == "__main__":
    sys.exit(main())
