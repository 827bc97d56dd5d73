"""What `eport-gateway ceb-verify` prints: lines in Chinese and English for people, or one JSON
document (the shape of `eport --json`: schema_version, command, ok, result or error)."""

from __future__ import annotations

import json
from typing import Any

from eport.clients.gateway.recipes.algorithms import SM2_SM3, SM3
from eport.clients.gateway.recipes.ceb_xml import VerificationResult

SCHEMA_VERSION = 1
COMMAND = "ceb-verify"

_FORMS = {
    "chinaport-2022": ("202205 版规范的 SM2 算法 URI", "the SM2 URI of the 202205 specification"),
    "w3.org-legacy": ("旧式 w3.org 写法的 SM2 URI, 202205 版规范未列出",
                      "the older w3.org-style SM2 URI, not in the 202205 specification"),
    "w3.org": ("W3C RSA-SHA1, 202205 版规范用于 RSA 卡",
               "W3C RSA-SHA1, kept by the 202205 specification for RSA cards"),
}
_ENCODINGS = {
    "pkcs1": ("PKCS#1 v1.5", "PKCS#1 v1.5"),
    "r||s": ("r||s, 64 字节", "r||s, 64 bytes"),
    "der": ("DER 编码的 (r, s); 电子口岸客户端控件写 r||s",
            "DER-encoded (r, s); the E-port client writes r||s"),
}


def details(result: VerificationResult) -> dict[str, Any]:
    """The facts a program checks (the certificate itself is left out: it is in the file)."""
    return {
        "valid": result.valid,
        "certificate_number": result.certificate_number,
        "certificate_serial": result.certificate_serial,
        "key_type": result.key_type,
        "signature_method": result.signature_method,
        "signature_method_form": result.signature_method_form,
        "digest_method": result.digest_method,
        "signature_encoding": result.signature_encoding,
        "digest_ok": result.digest_ok,
        "signature_ok": result.signature_ok,
        "certificate_source": result.certificate_source,
        "document_certificate_matches": result.document_certificate_matches,
    }


def _envelope(ok: bool, body: dict[str, Any]) -> str:
    document = {"schema_version": SCHEMA_VERSION, "command": COMMAND, "ok": ok,
                "result" if ok else "error": body}
    return json.dumps(document, ensure_ascii=False)


def json_result(result: VerificationResult) -> str:
    if result.valid:
        return _envelope(True, details(result))
    return _envelope(False, {
        "code": "SIGNATURE_INVALID", "exit_code": 1,
        "message": result.reason.as_json(),
        "remedy": result.remedy.as_json(),
        **details(result)})


def human_result(result: VerificationResult) -> str:
    if result.valid:
        lines = ["签名有效 / signature valid"]
    else:
        lines = ["签名无效 / signature NOT valid", f"原因: {result.reason.zh}",
                 f"Reason: {result.reason.en}"]
        if result.remedy.zh or result.remedy.en:
            lines += [f"解决办法: {result.remedy.zh}", f"Remedy: {result.remedy.en}"]
    lines.append(f"证书号 / certificate number (KeyName): {result.certificate_number or '-'}")
    if result.certificate_serial:
        lines.append(f"证书序列号 / certificate serial: {result.certificate_serial}")
    if result.signature_method is not None:
        line = f"签名算法 / signature method: {result.signature_method or '(empty)'}"
        if result.signature_method_form:
            zh, en = _FORMS[result.signature_method_form]
            line += f" ({zh} / {en})"
        lines.append(line)
    if result.digest_method is not None:
        lines.append(f"摘要算法 / digest method: {result.digest_method or '(empty)'}")
    if result.signature_encoding:
        zh, en = _ENCODINGS[result.signature_encoding]
        lines.append(f"签名值编码 / signature value encoding: {zh} / {en}")
    if result.signature_method_form == "w3.org-legacy":
        lines.append(
            f"注意: 此报文使用旧式 SM2 算法 URI; 202205 版规范为 {SM2_SM3} (摘要 {SM3})。"
            "若数据中心不接受, 请用 eport-gateway ceb-sign --resign 重新签名\n"
            f"note: this message uses the older SM2 algorithm URI; the 202205 specification's "
            f"is {SM2_SM3} (digest {SM3}). If the data centre refuses it, sign it again with "
            "eport-gateway ceb-sign --resign")
    if result.document_certificate_matches is False:
        lines.append("注意: 报文内嵌的证书与 --cert 不同 / note: the embedded certificate differs "
                     "from --cert")
    return "\n".join(lines)
