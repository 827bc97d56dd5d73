"""The support bundle: one .tar.gz a user can mail to the support desk.

It holds the report, versions, eportd's recent log and the PC/SC state, and never a PIN, a
PUK, key material or a whole certificate: everything written passes through `scrub`, card
holders' names are masked, and certificates are described (number, subject, validity), never
included. PINs never reach eportd's log to begin with; the scrub is the second line.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from eport.clients.doctor.facts import Facts
from eport.clients.doctor.host import Host
from eport.clients.doctor.report_text import report_text
from eport.clients.doctor.runner import Report
from eport.clients.kit.views import card_view, pin_view, reader_view
from eport.protos.v1 import eportd_pb2 as pb

LOG_LINES = 2000
PACKAGES = ("pcscd", "libccid", "libpcsclite1", "vsmartcard-vpcd", "opensc", "libusb-1.0-0")

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
# A secret's name: pin, puk, user_pin, pin_code, new-pin (any case), newPin, oldPin, userPIN
# (camel case), password, passwd, pwd, passcode, secret.
_SECRET_KEY = (r"(?:[A-Za-z0-9]*[_-])?(?i:pin|puk)(?:[_-]?(?i:code|number|no|value))?"
               r"|[A-Za-z0-9]*[a-z0-9](?:Pin|PIN|Puk|PUK)(?:Code)?"
               r"|(?i:passw(?:or)?d|pwd|passcode|secret)")
# Its value: "…" or '…' (backslash escapes allowed), \"…\" (JSON inside a JSON string), or a
# bare word up to a separator. An object or list ("pin": {"tries_left": 3}) is not a secret.
_SECRET_VALUE = (r'\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\]|\\.)*"|' r"'(?:[^'\\]|\\.)*'"
                 r"""|[^\s,;&{}\[\]()"']+""")
_SECRET_ASSIGNMENT = re.compile(
    rf"(?<![A-Za-z0-9_])(?P<key>{_SECRET_KEY})(?P<separator>\\?[\"']?\s*[=:]\s*)"
    rf"(?P<value>{_SECRET_VALUE})")
_LONG_HEX = re.compile(r"\b(?:[0-9A-Fa-f]{2}[ :]?){32,}\b")
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{64,}={0,2}")


def scrub(text: str) -> str:
    """Remove what could be a secret or key material from free text (logs, command output)."""
    text = _PEM.sub(lambda m: f"[{m.group(1)} removed]", text)
    text = _SECRET_ASSIGNMENT.sub(_redact_value, text)
    text = _LONG_HEX.sub("[long hex removed]", text)
    return _LONG_BASE64.sub("[long base64 removed]", text)


def _redact_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = next((q for q in ('\\"', '"', "'") if value.startswith(q)), "")
    return f"{match.group('key')}{match.group('separator')}{quote}[redacted]{quote}"


def mask_name(name: str) -> str:
    """张三 → 张*, Zhang San → Z********: enough for support staff to match a caller."""
    return name[:1] + "*" * max(len(name) - 1, 0) if name else ""


def _card_summary(facts: Facts) -> list[dict[str, Any]]:
    summaries = []
    for card in facts.cards:
        entry: dict[str, Any] = {"reader": card.reader, "card_id": card.card_id,
                                 "errors": {k: e.code for k, e in card.errors.items()}}
        if card.info is not None:
            view = card_view(card.info)
            view["holder_name"] = mask_name(view["holder_name"])
            view["credit_code"] = view["credit_code"][:6] + "…" if view["credit_code"] else ""
            view.pop("atr", None)
            entry["card"] = view
        if card.pins is not None:
            entry["pin"] = pin_view(card.pins)
        if card.certificate is not None:
            check = card.certificate.check
            entry["certificate"] = {
                "certificate_number": card.certificate.certificate_number,
                "state": pb.CertificateState.Name(check.state), "days_left": check.days_left,
                "not_before": check.not_before.ToJsonString(),
                "not_after": check.not_after.ToJsonString(),
                "chain": pb.ChainState.Name(check.chain),
                "issuer": check.issuer, "serial": check.serial_hex}
        summaries.append(entry)
    return summaries


