"""`eport decrypt FILE`: open a ciphertext with the card's envelope key (加密证书)."""

from __future__ import annotations

import base64

import click

from eport.clients.kit.context import (
    SECRET_COMMAND_SETTINGS,
    card_options,
    command_name,
    json_option,
    secret_options,
    state,
)
from eport.clients.kit.daemon_client import selector
from eport.clients.kit.errors import usage_error
from eport.clients.kit.files import maybe_base64, read_input, write_output
from eport.clients.kit.output import Output
from eport.clients.kit.pin_entry import SecretReader
from eport.clients.kit.pin_guard import send_with_pin
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb


@click.command("decrypt", context_settings=SECRET_COMMAND_SETTINGS)
@click.argument("input_file", metavar="FILE")
@click.option("-o", "--output", "output_path", default="-", metavar="FILE",
              help="Write the plaintext here (default: standard output).")
@card_options
@secret_options
@json_option
def decrypt_command(input_file: str, output_path: str, reader: str | None, card_id: str | None,
                    pin_stdin: bool, allow_last_attempt: bool) -> None:
    """Decrypt FILE ('-' for stdin), binary or base64, with the card's envelope key: RSA
    PKCS#1 v1.5, or SM2 in the ASN.1 form of `openssl pkeyutl` or as C1C3C2. Asks for the PIN
    unless already logged in."""
    cli = state()
    if pin_stdin and input_file == "-":
        raise usage_error(Bilingual("--pin-stdin 与从标准输入读取密文不能同时使用",
                                    "--pin-stdin and FILE '-' both need standard input"),
                          Bilingual("请把密文写入文件", "put the ciphertext in a file"))
    ciphertext = maybe_base64(read_input(input_file))
    status = cli.client.pin_status(selector(reader, card_id))
    # From here on, this card and no other: a card swapped in meanwhile must not get the PIN.
    chosen = pb.CardSelector(card_id=status.card_id)
    # Asked before the PIN: a card without an envelope key fails here, with nothing typed.
    cli.client.envelope_certificate(chosen)

    def send(pin: str, allow: bool) -> pb.DecryptResponse:
        return cli.client.call(cli.client.stub.Decrypt, pb.DecryptRequest(
            card=chosen, ciphertext=ciphertext, pin=pin, allow_last_attempt=allow))

    answer = send_with_pin(SecretReader(cli.output, pin_stdin, allow_last_attempt), status, send)
    if not cli.output.json_mode or output_path != "-":
        write_output(output_path, answer.plaintext)
    data = {
        "card_id": answer.card_id, "certificate_number": answer.certificate_number,
        "form": pb.CiphertextForm.Name(answer.form),
        "plaintext_base64": base64.b64encode(answer.plaintext).decode(),
        "output": None if output_path == "-" else output_path,
    }

    def human(out: Output) -> None:
        if output_path != "-":
            out.note(Bilingual(
                f"已解密到 {output_path} ({len(answer.plaintext)} 字节, 加密证书 "
                f"{answer.certificate_number})",
                f"Decrypted to {output_path} ({len(answer.plaintext)} bytes, envelope "
                f"certificate {answer.certificate_number})"))

    cli.output.result(command_name(), data, human)
