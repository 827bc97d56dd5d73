"""The eport-gateway part of `eport-demo`: how a user on the Single Window site sets it up
(`eport-gateway tls install`, then `serve`), and a page's calls over wss and over ws.

`tls install` writes to the user's browser certificate database; the demo gives it a HOME of
its own inside the work directory, so the person running the demo keeps theirs untouched.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from eport.clients.demo_support import DEMO_PIN, bin_path, running_process, step

SINGLE_WINDOW_HOST = "wss.singlewindow.cn"
PAGE_ORIGIN = Origin("https://www.singlewindow.cn")
_LISTENING = re.compile(r"listening on (?:(wss://\S+) and )?(ws://\S+)")


def gateway_steps(socket: Path, workdir: Path, reader: str | None = None) -> None:
    """tls install and status, serve on wss and ws, a page's calls on each."""
    home = workdir / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    environment = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    step(f"eport-gateway on the Single Window site: wss://{SINGLE_WINDOW_HOST}:61231 "
         "(tls install, then serve)")
    print(f"  (HOME={home}: the demo leaves your own browser certificate database alone)")
    _show("eport-gateway tls install", [bin_path("eport-gateway"), "tls", "install"],
          environment)
    _show("eport-gateway tls install (again: changes nothing)",
          [bin_path("eport-gateway"), "tls", "install"], environment)
    serve = [bin_path("eport-gateway"), "serve", "--port", "0", "--tls-port", "0", "--socket",
             str(socket)]
    if reader:
        serve += ["--reader", reader]
    log = workdir / "gateway.log"
    with running_process(serve, log, env=environment):
        wss_url, ws_url = _wait_listening(log)
        print(f"  listening on {wss_url} and {ws_url}")
        authority = ssl.create_default_context(
            cafile=str(home / ".config" / "eport" / "gateway-tls" / "ca.pem"))
        with connect(wss_url, origin=PAGE_ORIGIN, ssl=authority,
                     server_hostname=SINGLE_WINDOW_HOST) as page:
            print(f"  wss: the certificate of {SINGLE_WINDOW_HOST} checks against the local CA")
            _page_calls(page, [
                ("cus-sec_SpcGetCardID", {}),
                ("cus-sec_SpcVerifyPIN", {"passwd": DEMO_PIN}),
                ("cus-sec_SpcRSAEncrypt", {"inData": "加密证书 demo / envelope demo"}),
            ], keep=True)
        with connect(ws_url, origin=PAGE_ORIGIN) as page:
            print("  ws (programs and plain-http pages):")
            _page_calls(page, [
                ("cus-sec_SpcGetCertNo", {}),
                ("cus-sec_SpcSignDataAsPEM", {"inData": "<ceb:CEB311Message/>"}),
                ("cus-sec_SpcClearEnv", {}),
                ("cus-sec_SpcSignDataAsPEM", {"inData": "<ceb:CEB311Message/>"}),
            ])
        try:
            with connect(ws_url, origin=Origin("https://attacker.example")):
                print("  UNEXPECTED: a foreign origin was let in")
        except InvalidStatus as refused:
            print(f"  a page from https://attacker.example is refused: HTTP "
                  f"{refused.response.status_code}")


def _show(title: str, command: list[str], environment: dict[str, str]) -> None:
    print(f"  $ {title}")
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        print(f"    {line}")


def _wait_listening(log: Path, timeout: float = 15) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        found = _LISTENING.search(log.read_text(encoding="utf-8", errors="replace"))
        if found and found.group(1):
            return found.group(1), found.group(2)
        if time.monotonic() > deadline:
            raise SystemExit("eport-gateway 未能在 wss 和 ws 上监听 / eport-gateway did not "
                             f"listen on wss and ws:\n{log.read_text()}")
        time.sleep(0.05)


def _page_calls(page: ClientConnection, calls: list[tuple[str, dict[str, Any]]],
                keep: bool = False) -> None:
    print(f"  greeting {page.recv(decode=True)!s}")
    encrypted = ""
    for number, (method, args) in enumerate(calls, 1):
        answer = _call(page, number, method, args)
        if method.endswith("SpcRSAEncrypt") and answer["Result"]:
            encrypted = answer["Data"][0]
    if keep and encrypted:
        # The page decrypts what it encrypted to the card's envelope certificate.
        answer = _call(page, len(calls) + 1, "cus-sec_SpcRSADecrypt", {"inData": encrypted})
        if answer["Result"]:
            text = _base64_text(answer["Data"][0])
            print(f"    decrypted on the card: {text}")


def _call(page: ClientConnection, number: int, method: str, args: dict[str, Any]
          ) -> dict[str, Any]:
    page.send(json.dumps({"_method": method, "_id": number, "args": args}))
    answer: dict[str, Any] = json.loads(page.recv())["_args"]
    shown = [_short(item) for item in answer["Data"]]
    print(f"  {method} -> Result {answer['Result']}, Data {shown}"
          + (f", Error {answer['Error']}" if answer["Error"] else ""))
    return answer


def _short(item: Any) -> Any:
    return item[:40] + "..." if isinstance(item, str) and len(item) > 40 else item


def _base64_text(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", "replace")
