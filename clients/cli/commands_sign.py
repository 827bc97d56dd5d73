"""`eport sign FILE` and `eport verify FILE`."""

from __future__ import annotations

import base64

import click
from asn1crypto import pem

from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.daemon_client import selector
from eport.clients.kit.errors import CliError, usage_error
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.files import maybe_base64, read_input, write_output
from eport.clients.kit.output import Output
from eport.clients.kit.pin_entry import SecretReader
from eport.clients.kit.pin_guard import send_with_pin
from eport.clients.kit.sign_algorithms import (
    CLI_ALGORITHMS,
    card_algorithm,
    key_default,
    local_digest,
)
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

ALGORITHMS = CLI_ALGORITHMS  # "card", then the names of cardlib.signing_algorithms' table
# gRPC refuses messages over 4 MiB: larger files are hashed here and only the digest is sent,
# which is what the daemon would sign anyway.
LOCAL_DIGEST_ABOVE = 3 * 1024 * 1024
ALGORITHM_HELP = ("card: the card's own (SHA1withRSA on RSA-1024 cards, SHA256withRSA, "
                  "ECDSA-SHA256 or SM2-SM3).")


def _algorithm_of(name: str, card: pb.CardInfo) -> pb.SignAlgorithm.ValueType:
    chosen = ALGORITHMS[name]
    if chosen != pb.SIGN_ALGORITHM_UNSPECIFIED:
        return chosen
    return card_algorithm(card)


def _input_request(data: bytes, is_digest: bool, algorithm: int, cli_card: pb.CardSelector
                   ) -> tuple[bytes | None, bytes | None]:
    """(data, digest) for the request: a big file becomes its digest."""
    if is_digest:
        return None, data
    if len(data) > LOCAL_DIGEST_ABOVE:
        certificate = state().client.certificate(cli_card)
        return None, local_digest(algorithm, data, certificate.der)
    return data, None


