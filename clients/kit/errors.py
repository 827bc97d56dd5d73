"""Everything that can go wrong in `eport`, as one exception type the funnel in main() prints.

A daemon error keeps the daemon's own reason, texts and tries left (ErrorDetail); errors the
CLI finds itself (no daemon, unreadable file, declined last try) get texts of their own here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from eport.clients.kit.exit_codes import ExitCode, exit_code_for_reason
from eport.clients.kit.unary_transport import UnaryCallError
from eport.common.funnel import ConsoleFailure
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb


class KitCode(StrEnum):
    """The codes of what the client kit finds wrong itself (eportd's own are its reasons)."""

    DAEMON_UNAVAILABLE = "DAEMON_UNAVAILABLE"
    DAEMON_PERMISSION_DENIED = "DAEMON_PERMISSION_DENIED"
    DAEMON_TIMEOUT = "DAEMON_TIMEOUT"
    DAEMON_ERROR = "DAEMON_ERROR"
    FILE_ERROR = "FILE_ERROR"
    USAGE = "USAGE"


@dataclass
class CliError(ConsoleFailure):
    """A failure the CLI shows: code (the daemon's reason name, or a KitCode), texts, and one
    of `eport`'s documented exit codes."""

    exit_code: ExitCode


def from_error_detail(detail: pb.ErrorDetail) -> CliError:
    reason = pb.ErrorReason.Name(detail.reason)
    extra: dict[str, Any] = {
        "tries_left": detail.tries_left if detail.HasField("tries_left") else None,
        "status_word": (f"{detail.status_word:04X}" if detail.HasField("status_word")
                        else None),
        "reader": detail.reader or None,
        "card_id": detail.card_id or None,
    }
    return CliError(reason, Bilingual(detail.message_zh, detail.message_en),
                    Bilingual(detail.remedy_zh, detail.remedy_en),
                    exit_code_for_reason(reason), extra)


# The trailer where gRPC's rich error model carries a google.rpc.Status (eportd's ErrorDetail
# is packed in its details).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def _trailing_metadata(error: BaseException) -> tuple[tuple[str, str | bytes], ...]:
    if isinstance(error, UnaryCallError):
        return error.trailing
    read = getattr(error, "trailing_metadata", None)  # grpcio's RpcError (a grpc.Call)
    return tuple(read() or ()) if callable(read) else ()


def status_name(error: BaseException) -> str | None:
    """The gRPC status by name (UNAVAILABLE, …) of a failed call, grpcio's or the kit's own."""
    if isinstance(error, UnaryCallError):
        return error.status.name
    read = getattr(error, "code", None)
    code = read() if callable(read) else None
    return getattr(code, "name", None)


def status_details(error: BaseException) -> str:
    if isinstance(error, UnaryCallError):
        return error.details
    read = getattr(error, "details", None)
    return str(read() if callable(read) else error)


def error_detail_of(error: BaseException) -> pb.ErrorDetail | None:
    """eportd's ErrorDetail of a failed call (grpcio's RpcError or UnaryCallError), if any."""
    for key, value in _trailing_metadata(error):
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:  # a malformed trailer: treat as no detail
            return None
        for packed in status.details:
            detail = pb.ErrorDetail()
            if packed.Unpack(detail):
                return detail
    return None


def daemon_not_running(socket: Path) -> CliError:
    return CliError(
        KitCode.DAEMON_UNAVAILABLE,
        Bilingual(f"无法连接 eportd (套接字 {socket} 不存在或无人应答)",
                  f"Cannot reach eportd (no daemon answers on {socket})"),
        Bilingual("请启动 eportd: systemctl --user start eportd.socket (或系统服务: sudo "
                  "systemctl start eportd.socket); 如果 eportd 使用其他套接字, 用 --socket 或 "
                  "EPORTD_SOCKET 指定; 运行 eport doctor 查看详情",
                  "start eportd (systemctl --user start eportd.socket, or the system service: "
                  "sudo systemctl start eportd.socket); if it serves another socket, pass it "
                  "with --socket or EPORTD_SOCKET; `eport doctor` tells more"),
        ExitCode.DAEMON_UNAVAILABLE, {"socket": str(socket)})


def daemon_permission_denied(socket: Path) -> CliError:
    return CliError(
        KitCode.DAEMON_PERMISSION_DENIED,
        Bilingual(f"无权使用 eportd 的套接字 {socket}",
                  f"No permission to use eportd's socket {socket}"),
        Bilingual("系统服务只允许 root 和 eport 组成员使用: sudo usermod -aG eport $USER, "
                  "然后重新登录; 或运行您自己的 eportd (systemctl --user start eportd.socket)",
                  "the system daemon serves root and members of the group eport: sudo usermod "
                  "-aG eport $USER, then log in again; or run your own eportd (systemctl "
                  "--user start eportd.socket)"),
        ExitCode.DAEMON_UNAVAILABLE, {"socket": str(socket)})


def from_rpc_error(error: BaseException, socket: Path) -> CliError:
    detail = error_detail_of(error)
    if detail is not None:
        return from_error_detail(detail)
    code, text = status_name(error), status_details(error)
    if code == "UNAVAILABLE":
        if "ermission denied" in (text or ""):
            return daemon_permission_denied(socket)
        return daemon_not_running(socket)
    if code == "DEADLINE_EXCEEDED":
        return CliError(
            KitCode.DAEMON_TIMEOUT,
            Bilingual("eportd 未在规定时间内应答", "eportd did not answer in time"),
            Bilingual("卡片操作可能仍在排队; 稍后重试, 或用 --timeout 加长等待时间",
                      "the card may be busy with other requests; retry later, or allow more "
                      "time with --timeout"),
            ExitCode.DAEMON_UNAVAILABLE)
    name = code or "UNKNOWN"
    return CliError(
        KitCode.DAEMON_ERROR,
        Bilingual(f"eportd 返回了意外的错误 ({name}): {text}",
                  f"eportd returned an unexpected error ({name}): {text}"),
        Bilingual("请用 --debug 重试并将输出报告给维护者",
                  "retry with --debug and report the output to the maintainers"),
        ExitCode.UNEXPECTED)


def file_error(path: str, problem: OSError, writing: bool = False) -> CliError:
    reason = problem.strerror or type(problem).__name__
    verb_zh, verb_en = ("写入", "write") if writing else ("读取", "read")
    return CliError(
        KitCode.FILE_ERROR,
        Bilingual(f"无法{verb_zh}文件 {path}: {reason}", f"Cannot {verb_en} {path}: {reason}"),
        Bilingual("请检查路径和权限", "check the path and its permissions"),
        ExitCode.INPUT_ERROR, {"path": path})


def usage_error(message: Bilingual, remedy: Bilingual) -> CliError:
    return CliError(KitCode.USAGE, message, remedy, ExitCode.USAGE)
