"""What goes wrong between `eport customs` and the data centre, as the CLI's one error type.

The data centre's DataCenterErrorDetail keeps its reason, its texts and, for a refused
document, every field problem; a centre that does not answer gets a text of our own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc_status import rpc_status

from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.common.customs.document import Problem
from eport.common.text import Bilingual
from eport.protos.v1 import datacenter_pb2 as dc

REASON_EXIT_CODES: dict[dc.DataCenterReason.ValueType, ExitCode] = {
    dc.BAD_REQUEST: ExitCode.REQUEST_REFUSED,
    dc.SIGNATURE_INVALID: ExitCode.DATACENTER_REFUSED,
    dc.CERT_UNTRUSTED: ExitCode.CERTIFICATE,
    dc.CERT_EXPIRED: ExitCode.CERTIFICATE,
    dc.CERT_NOT_YET_VALID: ExitCode.CERTIFICATE,
    dc.NOT_EPORT_CARD: ExitCode.WRONG_CARD,
    dc.REPLAY: ExitCode.DATACENTER_REFUSED,
    dc.STALE_REQUEST: ExitCode.DATACENTER_REFUSED,
    dc.WRONG_CARD_KIND: ExitCode.WRONG_CARD,
    dc.VALIDATION_FAILED: ExitCode.VALIDATION_FAILED,
    dc.DOCUMENT_NOT_FOUND: ExitCode.DOCUMENT_STATE,
    dc.WRONG_STATE: ExitCode.DOCUMENT_STATE,
    dc.NOT_AUTHORIZED: ExitCode.NOT_AUTHORIZED,
    dc.UNKNOWN_ENTERPRISE: ExitCode.DOCUMENT_STATE,
    dc.GRANT_NOT_FOUND: ExitCode.DOCUMENT_STATE,
    # The card's certificate as a CA would judge it (revoked, a CA, the wrong usage...).
    dc.CERT_REVOKED: ExitCode.CERTIFICATE,
    dc.CERT_IS_CA: ExitCode.CERTIFICATE,
    dc.CERT_KEY_USAGE: ExitCode.CERTIFICATE,
    dc.ISSUER_NOT_CA: ExitCode.CERTIFICATE,
    dc.ISSUER_NOT_VALID: ExitCode.CERTIFICATE,
    dc.PATH_TOO_LONG: ExitCode.CERTIFICATE,
    dc.WEAK_ALGORITHM: ExitCode.CERTIFICATE,
    dc.REVOCATION_UNKNOWN: ExitCode.DATACENTER_REFUSED,
}


def problem_text(problem: Problem | dc.FieldProblem) -> Bilingual:
    """A problem's message, whether checked here (a Problem) or sent by the data centre (the
    protobuf FieldProblem keeps its two flat fields)."""
    if isinstance(problem, Problem):
        return problem.message
    return Bilingual(problem.message_zh, problem.message_en)


def problem_view(problem: Problem | dc.FieldProblem) -> dict[str, Any]:
    return {"path": problem.path, "code": problem.code, "section": problem.section,
            "message": problem_text(problem).as_json()}


def validation_failed(problems: Iterable[Problem | dc.FieldProblem], where: Bilingual, *,
                      rules: str = "docs/customs-document.md") -> CliError:
    """Every bad or missing field at once, in the error's `problems` (JSON) and its text."""
    listed = list(problems)
    # The messages name their field already ("运输方式(transport_mode) …", "items[0].currency: …").
    # One per line: a person reads down the list and corrects each.
    texts = [problem_text(p) for p in listed]
    zh = "".join(f"\n  - {text.zh}" for text in texts)
    en = "".join(f"\n  - {text.en}" for text in texts)
    return CliError(
        "VALIDATION_FAILED",
        Bilingual(f"{where.zh}有 {len(listed)} 处错误:{zh}",
                  f"{where.en} has {len(listed)} problem(s):{en}"),
        Bilingual(f"请按提示逐项修改后重试 (规则见 {rules})",
                  f"correct each field as described and try again (the rules: {rules})"),
        ExitCode.VALIDATION_FAILED, {"problems": [problem_view(p) for p in listed]})


def detail_of(error: grpc.RpcError) -> dc.DataCenterErrorDetail | None:
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        return None
    if status is None:
        return None
    for packed in status.details:
        detail = dc.DataCenterErrorDetail()
        if packed.Unpack(detail):
            return detail
    return None


def from_datacenter_error(error: grpc.RpcError, address: str) -> CliError:
    detail = detail_of(error)
    if detail is not None:
        reason = dc.DataCenterReason.Name(detail.reason)
        extra: dict[str, Any] = {}
        if detail.problems:
            extra["problems"] = [problem_view(p) for p in detail.problems]
        if detail.required_card_kind:
            extra["required_card_kind"] = detail.required_card_kind
        message = Bilingual(detail.message_zh, detail.message_en)
        if detail.problems:
            listed = validation_failed(detail.problems, Bilingual("单据", "The document"))
            message = listed.message
        return CliError(reason, message, Bilingual(detail.remedy_zh, detail.remedy_en),
                        REASON_EXIT_CODES.get(detail.reason, ExitCode.UNEXPECTED), extra)
    code = error.code() if isinstance(error, grpc.Call) else None
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return datacenter_unavailable(address)
    text = error.details() if isinstance(error, grpc.Call) else str(error)
    name = code.name if code is not None else "UNKNOWN"
    return CliError(
        "DATACENTER_ERROR",
        Bilingual(f"数据中心返回了意外的错误 ({name}): {text}",
                  f"The data centre returned an unexpected error ({name}): {text}"),
        Bilingual("请用 --debug 重试并将输出报告给维护者",
                  "retry with --debug and report the output to the maintainers"),
        ExitCode.UNEXPECTED)


def datacenter_unavailable(address: str) -> CliError:
    return CliError(
        "DATACENTER_UNAVAILABLE",
        Bilingual(f"无法连接数据中心 ({address})", f"Cannot reach the data centre ({address})"),
        Bilingual("请检查网络和数据中心地址 (--datacenter 或 EPORT_DATACENTER); 自建的数据中心"
                  "请用 eport-datacenter serve 启动; 已暂存的数据不会丢失, 稍后重试即可",
                  "check the network and the data centre's address (--datacenter or "
                  "EPORT_DATACENTER); a self-hosted one starts with `eport-datacenter serve`; "
                  "nothing saved is lost, try again later"),
        ExitCode.DATACENTER_UNAVAILABLE, {"datacenter": address})
