"""The gateway's pure layers: the envelope, block transfer, error mapping, origins, loopback.
The whole gateway against the real eportd and cards is tests/pcsc/test_gateway.py."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2

from eport.clients.gateway import errors
from eport.clients.gateway.blocks import (
    HEADER_LENGTH,
    BlockAssembler,
    check_code,
    is_block,
    js_length,
)
from eport.clients.gateway.command import is_loopback
from eport.clients.gateway.methods import _digest_arg
from eport.clients.gateway.protocol import (
    GREETING,
    BadRequest,
    error_reply,
    parse_request,
    reply,
    text_arg,
)
from eport.clients.gateway.server import SINGLE_WINDOW_ORIGINS, GatewayConfig, origin_allowed
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

# ---- envelope ----


def test_greeting_is_the_official_clients() -> None:
    assert json.loads(GREETING) == {"_id": 0, "_method": "open", "_status": "00"}


def test_reply_echoes_id_and_method_with_result_data_error() -> None:
    answer = json.loads(reply("a-7", "cus-sec_SpcGetCardID", ["123"]))
    assert answer == {"_id": "a-7", "_method": "cus-sec_SpcGetCardID", "_status": "00",
                      "_args": {"Result": True, "Data": ["123"], "Error": []}}
    failed = json.loads(error_reply(5, "cus-sec_SpcSignDataAsPEM",
                                    errors.GatewayError("51590", Bilingual("卡片无效",
                                                                           "invalid card"))))
    assert failed["_args"] == {"Result": False, "Data": [],
                               "Error": ["卡片无效", "Err:Custom51590", "invalid card"]}


@pytest.mark.parametrize(("frame", "request_id", "method"), [
    ("{bad json", None, ""),
    ("[1, 2]", None, ""),
    ('"text"', None, ""),
    ('{"_id": 3}', 3, ""),
    ('{"_id": 4, "_method": 12}', 4, ""),
    ('{"_id": 5, "_method": "cus-sec_SpcGetCardID", "args": [1]}', 5, "cus-sec_SpcGetCardID"),
    ('{"_id": true, "_method": ""}', None, ""),
])
def test_bad_frames_are_refused_with_what_could_be_read(frame: str, request_id: object,
                                                         method: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request(frame)
    assert refused.value.request_id == request_id
    assert refused.value.method == method
    assert refused.value.error.code == errors.BAD_ARGUMENTS


def test_a_request_without_args_has_empty_args() -> None:
    request = parse_request('{"_method": "cus-sec_SpcGetCertNo", "_id": 9}')
    assert (request.request_id, request.method, request.args) == (9, "cus-sec_SpcGetCertNo", {})


def test_argument_types_are_checked_by_name() -> None:
    with pytest.raises(errors.GatewayError, match="inData must be a string"):
        text_arg({"inData": 12}, "inData")
    with pytest.raises(errors.GatewayError, match="szInfo is missing"):
        text_arg({}, "szInfo", "inData")
    assert text_arg({"inData": "x"}, "szInfo", "inData") == "x"
    assert text_arg({}, "passwd", required=False) is None


# ---- block transfer ----


def test_check_code_is_the_libraries_crc() -> None:
    assert check_code("123456789") == "374B"  # CRC-16/MODBUS 0x4B37, bytes swapped
    assert check_code("") == "FFFF"
    # Only the low byte of each UTF-16 unit counts, as in the JavaScript library.
    assert check_code("\u4e2d") == check_code("\u002d")


def blocks_of(text: str, size: int, guid: str | None = None) -> list[str]:
    guid = guid or str(uuid.uuid4())
    chunks = [text[i:i + size] for i in range(0, len(text), size)]
    frames = []
    for number, chunk in enumerate(chunks):
        header = (f"BLOCKTXT{check_code(text)}{check_code(chunk)}{js_length(text):016d}"
                  f"{js_length(chunk):08d}{len(chunks):04d}{guid}{number:04d}")
        frames.append(header.ljust(HEADER_LENGTH, "0") + chunk)
    return frames


def test_blocks_reassemble_into_the_request() -> None:
    request = json.dumps({"_method": "cus-sec_SpcSignDataAsPEM", "_id": 77,
                          "args": {"inData": "报关单" * 50_000}}, ensure_ascii=False)
    frames = blocks_of(request, 40_000)
    assembler = BlockAssembler(max_length=1_000_000)
    answers = [assembler.receive(frame) for frame in frames]
    assert all(is_block(frame) for frame in frames)
    assert [a.next_block for a in answers[:-1]] == list(range(1, len(frames)))
    assert not any(a.finish for a in answers[:-1])
    assert answers[-1].finish and answers[-1].ok and answers[-1].assembled == request


def test_a_damaged_block_is_asked_for_again_then_accepted() -> None:
    request = json.dumps({"_method": "m", "_id": 1, "args": {"inData": "x" * 3000}})
    frames = blocks_of(request, 1000)
    assembler = BlockAssembler(max_length=100_000)
    assembler.receive(frames[0])
    damaged = frames[1][:-1] + ("y" if frames[1][-1] != "y" else "z")
    again = assembler.receive(damaged)
    assert (again.ok, again.next_block, again.finish) == (False, 1, False)
    assert again.error is not None and again.error.code == errors.BAD_ARGUMENTS
    for frame in frames[1:]:
        last = assembler.receive(frame)
    assert last.assembled == request


def test_interleaved_transfers_do_not_mix() -> None:
    first = json.dumps({"_id": 1, "_method": "m", "args": {"inData": "a" * 5000}})
    second = json.dumps({"_id": 2, "_method": "m", "args": {"inData": "b" * 5000}})
    a, b = blocks_of(first, 2000), blocks_of(second, 2000)
    assembler = BlockAssembler(max_length=100_000)
    results = [assembler.receive(frame) for pair in zip(a, b, strict=True) for frame in pair]
    assert [r.assembled for r in results if r.assembled] == [first, second]


def test_a_transfer_above_the_limit_is_refused_before_it_is_stored() -> None:
    request = json.dumps({"_id": 1, "_method": "m", "args": {"inData": "a" * 5000}})
    answer = BlockAssembler(max_length=1000).receive(blocks_of(request, 2000)[0])
    assert (answer.ok, answer.finish, answer.assembled) == (False, True, None)
    assert answer.error is not None and "above the limit" in answer.error.text.en


def test_a_malformed_header_is_refused() -> None:
    answer = BlockAssembler(max_length=1000).receive("BLOCKTXT" + "Z" * 200)
    assert (answer.ok, answer.finish) == (False, True)


# ---- eportd's errors in the E-port client's terms ----


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, detail: pb.ErrorDetail | None) -> None:
        self._code = code
        self._metadata: tuple[tuple[str, bytes], ...] = ()
        if detail is not None:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status = status_pb2.Status(code=code.value[0], message="x", details=[packed])
            self._metadata = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "x"

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._metadata


@pytest.mark.parametrize(("reason", "code"), [
    (pb.NO_CARD, "51590"), (pb.CARD_REMOVED, "51590"), (pb.UNSUPPORTED_CARD, "51590"),
    (pb.NO_READER, "50200"), (pb.SERVICE_NOT_RUNNING, "50200"), (pb.CARD_TIMEOUT, "50070"),
    (pb.SHARING_VIOLATION, "50070"), (pb.INVALID_ARGUMENT, "51500"),
    (pb.PIN_BLOCKED, "0A000025"), (pb.PIN_FORMAT, "0A000026"),
    (pb.NOT_AUTHENTICATED, "0A00002D"), (pb.CERT_EXPIRED, "51610"),
    (pb.CERT_NOT_YET_VALID, "51611"), (pb.CERT_UNTRUSTED, "51612"),
])
def test_reasons_map_to_the_documented_codes(reason: int, code: str) -> None:
    detail = pb.ErrorDetail(reason=reason, message_zh="说明", message_en="explanation",  # type: ignore[arg-type]
                            remedy_zh="办法", remedy_en="remedy")
    error = errors.from_daemon_error(FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, detail))
    assert error.code == code
    zh, code_text, en = error.error_array()
    assert code_text == f"Err:Custom{code}"
    assert "办法" in zh or code == "0A00002D"
    assert en and zh


def test_wrong_pin_says_how_many_tries_are_left() -> None:
    detail = pb.ErrorDetail(reason=pb.PIN_INCORRECT, tries_left=2)
    error = errors.from_daemon_error(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, detail))
    assert (error.code, error.text.zh) == ("0A000024", "口令不正确,还可以重试2次")


def test_an_unreachable_daemon_is_a_reader_open_failure() -> None:
    error = errors.from_daemon_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, None))
    assert error.code == "50200" and "eportd" in error.text.en


# ---- digests, origins, loopback ----


def test_digests_are_taken_as_hex_or_base64_of_the_cards_length() -> None:
    sha1 = bytes(range(20))
    assert _digest_arg(sha1.hex(), pb.RSA_2048) == sha1
    assert _digest_arg(sha1.hex().upper(), pb.RSA_1024) == sha1
    assert _digest_arg(base64.b64encode(bytes(32)).decode(), pb.SM2) == bytes(32)
    with pytest.raises(errors.GatewayError, match="must be 20 bytes"):
        _digest_arg(bytes(32).hex(), pb.RSA_2048)
    with pytest.raises(errors.GatewayError, match="not base64"):
        _digest_arg("@@@", pb.SM2)


def test_only_allowed_origins_may_connect() -> None:
    config = GatewayConfig(eportd_socket=Path("/nonexistent"))
    assert all(origin_allowed(config, origin) for origin in SINGLE_WINDOW_ORIGINS)
    assert origin_allowed(config, "https://www.singlewindow.cn/")
    assert not origin_allowed(config, "https://evil.example")
    assert not origin_allowed(config, "https://www.singlewindow.cn.evil.example")
    assert origin_allowed(config, None)
    strict = GatewayConfig(eportd_socket=config.eportd_socket, allow_missing_origin=False,
                           allowed_origins=("http://erp.local:8080",))
    assert not origin_allowed(strict, None)
    assert origin_allowed(strict, "http://erp.local:8080")
    assert not origin_allowed(strict, SINGLE_WINDOW_ORIGINS[0])


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.10", False),
])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