@click.command("sign", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("input_file", metavar="FILE")
@click.option("--digest", "is_digest", is_flag=True,
              help="FILE holds a digest (binary), not the data to be hashed.")
@click.option("--algorithm", type=click.Choice(list(ALGORITHMS)), default="card",
              show_default=True, help=ALGORITHM_HELP)
@click.option("--format", "encoding", type=click.Choice(["raw", "base64"]), default="base64",
              show_default=True, help="raw: DER (EC, SM2) or PKCS#1 bytes (RSA).")
@click.option("-o", "--output", "output_path", default="-", metavar="FILE",
              help="Write the signature here (default: standard output).")
@card_options
@secret_options
@json_option
def sign_command(input_file: str, is_digest: bool, algorithm: str, encoding: str,
                 output_path: str, reader: str | None, card_id: str | None, pin_stdin: bool,
                 allow_last_attempt: bool) -> None:
    """Sign FILE ('-' for stdin) on the card. Asks for the PIN unless already logged in."""
    cli = state()
    if pin_stdin and input_file == "-":
        raise usage_error(Bilingual("--pin-stdin 与从标准输入读取数据不能同时使用",
                                    "--pin-stdin and FILE '-' both need standard input"),
                          Bilingual("请把数据写入文件", "put the data in a file"))
    data = read_input(input_file)
    card = cli.client.card_info(selector(reader, card_id))
    chosen = pb.CardSelector(card_id=card.card_id)
    status = cli.client.pin_status(chosen)
    sign_algorithm = _algorithm_of(algorithm, card)
    payload, digest = _input_request(data, is_digest, sign_algorithm, chosen)

    def send(pin: str, allow: bool) -> pb.SignResponse:
        request = pb.SignRequest(card=chosen, algorithm=sign_algorithm, pin=pin,
                                 allow_last_attempt=allow)
        if digest is not None:
            request.digest = digest
        else:
            request.data = payload or b""
        return cli.client.call(cli.client.stub.Sign, request)

    answer = send_with_pin(SecretReader(cli.output, pin_stdin, allow_last_attempt), status, send)
    written = answer.signature if encoding == "raw" else (answer.signature_base64 + "\n").encode()
    if not cli.output.json_mode or output_path != "-":
        write_output(output_path, written)
    data_out = {
        "card_id": answer.card_id, "certificate_number": answer.certificate_number,
        "algorithm": pb.SignAlgorithm.Name(answer.algorithm),
        "signature_base64": answer.signature_base64,
        "signature_rs_base64": (base64.b64encode(answer.signature_raw_rs).decode()
                                if answer.signature_raw_rs else None),
        "format": encoding, "output": None if output_path == "-" else output_path,
    }

    def human(out: Output) -> None:
        if output_path != "-":
            out.note(Bilingual(f"签名已写入 {output_path} (证书号 {answer.certificate_number})",
                               f"Signature written to {output_path} (certificate "
                               f"{answer.certificate_number})"))

    cli.output.result(command_name(), data_out, human)


def _verify_digest(request: pb.VerifyRequest, data: bytes
                   ) -> tuple[pb.SignAlgorithm.ValueType, bytes]:
    """A file too big for one message, as `sign` sends it: the algorithm (the certificate's
    own unless one was asked for) and the digest computed here."""
    client = state().client
    if request.certificate:
        check = client.call(client.stub.CheckCertificate,
                            pb.CheckCertificateRequest(certificate=request.certificate))
        key_algorithm, der = check.key_algorithm, _der(request.certificate)
    else:
        certificate = client.certificate(request.card)
        key_algorithm, der = certificate.check.key_algorithm, certificate.der
    algorithm = request.algorithm or key_default(key_algorithm)
    return algorithm, local_digest(algorithm, data, der)


def _der(certificate: bytes) -> bytes:
    if pem.detect(certificate):
        _type, _headers, der = pem.unarmor(certificate)
        return bytes(der)
    return certificate


def signature_invalid() -> CliError:
    return CliError("SIGNATURE_INVALID",
                    Bilingual("签名验证失败: 数据、签名与证书不匹配",
                              "The signature does not verify: data, signature and certificate "
                              "do not match"),
                    Bilingual("请确认使用的是签名时的原始文件、签名文件和对应证书",
                              "make sure these are the signed file, its signature and the "
                              "signer's certificate"), ExitCode.SIGNATURE_INVALID,
                    {"valid": False})


@click.command("verify")
@click.argument("input_file", metavar="FILE")
@click.option("-s", "--signature", "signature_file", required=True, metavar="SIG",
              help="The signature (binary or base64).")
@click.option("--cert", "certificate_file", metavar="CERT",
              help="The signer's certificate (PEM or DER); default: the card's.")
@click.option("--digest", "is_digest", is_flag=True, help="FILE holds a digest.")
@click.option("--algorithm", type=click.Choice(list(ALGORITHMS)), default="card",
              show_default=True, help="card: the algorithm of the certificate's key.")
@card_options
@json_option
def verify_command(input_file: str, signature_file: str, certificate_file: str | None,
                   is_digest: bool, algorithm: str, reader: str | None, card_id: str | None
                   ) -> None:
    """Check a signature of FILE with a certificate (no PIN; the card is not used)."""
    cli = state()
    data = read_input(input_file)
    signature = maybe_base64(read_input(signature_file))
    request = pb.VerifyRequest(signature=signature, algorithm=ALGORITHMS[algorithm])
    if certificate_file is not None:
        request.certificate = read_input(certificate_file)
    else:
        request.card.CopyFrom(selector(reader, card_id))
    if is_digest:
        request.digest = data
    elif len(data) > LOCAL_DIGEST_ABOVE:
        request.algorithm, request.digest = _verify_digest(request, data)
    else:
        request.data = data
    answer = cli.client.call(cli.client.stub.Verify, request)
    result = {"valid": answer.valid, "certificate_number": answer.certificate_number or None}
    if not answer.valid:
        raise signature_invalid()
    cli.output.result(command_name(), result, lambda out: out.line(Bilingual(
        f"签名有效 (证书号 {answer.certificate_number})",
        f"Signature valid (certificate {answer.certificate_number})"), style="green"))