def _versions(host: Host, facts: Facts) -> str:
    lines = [f"eport-middleware {_version()}", f"python {sys.version.split()[0]}",
             f"platform {platform.platform()}",
             f"eportd {facts.info.version if facts.info else '(not reachable)'}",
             f"pcscd {facts.pcscd_version or '(not installed)'}"]
    packages = host.run("dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *PACKAGES)
    lines.append(packages or "(dpkg-query not available)")
    os_release = host.read_text("/etc/os-release") or ""
    lines.extend(line for line in os_release.splitlines() if line.startswith("PRETTY_NAME"))
    return "\n".join(lines) + "\n"


def _version() -> str:
    try:
        return metadata.version("eport-middleware")
    except metadata.PackageNotFoundError:
        return "unknown"


def daemon_log(host: Host, log_file: Path | None) -> str:
    if log_file is not None:
        try:
            lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as problem:
            return f"(cannot read {log_file}: {problem.strerror})\n"
        return "\n".join(lines[-LOG_LINES:]) + "\n"
    for scope in (["--user"], []):
        text = host.run("journalctl", *scope, "-u", "eportd.service", "-n", str(LOG_LINES),
                        "--no-pager", "-q")
        if text and "No entries" not in text:
            return text + "\n"
    return "(no eportd log found: pass --daemon-log FILE if eportd logs to a file)\n"


def _pcsc_state(host: Host, facts: Facts) -> str:
    state = {
        "pcscd": {"path": facts.pcscd_path, "version": facts.pcscd_version,
                  "pids": facts.pcscd_pids, "socket_exists": facts.pcscd_socket_exists,
                  "socket_unit": facts.pcscd_socket_unit, "polkit_policy": facts.polkit_policy},
        "drivers": {"ccid": facts.ccid_driver, "vpcd": facts.vpcd_driver,
                    "vpcd_configured": facts.vpcd_configured},
        "udev_rules": facts.udev_rules,
        "daemon_pcsc_error": facts.info.pcsc_error if facts.info else None,
        "readers": [reader_view(r) for r in facts.readers.readers] if facts.readers else None,
        "usb_devices": [{"vendor_id": f"{d.vendor_id:04x}", "product_id": f"{d.product_id:04x}",
                         "manufacturer": d.manufacturer, "product": d.product,
                         "accessible": d.accessible} for d in facts.usb.devices]
        if facts.usb else None,
    }
    text = json.dumps(state, ensure_ascii=False, indent=2) + "\n"
    if facts.pcscd_journal:
        text += "\n# journalctl -u pcscd.service (last 200 lines)\n" + facts.pcscd_journal + "\n"
    return text


def build_bundle(path: Path, report: Report, facts: Facts, host: Host,
                 log_file: Path | None) -> list[str]:
    """Write the bundle atomically; return the names of its members."""
    members = {
        "report.txt": report_text(report, "zh") + "\n" + report_text(report, "en"),
        "report.json": json.dumps(report.as_json(), ensure_ascii=False, indent=2) + "\n",
        "cards.json": json.dumps(_card_summary(facts), ensure_ascii=False, indent=2) + "\n",
        "versions.txt": _versions(host, facts),
        "pcsc-state.txt": _pcsc_state(host, facts),
        "eportd.log": daemon_log(host, log_file),
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as sink, tarfile.open(fileobj=sink, mode="w:gz") as tar:
            for name, content in members.items():
                data = scrub(content).encode("utf-8")
                info = tarfile.TarInfo(f"eport-doctor/{name}")
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
                tar.addfile(info, io.BytesIO(data))
        os.chmod(temporary, 0o600)  # it names the user's enterprise and cards: theirs only
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return sorted(members)
